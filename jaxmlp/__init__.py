"""jaxmlp: a functional multilayer-perceptron library on JAX.

Parameters are a plain tuple of :class:`Dense`; :class:`MLP` is a frozen, hashable description;
:func:`value_and_grad` offers the hand-written backward pass (``method="manual"``) next to
``jax.value_and_grad`` (``method="autodiff"``), and :func:`gradcheck` compares them.
"""

from jaxmlp.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, Activation, get_activation
from jaxmlp.backprop import (
    METHODS,
    Backward,
    Trace,
    apply_manual,
    backward,
    forward_trace,
    loss_fn,
    per_example_grad_norms,
    per_example_grads,
    value_and_grad,
)
from jaxmlp.check import GradCheckReport, gradcheck
from jaxmlp.losses import LOSSES, Loss, get_loss
from jaxmlp.mlp import MLP, Dense

__version__ = "0.1.0"

__all__ = [
    "HIDDEN_ACTIVATIONS",
    "LOSSES",
    "METHODS",
    "MLP",
    "OUTPUT_ACTIVATIONS",
    "Activation",
    "Backward",
    "Dense",
    "GradCheckReport",
    "Loss",
    "Trace",
    "__version__",
    "apply_manual",
    "backward",
    "forward_trace",
    "get_activation",
    "get_loss",
    "gradcheck",
    "loss_fn",
    "per_example_grad_norms",
    "per_example_grads",
    "value_and_grad",
]
