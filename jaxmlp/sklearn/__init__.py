"""scikit-learn estimators on jaxmlp: :class:`MLPClassifier` and :class:`MLPRegressor`.

They take scikit-learn's ``MLPClassifier``/``MLPRegressor`` constructor parameters where those
make sense and train with :func:`jaxmlp.fit` (fused epochs, manual or autodiff gradients).
Fitted state is plain NumPy (``coefs_[l]`` is ``(fan_in, fan_out)``, ``intercepts_[l]`` is
``(fan_out,)``, the optimizer state a NumPy pytree), so estimators pickle. The JAX side (model
description, optax optimizer, compiled programs) is rebuilt from the hyperparameters on use and
cached per hyperparameter tuple, so refitting on data of the same shape compiles nothing.

Loss scaling, as in scikit-learn: the data loss is a (weighted) mean over the minibatch and the
penalty is ``alpha / (2 s) * sum_l ||W_l||^2`` with ``s`` the minibatch's weight sum (its row
count without weights). ``jaxmlp.fit`` adds ``(l2 / 2) * sum_l ||W_l||^2`` to the mean loss, so
``l2 = alpha / (batch_size * mean(sample_weight))``: exact for every full minibatch, while the
last, ragged one is penalised as a full one (scikit-learn penalises it by its own size).

Needs scikit-learn >= 1.6 (``validate_data``, ``__sklearn_tags__``).
"""

from __future__ import annotations

from typing import cast

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d, validate_data

from jaxmlp._core.losses import Loss, get_loss
from jaxmlp.sklearn._base import _BaseMLP
from jaxmlp.sklearn._utils import MULTILABEL_LOSS, SQUARED_ERROR_LOSS

__all__ = ["MULTILABEL_LOSS", "SQUARED_ERROR_LOSS", "MLPClassifier", "MLPRegressor"]


_PARAMS_DOC = """
    Args:
        hidden_layer_sizes: width of each hidden layer (an int for one layer).
        activation: hidden activation: scikit-learn's ``"identity"``, ``"logistic"`` (our
            ``"sigmoid"``), ``"tanh"``, ``"relu"``, or another jaxmlp name (``"gelu"``, ...).
        solver: ``"adam"``, or ``"sgd"`` with ``momentum`` and ``nesterovs_momentum``;
            ``"lbfgs"`` is not supported.
        alpha: L2 penalty, scaled as scikit-learn scales it (see ``jaxmlp.sklearn``).
        batch_size: rows per step; ``"auto"`` is ``min(200, n_samples)``.
        learning_rate_init: the (constant) step size.
        max_iter: most epochs per ``fit``.
        shuffle: reshuffle the rows every epoch.
        random_state: int, ``RandomState`` or None: seeds the initialisation, the shuffling
            and the validation split; an int ``s`` gives ``jax.random.key(s)``.
        tol, n_iter_no_change: stop when the training loss (with ``early_stopping``, the
            validation loss) has not improved by ``tol`` for ``n_iter_no_change + 1`` epochs.
        verbose: show a progress bar.
        warm_start: ``fit`` continues from the fitted weights (with a fresh optimizer state).
        early_stopping: hold out ``validation_fraction`` of the rows, monitor their loss and
            keep the best epoch's weights.
        beta_1, beta_2, epsilon: Adam's constants.
        gradient_method: ``"manual"`` (jaxmlp's hand-written backward pass) or ``"autodiff"``.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer-perceptron classifier with scikit-learn's interface, trained by jaxmlp.

    As in scikit-learn: binary problems get one sigmoid output and the binary log loss
    (``predict_proba`` returns ``[1 - p, p]``), multi-class problems a softmax output and the
    cross entropy, multilabel problems (``y`` a 0/1 matrix ``(n_samples, k)``) ``k`` sigmoid
    outputs and the binary log loss summed over them. Any labels (strings, non-contiguous ints)
    map to ``0..k-1`` and back through ``classes_``. Computation is float32.
    """

    __doc__ = (__doc__ or "") + _PARAMS_DOC

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)`` continuing the optimizer state; ``classes`` (every label of
        the problem) is required on the first call."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _validate_input(
        self, X, y, reset: bool, incremental: bool, classes
    ) -> tuple[np.ndarray, np.ndarray, int]:
        X, y = cast(
            tuple[np.ndarray, np.ndarray],
            validate_data(self, X, y, reset=reset, multi_output=True, dtype=np.float32),
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        multilabel = type_of_target(y) == "multilabel-indicator"
        if incremental and classes is not None and hasattr(self, "classes_"):
            if not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"classes={classes!r} differs from classes_ {self.classes_}")
        if incremental and not hasattr(self, "classes_"):
            if classes is None and not multilabel:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            reset = True
        if reset:
            labels = (
                np.arange(y.shape[1])
                if multilabel
                else np.unique(y if classes is None else classes)
            )
            if len(labels) < 2:
                raise ValueError(f"y: got 1 class ({labels}); a classifier needs at least 2")
            self.classes_ = labels
            kind = "multilabel" if multilabel else "binary" if len(labels) == 2 else "multiclass"
            self._y_type = kind
            self.out_activation_ = "softmax" if kind == "multiclass" else "logistic"
        elif (
            self.warm_start
            and not incremental
            and not multilabel
            and set(np.unique(y)) != set(self.classes_)
        ):
            raise ValueError(
                "warm_start needs y to have the same classes as the previous fit: had "
                f"{self.classes_}, y has {np.unique(y)}"
            )
        if multilabel != (self._y_type == "multilabel"):
            raise ValueError("y: multilabel and single-label targets cannot be mixed")
        if multilabel:
            return X, y.astype(np.float32), y.shape[1]
        idx = np.searchsorted(self.classes_, y)
        known = self.classes_[np.minimum(idx, len(self.classes_) - 1)] == y
        if not np.all(known):
            raise ValueError(f"y: classes {np.unique(y[~known])} are not in {self.classes_}")
        if self._y_type == "binary":
            return X, idx.astype(np.float32)[:, None], 1
        return X, idx.astype(np.int32), len(self.classes_)

    def _loss(self) -> Loss:
        if self._y_type == "multilabel":
            return MULTILABEL_LOSS
        if self._y_type == "binary":
            return get_loss("sigmoid_binary_cross_entropy")
        return get_loss("softmax_cross_entropy")

    def _stratify(self) -> bool:
        return self._y_type != "multilabel"

    def predict(self, X) -> np.ndarray:
        """Labels ``(n_samples,)`` from ``classes_``; multilabel: 0/1 ``(n_samples, k)``."""
        z = self._logits(X)
        if self._y_type == "multiclass":
            return self.classes_[np.argmax(z, axis=1)]
        if self._y_type == "multilabel":
            return (z > 0).astype(np.int64)
        return self.classes_[(z[:, 0] > 0).astype(np.int64)]

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities ``(n_samples, len(classes_))`` in the order of ``classes_``."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """``log(predict_proba(X))``, computed stably from the logits in float64."""
        z = self._logits(X)
        if self._y_type == "multiclass":
            return z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        if self._y_type == "multilabel":
            return -np.logaddexp(0.0, -z)
        # log(1 - sigmoid(z)) = -log(1 + e^z), log sigmoid(z) = -log(1 + e^-z)
        return -np.logaddexp(0.0, np.column_stack([z[:, 0], -z[:, 0]]))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer-perceptron regressor with scikit-learn's interface, trained by jaxmlp.

    Identity output and the loss ``0.5 * mean((y - f(x))^2)``, our ``half_mse`` and
    scikit-learn's ``squared_error``; ``y`` is ``(n_samples,)`` or ``(n_samples, n_outputs)``.
    Computation is float32; predictions are returned as float64.
    """

    __doc__ = (__doc__ or "") + _PARAMS_DOC

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``, continuing the optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(
        self, X, y, reset: bool, incremental: bool, classes
    ) -> tuple[np.ndarray, np.ndarray, int]:
        X, y = cast(
            tuple[np.ndarray, np.ndarray],
            validate_data(
                self, X, y, reset=reset, multi_output=True, y_numeric=True, dtype=np.float32
            ),
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self.out_activation_ = "identity"
        Y = y.reshape(y.shape[0], -1).astype(np.float32)
        return X, Y, Y.shape[1]

    def _loss(self) -> Loss:
        return SQUARED_ERROR_LOSS

    def predict(self, X) -> np.ndarray:
        """Predictions ``(n_samples,)``, or ``(n_samples, n_outputs)`` for 2-D targets."""
        out = self._logits(X)
        return out[:, 0] if self.n_outputs_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
