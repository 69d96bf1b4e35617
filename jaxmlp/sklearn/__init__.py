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
from scipy.special import expit
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d, validate_data

from jaxmlp._core.losses import Loss, get_loss
from jaxmlp.sklearn._base import DTYPES, SPARSE_FORMATS, _BaseMLP
from jaxmlp.sklearn._utils import MULTILABEL_LOSS, POISSON_LOSS, SQUARED_ERROR_LOSS

__all__ = ["MULTILABEL_LOSS", "SQUARED_ERROR_LOSS", "MLPClassifier", "MLPRegressor"]


_PARAMS_DOC = """
    Args:
        hidden_layer_sizes: width of each hidden layer (an int for one layer).
        activation: hidden activation: scikit-learn's ``"identity"``, ``"logistic"`` (our
            ``"sigmoid"``), ``"tanh"``, ``"relu"``, or another jaxmlp name (``"gelu"``, ...).
        solver: ``"adam"``, ``"sgd"`` with ``momentum`` and ``nesterovs_momentum``, or
            ``"lbfgs"`` (full batch, :func:`jaxmlp.fit_lbfgs`).
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
        gradient_method: ``"manual"`` (jaxmlp's hand-written backward pass), ``"autodiff"`` or
            ``"fused"`` (the hand-written backward as Pallas GPU kernels, :mod:`jaxmlp.fused`).
        l1: L1 penalty on the weights (not in scikit-learn's MLP; the TensorFlow Playground's
            L1), scaled as ``alpha`` is: ``l1 / (batch weight sum) * sum |W|`` beside the mean
            loss; its derivative at ``W = 0`` is taken as 0.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer-perceptron classifier with scikit-learn's interface, trained by jaxmlp.

    As in scikit-learn: binary problems get one sigmoid output and the binary log loss
    (``predict_proba`` returns ``[1 - p, p]``), multi-class problems a softmax output and the
    cross entropy, multilabel problems (``y`` a 0/1 matrix ``(n_samples, k)``) ``k`` sigmoid
    outputs and the binary log loss summed over them. Any labels (strings, non-contiguous ints)
    map to ``0..k-1`` and back through ``classes_``. Computation is in the input's dtype
    (float64 input, float64 weights; float32 stays float32).
    """

    __doc__ = (__doc__ or "") + _PARAMS_DOC

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)`` continuing the optimizer state; ``classes`` (every label of
        the problem) is required on the first call. Only for ``solver="sgd"``/``"adam"``."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _validate_input(
        self, X, y, reset: bool, incremental: bool, classes
    ) -> tuple[np.ndarray, np.ndarray, int]:
        X, y = cast(
            tuple[np.ndarray, np.ndarray],
            validate_data(
                self,
                X,
                y,
                reset=reset,
                multi_output=True,
                accept_sparse=SPARSE_FORMATS,
                dtype=DTYPES,
            ),  # pyright: ignore[reportArgumentType]
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
            # One class trains as scikit-learn does: a binary network whose targets are all 0.
            self.classes_ = labels
            kind = "multilabel" if multilabel else "binary" if len(labels) <= 2 else "multiclass"
            self._y_type = kind
            self.out_activation_ = "softmax" if kind == "multiclass" else "logistic"
        elif (
            self.warm_start
            and not incremental
            and not multilabel
            and set(np.unique(y)) != set(self.classes_)
        ):
            raise ValueError(
                "warm_start can only be used where `y` has the same classes as in the previous "
                f"call to fit. Previously got {self.classes_}, `y` has {np.unique(y)}"
            )
        if multilabel != (self._y_type == "multilabel"):
            raise ValueError("y: multilabel and single-label targets cannot be mixed")
        dtype = X.dtype
        if multilabel:
            return X, y.astype(dtype), y.shape[1]
        idx = np.searchsorted(self.classes_, y)
        known = self.classes_[np.minimum(idx, len(self.classes_) - 1)] == y
        if not np.all(known):
            raise ValueError(f"y: classes {np.unique(y[~known])} are not in {self.classes_}")
        if self._y_type == "binary":
            return X, idx.astype(dtype)[:, None], 1
        return X, idx.astype(np.int32), len(self.classes_)

    def _loss(self) -> Loss:
        if self._y_type == "multilabel":
            return MULTILABEL_LOSS
        if self._y_type == "binary":
            return get_loss("sigmoid_binary_cross_entropy")
        return get_loss("softmax_cross_entropy")

    def _stratify_labels(self, Y: np.ndarray) -> np.ndarray | None:
        # As scikit-learn: binary problems split stratified by their 0/1 column (its labels
        # read True/False in the error for a class too small to split).
        return Y.astype(bool) if self._y_type == "binary" else None

    def _encoded_score(self, z: np.ndarray, Y: np.ndarray, sw) -> float:
        return float(accuracy_score(Y, self._encoded_predict(z), sample_weight=sw))

    def _encoded_predict(self, z: np.ndarray) -> np.ndarray:
        """Class indices ``(n,)`` (binary: a 0/1 column ``(n, 1)``), multilabel 0/1 ``(n, k)``."""
        if self._y_type == "multiclass":
            return np.argmax(z, axis=1)
        return (z > 0).astype(np.int64)

    def predict(self, X) -> np.ndarray:
        """Labels ``(n_samples,)`` from ``classes_``; multilabel: 0/1 ``(n_samples, k)``."""
        p = self._encoded_predict(self._logits(X))
        if self._y_type == "multilabel":
            return p
        if self._y_type == "binary":
            p = np.minimum(p[:, 0], len(self.classes_) - 1)
        return self.classes_[p]

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities ``(n_samples, len(classes_))`` in the order of ``classes_`` (binary:
        ``[1 - p, p]``; multilabel: each label's own probability), in the parameters' dtype."""
        z = self._logits(X)
        if self._y_type == "multiclass":
            return np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
        if self._y_type == "multilabel":
            return expit(z)
        return expit(np.column_stack([-z[:, 0], z[:, 0]]))

    def predict_log_proba(self, X) -> np.ndarray:
        """``log(predict_proba(X))``, as scikit-learn defines it."""
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer-perceptron regressor with scikit-learn's interface, trained by jaxmlp.

    Identity output and the loss ``0.5 * mean((y - f(x))^2)``, our ``half_mse`` and
    scikit-learn's ``squared_error``; ``y`` is ``(n_samples,)`` or ``(n_samples, n_outputs)``.
    Computation and predictions are in the input's dtype (float64 or float32).
    """

    __doc__ = (__doc__ or "") + _PARAMS_DOC

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        gradient_method="manual",
        l1=0.0,
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
            max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            gradient_method=gradient_method, l1=l1,
        )  # fmt: skip
        self.loss = loss

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``, continuing the optimizer state. Only for
        ``solver="sgd"``/``"adam"``."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(
        self, X, y, reset: bool, incremental: bool, classes
    ) -> tuple[np.ndarray, np.ndarray, int]:
        X, y = cast(
            tuple[np.ndarray, np.ndarray],
            validate_data(
                self,
                X,
                y,
                reset=reset,
                multi_output=True,
                y_numeric=True,
                accept_sparse=SPARSE_FORMATS,
                dtype=DTYPES,
            ),  # pyright: ignore[reportArgumentType]
        )
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss: expected 'squared_error' or 'poisson', got {self.loss!r}")
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("y: the poisson loss needs non-negative targets")
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if reset:
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        Y = y.reshape(y.shape[0], -1).astype(X.dtype)
        return X, Y, Y.shape[1]

    def _loss(self) -> Loss:
        return POISSON_LOSS if self.out_activation_ == "exp" else SQUARED_ERROR_LOSS

    def _output(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z) if self.out_activation_ == "exp" else z

    def _encoded_score(self, z: np.ndarray, Y: np.ndarray, sw) -> float:
        out = self._output(z)
        if not np.isfinite(out).all():
            return np.nan
        return float(r2_score(Y, out, sample_weight=sw))

    def predict(self, X) -> np.ndarray:
        """Predictions ``(n_samples,)``, or ``(n_samples, n_outputs)`` for 2-D targets, in the
        parameters' dtype."""
        out = self._output(self._logits(X))
        return out[:, 0] if self.n_outputs_ == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
