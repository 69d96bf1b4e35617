"""Fully fused MLP kernels for GPUs, in Pallas: the whole network's forward pass in one kernel
launch, and its hand-written backward pass (deltas through every layer, split-K weight
gradients) in another.

On a CPU the same kernels run through Pallas's interpreter, so every result can be checked
without a GPU. ``jaxmlp.value_and_grad(model, loss, method="fused")`` (hence ``fit``,
``fit_ensemble``, ``make_train_step`` and the estimators' ``gradient_method``) dispatches here.
See the docs page "Fused GPU kernels" for the design, the limits and the benchmark script.
"""

from jaxmlp.fused._api import apply, value_and_grad
from jaxmlp.fused._config import (
    DTYPES,
    INTERPRET_ENV,
    MAX_DEPTH,
    MAX_WIDTH,
    FusedConfig,
    check,
    supports,
    unsupported,
)
from jaxmlp.fused._kernels import HEADS, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, WIDTHS

__all__ = [
    "DTYPES",
    "HEADS",
    "HIDDEN_ACTIVATIONS",
    "INTERPRET_ENV",
    "MAX_DEPTH",
    "MAX_WIDTH",
    "OUTPUT_ACTIVATIONS",
    "WIDTHS",
    "FusedConfig",
    "apply",
    "check",
    "supports",
    "unsupported",
    "value_and_grad",
]
