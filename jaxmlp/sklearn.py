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

import functools
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data

from jaxmlp.activations import HIDDEN_ACTIVATIONS
from jaxmlp.backprop import METHODS, forward
from jaxmlp.engine import TrainState, make_train_step
from jaxmlp.errors import JaxmlpWarning
from jaxmlp.losses import Loss, get_loss
from jaxmlp.mlp import MLP, Dense
from jaxmlp.training import EarlyStopping, fit

__all__ = ["MULTILABEL_LOSS", "SQUARED_ERROR_LOSS", "MLPClassifier", "MLPRegressor"]

_ACTIVATION_ALIASES = {"logistic": "sigmoid"}  # scikit-learn's name -> ours
_OUTPUT_ACTIVATIONS = {"logistic": "sigmoid", "softmax": "softmax", "identity": "identity"}
# Compiled programs key on shapes, so that fits on nearby sizes share them, training pads the
# features with zero columns to a multiple of _FEATURE_MULTIPLE (their weights get zero
# gradients, so they stay zero and change nothing) and a one-batch data set's rows to a multiple
# of _ROW_MULTIPLE with weight-0 rows; prediction pads rows to a power of two (at least 32), in
# chunks of _PREDICT_CHUNK.
_FEATURE_MULTIPLE = 32
_ROW_MULTIPLE = 128
_PREDICT_CHUNK = 4096
# name -> (kind, lower bound, lower bound excluded, upper bound or None)
_NUMERIC_PARAMS = {
    "alpha": (numbers.Real, 0, False, None),
    "learning_rate_init": (numbers.Real, 0, True, None),
    "max_iter": (numbers.Integral, 1, False, None),
    "tol": (numbers.Real, 0, False, None),
    "n_iter_no_change": (numbers.Integral, 1, False, None),
    "momentum": (numbers.Real, 0, False, 1),
    "beta_1": (numbers.Real, 0, False, 1),
    "beta_2": (numbers.Real, 0, False, 1),
    "epsilon": (numbers.Real, 0, True, None),
    "validation_fraction": (numbers.Real, 0, True, 1),
}


# scikit-learn's gradients sum over the k outputs (its output delta is ``out - y``), so these two
# losses do too; jaxmlp's half_mse and sigmoid_binary_cross_entropy average over them. For one
# output they are the same. With the sum, alpha and the learning rate act as in scikit-learn.
def _half_squared_error(out, y):
    return 0.5 * jnp.sum((out - y) ** 2, axis=-1)


def _half_squared_error_grad(out, y):
    return out - y


def _multilabel_log_loss(z, y):
    # sum_k softplus(z_k) - y_k z_k, the binary log loss of each label from its logit
    return jnp.sum(jax.nn.softplus(z) - y * z, axis=-1)


def _multilabel_log_loss_grad(z, y):
    return jax.nn.sigmoid(z) - y


SQUARED_ERROR_LOSS = Loss("half_squared_error", _half_squared_error, _half_squared_error_grad)
MULTILABEL_LOSS = Loss(
    "multilabel_log_loss",
    _multilabel_log_loss,
    _multilabel_log_loss_grad,
    logits=True,
    fuses_with="sigmoid",
    targets="binary",
)


@functools.lru_cache(maxsize=32)
def _optimizer(solver: str, lr: float, *args) -> optax.GradientTransformation:
    """One optax object per hyperparameter tuple: fit's compiled programs key on the object.

    ``args``: ``(momentum, nesterov)`` for ``"sgd"``, ``(beta_1, beta_2, epsilon)`` for
    ``"adam"``.
    """
    if solver == "sgd":
        momentum, nesterov = args
        # optax's trace t <- g + mu t (Nesterov: g + mu t) scaled by -lr is scikit-learn's
        # velocity update for a constant learning rate.
        return optax.sgd(lr, momentum=momentum or None, nesterov=bool(nesterov and momentum))
    beta_1, beta_2, epsilon = args
    return optax.adam(lr, b1=beta_1, b2=beta_2, eps=epsilon)


@functools.lru_cache(maxsize=32)
def _logits_program(model: MLP):
    return jax.jit(lambda params, x: forward(model, params, x).z[-1])


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad(a: np.ndarray, rows: int, cols: int | None = None) -> np.ndarray:
    """``a`` in the top-left corner of a zero array with ``rows`` rows (and ``cols`` columns)."""
    out = np.zeros((rows, *a.shape[1:]) if cols is None else (rows, cols), a.dtype)
    out[tuple(slice(0, k) for k in a.shape)] = a
    return out


def _device_params(coefs, intercepts) -> tuple[Dense, ...]:
    return tuple(Dense(jnp.array(w), jnp.array(b)) for w, b in zip(coefs, intercepts, strict=True))


class _BaseMLP(BaseEstimator):
    """Constructor, training and prediction shared by the two estimators."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
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
        gradient_method="manual",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.gradient_method = gradient_method

    # -- hyperparameters (checked in fit, as scikit-learn requires) ---------------------------
    def _hidden_sizes(self) -> tuple[int, ...]:
        h = self.hidden_layer_sizes
        sizes = (h,) if isinstance(h, numbers.Integral) else tuple(h)
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
            raise ValueError(f"hidden_layer_sizes: expected ints, got {h!r}")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes: must be > 0, got {h!r}")
        return tuple(int(s) for s in sizes)

    def _check_params(self, incremental: bool) -> None:
        if self.solver == "lbfgs":
            raise ValueError(
                "solver='lbfgs' is not supported: jaxmlp trains with minibatch gradient "
                "steps; use solver='adam' or solver='sgd'"
            )
        for name, valid in (
            ("solver", ("sgd", "adam")),
            ("activation", ("logistic", *HIDDEN_ACTIVATIONS)),
            ("gradient_method", METHODS),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in valid:
                raise ValueError(f"{name}: expected one of {list(valid)}, got {value!r}")
        self._hidden_sizes()
        for name, (kind, low, low_open, high) in _NUMERIC_PARAMS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"{name}: expected a {kind.__name__} number, got {value!r}")
            if value < low or (low_open and value == low) or (high is not None and value > high):
                raise ValueError(f"{name}: {value!r} is out of range")
        bs = self.batch_size
        if bs != "auto" and (
            isinstance(bs, bool) or not isinstance(bs, numbers.Integral) or bs < 1
        ):
            raise ValueError(f"batch_size: expected 'auto' or an int >= 1, got {bs!r}")
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")

    def _model(self, padded: bool = False) -> MLP:
        """The network description (hashable, cheap to rebuild); ``padded``: the one training
        runs on, its inputs padded to a multiple of ``_FEATURE_MULTIPLE``."""
        n_in = self.n_features_in_
        if padded:
            n_in = _round_up(n_in, _FEATURE_MULTIPLE)
        sizes = (n_in, *self._hidden_sizes(), self.n_outputs_)
        activation = _ACTIVATION_ALIASES.get(self.activation, self.activation)
        return MLP(sizes, activation, _OUTPUT_ACTIVATIONS[self.out_activation_])

    def _get_optimizer(self) -> optax.GradientTransformation:
        lr = float(self.learning_rate_init)
        if self.solver == "sgd":
            return _optimizer("sgd", lr, float(self.momentum), bool(self.nesterovs_momentum))
        return _optimizer("adam", lr, float(self.beta_1), float(self.beta_2), float(self.epsilon))

    def _batch_size(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(
                f"batch_size={self.batch_size} exceeds the {n} training rows; using {n}",
                JaxmlpWarning,
                stacklevel=5,
            )
        return min(int(self.batch_size), n)

    def _l2(self, batch_size: int, sw: np.ndarray | None) -> float:
        # scikit-learn's penalty alpha / (2 * batch weight sum) * ||W||^2 beside a mean loss.
        mean_w = 1.0 if sw is None else float(np.mean(sw, dtype=np.float64))
        return float(self.alpha) / (batch_size * mean_w)

    # -- training ----------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Trains for up to ``max_iter`` epochs, stopping as scikit-learn does (``tol``).

        Args:
            X: ``(n_samples, n_features)``.
            y: ``(n_samples,)``, or ``(n_samples, n_outputs)`` (regression, multilabel).
            sample_weight: ``(n_samples,)`` non-negative weights, or None.

        Returns:
            self.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental: bool, classes=None):
        self._check_params(incremental)
        first = not hasattr(self, "coefs_") or not (self.warm_start or incremental)
        X, Y, n_outputs = self._validate_input(X, y, first, incremental, classes)
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        rs = check_random_state(self.random_state)
        seed = self.random_state
        if not isinstance(seed, numbers.Integral):
            seed = rs.randint(np.iinfo(np.int32).max)
        init_key, fit_key = jax.random.split(jax.random.key(int(seed)))
        if first:
            self._initialize(init_key, n_outputs)
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"y: {n_outputs} outputs, the fitted network has {self.n_outputs_}")
        if incremental:
            self._partial_epoch(X, Y, sw, rs)
        else:
            self._fit_epochs(X, Y, sw, rs, fit_key)
        return self

    @staticmethod
    def _check_sample_weight(sample_weight, n: int) -> np.ndarray | None:
        if sample_weight is None:
            return None
        if isinstance(sample_weight, numbers.Number):
            sample_weight = np.full(n, sample_weight, np.float32)
        sw = check_array(
            sample_weight, ensure_2d=False, dtype=np.float32, input_name="sample_weight"
        )
        if sw.shape != (n,):
            raise ValueError(f"sample_weight: expected shape ({n},), got {sw.shape}")
        if np.any(sw < 0) or not np.any(sw > 0):
            raise ValueError("sample_weight: must be non-negative and not all zero")
        return sw

    def _initialize(self, key: jax.Array, n_outputs: int) -> None:
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._hidden_sizes()) + 2
        self._store(self._model().init(key), None)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.best_loss_ = None if self.early_stopping else np.inf
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None

    def _train_params(self) -> tuple[Dense, ...]:
        """The parameters of ``_model(padded=True)``: zero rows for the padding features."""
        coefs = [_pad(self.coefs_[0], self._model(padded=True).sizes[0]), *self.coefs_[1:]]
        return _device_params(coefs, self.intercepts_)

    def _store(self, params, opt_state) -> None:
        host = jax.device_get(params)
        self.coefs_ = [np.array(layer.w) for layer in host]
        self.coefs_[0] = self.coefs_[0][: self.n_features_in_].copy()
        self.intercepts_ = [np.array(layer.b) for layer in host]
        # The padded model's state as a NumPy pytree (optax's states are NamedTuples, so it
        # pickles); partial_fit resumes from it.
        self._opt_state = None if opt_state is None else jax.device_get(opt_state)

    def _fit_epochs(self, X, Y, sw, rs, key) -> None:
        validation = None
        if self.early_stopping:
            parts = train_test_split(
                *((X, Y) if sw is None else (X, Y, sw)),
                test_size=self.validation_fraction,
                random_state=rs,
                stratify=Y if self._stratify() else None,
            )
            X, X_val, Y, Y_val = parts[:4]
            sw = None if sw is None else parts[4]
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the "
                    "size of your dataset."
                )
            validation = (X_val, Y_val)
        n = X.shape[0]
        batch_size = self._batch_size(n)
        l2 = self._l2(batch_size, sw)
        shuffle = bool(self.shuffle)
        if batch_size == n:
            # One batch holds every row, so shuffling cannot change a step (and the permutation
            # is the costliest part of fit's program to compile), and weight-0 padding rows
            # leave the weighted-mean loss as it is.
            batch_size, shuffle = _round_up(n, _ROW_MULTIPLE), False
            sw = _pad(np.ones(n, np.float32) if sw is None else sw, batch_size)
            X, Y = _pad(X, batch_size), _pad(Y, batch_size)
        # scikit-learn counts epochs without an improvement of tol and stops once the count
        # exceeds n_iter_no_change, i.e. after n_iter_no_change + 1 of them.
        stopping = EarlyStopping(
            patience=int(self.n_iter_no_change) + 1,
            min_delta=float(self.tol),
            restore_best=bool(self.early_stopping),
        )
        model = self._model(padded=True)
        if validation is not None:
            validation = (_pad(validation[0], len(validation[0]), model.sizes[0]), validation[1])
        result = fit(
            model,
            self._train_params(),
            _pad(X, len(X), model.sizes[0]),
            Y,
            loss=self._loss(),
            key=key,
            optimizer=self._get_optimizer(),
            epochs=int(self.max_iter),
            batch_size=batch_size,
            method=self.gradient_method,
            shuffle=shuffle,
            validation_data=validation,
            early_stopping=stopping,
            progress=bool(self.verbose),
            l2=l2,
            sample_weight=sw,
        )
        self._store(result.params, result.opt_state)
        losses = result.history["loss"]
        self.n_iter_ = len(losses)
        self.t_ += n * len(losses)
        self.loss_curve_.extend(losses)
        self.loss_ = losses[-1]
        if self.early_stopping:
            scores = result.history["val_metric"]
            self.validation_scores_ = [*(self.validation_scores_ or []), *scores]
            self.best_validation_score_ = scores[(result.best_epoch or len(scores)) - 1]
        else:
            self.best_loss_ = min(self.loss_curve_)
        if result.stopped_epoch is None and len(losses) == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _partial_epoch(self, X, Y, sw, rs) -> None:
        """One pass over ``X`` with the jitted step, continuing the stored optimizer state."""
        n = X.shape[0]
        batch_size = self._batch_size(n)
        optimizer = self._get_optimizer()
        model = self._model(padded=True)
        step = make_train_step(
            model,
            self._loss(),
            optimizer,
            method=self.gradient_method,
            l2=self._l2(batch_size, sw),
        )
        params = self._train_params()
        if self._opt_state is None:
            opt_state = optimizer.init(params)
        else:
            opt_state = jax.tree.map(jnp.array, self._opt_state)
        state = TrainState(params, opt_state, jnp.zeros((), jnp.int32))
        n_batches = -(-n // batch_size)
        if n_batches == 1:
            batch_size = _round_up(n, _ROW_MULTIPLE)  # as in fit
        # The last batch is padded with weight-0 rows: one compiled step shape per pass.
        order = _pad(rs.permutation(n) if self.shuffle else np.arange(n), n_batches * batch_size)
        w = _pad((np.ones(n, np.float32) if sw is None else sw)[order[:n]], len(order))
        X = _pad(X, n, model.sizes[0])
        values = []
        for rows, wb in zip(
            order.reshape(n_batches, batch_size), w.reshape(n_batches, batch_size), strict=True
        ):
            state, value = step(state, X[rows], Y[rows], wb)
            values.append(value)
        wsum = w.reshape(n_batches, batch_size).sum(axis=1)
        loss = float(np.dot(np.asarray(jax.device_get(values)), wsum) / wsum.sum())
        if not np.isfinite(loss):
            raise FloatingPointError(f"partial_fit: the training loss became {loss}")
        self._store(state.params, state.opt_state)
        self.n_iter_ = 1  # scikit-learn counts the epochs of the latest call
        self.t_ += n
        self.loss_curve_.append(loss)
        self.loss_ = loss
        self.best_loss_ = min(np.inf if self.best_loss_ is None else self.best_loss_, loss)
        if self.verbose:
            print(f"Iteration {len(self.loss_curve_)}, loss = {loss:.8f}")

    # -- prediction --------------------------------------------------------------------------
    def _logits(self, X) -> np.ndarray:
        """The output layer's pre-activation ``(n_samples, n_outputs)``, as float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        program = _logits_program(self._model())
        params = _device_params(self.coefs_, self.intercepts_)
        out = []
        for start in range(0, X.shape[0], _PREDICT_CHUNK):
            chunk = X[start : start + _PREDICT_CHUNK]
            rows = max(32, 1 << (len(chunk) - 1).bit_length())
            out.append(np.asarray(program(params, _pad(chunk, rows)))[: len(chunk)])
        return np.concatenate(out).astype(np.float64)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coefs_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    def _stratify(self) -> bool:
        return False


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

    __doc__ += _PARAMS_DOC

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)`` continuing the optimizer state; ``classes`` (every label of
        the problem) is required on the first call."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _validate_input(self, X, y, reset, incremental, classes):
        X, y = validate_data(self, X, y, reset=reset, multi_output=True, dtype=np.float32)
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

    __doc__ += _PARAMS_DOC

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``, continuing the optimizer state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, reset, incremental, classes):
        X, y = validate_data(
            self, X, y, reset=reset, multi_output=True, y_numeric=True, dtype=np.float32
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
