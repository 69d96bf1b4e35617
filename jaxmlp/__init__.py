"""jaxmlp: a functional multilayer-perceptron library on JAX.

Parameters are a plain tuple of :class:`Dense`; :class:`MLP` is a frozen, hashable description;
:func:`value_and_grad` offers the hand-written backward pass (``method="manual"``) next to
``jax.value_and_grad`` (``method="autodiff"``), and :func:`gradcheck` compares them.
"""

from jaxmlp import data
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
from jaxmlp._train.ensemble import EnsembleResult, ensemble_apply, fit_ensemble, predict_ensemble
from jaxmlp._train.fit import FitResult, FitState, fit
from jaxmlp.data import Standardizer, train_test_split
from jaxmlp.errors import CheckpointError, DivergenceError, JaxmlpWarning

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
    "Loss",
    "LossFn",
    "Objective",
    "PerExampleGradNormsFn",
    "PerExampleGradsFn",
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
    "ensemble_apply",
    "evaluate",
    "fit",
    "fit_ensemble",
    "forward_trace",
    "get_activation",
    "get_loss",
    "gradcheck",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "loss_fn",
    "make_train_step",
    "per_example_grad_norms",
    "per_example_grads",
    "predict_ensemble",
    "prune_checkpoints",
    "r2_score",
    "save_checkpoint",
    "train_test_split",
    "value_and_grad",
]
