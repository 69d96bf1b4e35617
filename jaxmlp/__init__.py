"""jaxmlp: a functional multilayer-perceptron library on JAX.

Parameters are a plain tuple of :class:`Dense`; :class:`MLP` is a frozen, hashable description;
:func:`value_and_grad` offers the hand-written backward pass (``method="manual"``) next to
``jax.value_and_grad`` (``method="autodiff"``), and :func:`gradcheck` compares them.

``import jaxmlp`` imports neither JAX nor optax: each public name's module is imported on the
name's first use (PEP 562), so the ``jaxmlp`` command answers ``--help`` at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jaxmlp.errors import CheckpointError, DivergenceError, JaxmlpWarning

if TYPE_CHECKING:
    from jaxmlp import data, interop, layers
    from jaxmlp._cache import enable_compilation_cache
    from jaxmlp._checkpoint.files import (
        Checkpoint,
        checkpoint_path,
        latest_checkpoint,
        list_checkpoints,
        load_checkpoint,
        prune_checkpoints,
        save_checkpoint,
    )
    from jaxmlp._core.activations import (
        HIDDEN_ACTIVATIONS,
        OUTPUT_ACTIVATIONS,
        Activation,
        get_activation,
        register_activation,
    )
    from jaxmlp._core.backprop import (
        METHODS,
        Backward,
        LossFn,
        PerExampleGradNormsFn,
        PerExampleGradsFn,
        Trace,
        ValueAndGradFn,
        apply_manual,
        backward,
        forward_trace,
        loss_fn,
        per_example_grad_norms,
        per_example_grads,
        value_and_grad,
    )
    from jaxmlp._core.gradcheck import GradCheckReport, gradcheck
    from jaxmlp._core.losses import LOSSES, Loss, get_loss
    from jaxmlp._core.metrics import accuracy, evaluate, r2_score
    from jaxmlp._core.mlp import MLP, Dense
    from jaxmlp._core.objective import Objective
    from jaxmlp._distributed import data_parallel_mesh
    from jaxmlp._engine.step import (
        DEFAULT_LEARNING_RATE,
        DEFAULT_OPTIMIZER,
        TrainState,
        make_train_step,
    )
    from jaxmlp._train.callbacks import Callback, CallState, EarlyStopping
    from jaxmlp._train.ensemble import (
        EnsembleResult,
        ensemble_apply,
        fit_ensemble,
        predict_ensemble,
    )
    from jaxmlp._train.fit import FitResult, FitState, fit
    from jaxmlp._train.lbfgs import LbfgsResult, fit_lbfgs
    from jaxmlp._train.sources import ArraySource, RowSource
    from jaxmlp.data import Standardizer, train_test_split

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_OPTIMIZER",
    "HIDDEN_ACTIVATIONS",
    "LOSSES",
    "METHODS",
    "MLP",
    "OUTPUT_ACTIVATIONS",
    "Activation",
    "ArraySource",
    "Backward",
    "CallState",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "Dense",
    "DivergenceError",
    "EarlyStopping",
    "EnsembleResult",
    "FitResult",
    "FitState",
    "GradCheckReport",
    "JaxmlpWarning",
    "LbfgsResult",
    "Loss",
    "LossFn",
    "Objective",
    "PerExampleGradNormsFn",
    "PerExampleGradsFn",
    "RowSource",
    "Standardizer",
    "Trace",
    "TrainState",
    "ValueAndGradFn",
    "__version__",
    "accuracy",
    "apply_manual",
    "backward",
    "checkpoint_path",
    "data",
    "data_parallel_mesh",
    "enable_compilation_cache",
    "ensemble_apply",
    "evaluate",
    "fit",
    "fit_ensemble",
    "fit_lbfgs",
    "forward_trace",
    "get_activation",
    "get_loss",
    "gradcheck",
    "interop",
    "latest_checkpoint",
    "layers",
    "list_checkpoints",
    "load_checkpoint",
    "loss_fn",
    "make_train_step",
    "per_example_grad_norms",
    "per_example_grads",
    "predict_ensemble",
    "prune_checkpoints",
    "r2_score",
    "register_activation",
    "save_checkpoint",
    "train_test_split",
    "value_and_grad",
]

# Where each public name lives. `import jaxmlp` imports none of these modules (so neither JAX nor
# optax): the first use of a name imports its module, and the name is then an ordinary attribute.
# The imports under TYPE_CHECKING say the same to type checkers and the API reference;
# tests/test_startup.py checks that the two agree.
_SOURCES: dict[str, tuple[str, ...]] = {
    "jaxmlp._cache": ("enable_compilation_cache",),
    "jaxmlp.data": ("data", "Standardizer", "train_test_split"),
    "jaxmlp.layers": ("layers",),
    "jaxmlp.interop": ("interop",),
    "jaxmlp._checkpoint.files": (
        "Checkpoint",
        "checkpoint_path",
        "latest_checkpoint",
        "list_checkpoints",
        "load_checkpoint",
        "prune_checkpoints",
        "save_checkpoint",
    ),
    "jaxmlp._core.activations": (
        "HIDDEN_ACTIVATIONS",
        "OUTPUT_ACTIVATIONS",
        "Activation",
        "get_activation",
        "register_activation",
    ),
    "jaxmlp._core.backprop": (
        "METHODS",
        "Backward",
        "LossFn",
        "PerExampleGradNormsFn",
        "PerExampleGradsFn",
        "Trace",
        "ValueAndGradFn",
        "apply_manual",
        "backward",
        "forward_trace",
        "loss_fn",
        "per_example_grad_norms",
        "per_example_grads",
        "value_and_grad",
    ),
    "jaxmlp._core.gradcheck": ("GradCheckReport", "gradcheck"),
    "jaxmlp._core.losses": ("LOSSES", "Loss", "get_loss"),
    "jaxmlp._core.metrics": ("accuracy", "evaluate", "r2_score"),
    "jaxmlp._core.mlp": ("MLP", "Dense"),
    "jaxmlp._core.objective": ("Objective",),
    "jaxmlp._distributed": ("data_parallel_mesh",),
    "jaxmlp._engine.step": (
        "DEFAULT_LEARNING_RATE",
        "DEFAULT_OPTIMIZER",
        "TrainState",
        "make_train_step",
    ),
    "jaxmlp._train.callbacks": ("Callback", "CallState", "EarlyStopping"),
    "jaxmlp._train.ensemble": (
        "EnsembleResult",
        "ensemble_apply",
        "fit_ensemble",
        "predict_ensemble",
    ),
    "jaxmlp._train.fit": ("FitResult", "FitState", "fit"),
    "jaxmlp._train.lbfgs": ("LbfgsResult", "fit_lbfgs"),
    "jaxmlp._train.sources": ("ArraySource", "RowSource"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

if not TYPE_CHECKING:  # hidden from type checkers, so that they still flag a misspelt name

    def __getattr__(name: str) -> Any:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module 'jaxmlp' has no attribute {name!r}")
        loaded = importlib.import_module(module)
        value = loaded if module == f"jaxmlp.{name}" else getattr(loaded, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
