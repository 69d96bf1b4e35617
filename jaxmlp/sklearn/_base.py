"""``_BaseMLP``: the constructor, training and prediction that :mod:`jaxmlp.sklearn`'s two
estimators share. The loss scaling is described in :mod:`jaxmlp.sklearn`, the padding of rows
and features beside its constants in ``jaxmlp.sklearn._utils``."""

from __future__ import annotations

import contextlib
import functools
import itertools
import warnings
from typing import cast

import jax
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxmlp import fit_lbfgs, value_and_grad
from jaxmlp._cache import enable_by_default
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP, Dense
from jaxmlp.errors import JaxmlpWarning
from jaxmlp.sklearn._stochastic import NONFINITE_MESSAGE, fit_epochs, partial_epoch
from jaxmlp.sklearn._utils import (
    _ACTIVATION_ALIASES,
    _FEATURE_MULTIPLE,
    _OUTPUT_ACTIVATIONS,
    _PREDICT_CHUNK,
    _check_params,
    _check_sample_weight,
    _device_params,
    _hidden_sizes,
    _logits_program,
    _optimizer,
    _pad,
    _round_up,
)

# scikit-learn's X: dense or CSR/CSC, float64 or float32 (anything else becomes float64).
SPARSE_FORMATS = ["csr", "csc"]
DTYPES = (np.float64, np.float32)


def _precision(dtype) -> contextlib.AbstractContextManager:
    """JAX's x64 mode for a float64 fit or prediction, only while it runs (never globally)."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


@functools.lru_cache(maxsize=8)
def _value_and_grad_program(model: MLP, loss: Loss, method: str, l2: float, l1: float = 0.0):
    return jax.jit(value_and_grad(model, loss, method=method, l2=l2, l1=l1))


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else X


class _BaseMLP(BaseEstimator):
    """Constructor, training and prediction shared by the two estimators."""

    # Fitted attributes the shared code reads: ``n_features_in_`` is set by scikit-learn's
    # ``validate_data``, the others by ``_initialize`` and the estimators' ``_validate_input``.
    n_features_in_: int
    n_outputs_: int
    out_activation_: str

    def __init__(
        self,
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
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.gradient_method = gradient_method
        self.l1 = l1

    # -- hyperparameters (checked in fit, as scikit-learn requires) ---------------------------
    def _model(self, padded: bool = False, dtype=None) -> MLP:
        """The network description (hashable, cheap to rebuild); ``padded``: the one training
        runs on, its inputs padded to a multiple of ``_FEATURE_MULTIPLE``; ``dtype``: the
        parameters' (default: the fitted ones')."""
        dtype = np.dtype(self.coefs_[0].dtype if dtype is None else dtype)
        n_in = self.n_features_in_
        if padded:
            n_in = _round_up(n_in, _FEATURE_MULTIPLE)
        sizes = (n_in, *_hidden_sizes(self.hidden_layer_sizes), self.n_outputs_)
        activation = _ACTIVATION_ALIASES.get(self.activation, self.activation)
        output = _OUTPUT_ACTIVATIONS[self.out_activation_]
        return MLP(sizes, activation, output, param_dtype=dtype.name)

    def _get_optimizer(self, n: int | None = None, steps: int | None = None):
        """The optax optimizer; ``n`` rows and ``steps`` per epoch: a fit's (``invscaling``
        then follows scikit-learn's schedule from ``t_`` on), else partial_fit's, whose rate the
        estimator sets before each pass."""
        lr = float(self.learning_rate_init)
        if self.solver == "sgd":
            args = (float(self.momentum), bool(self.nesterovs_momentum))
            if self.learning_rate == "invscaling" and n is not None:
                args = (*args, float(self.power_t), int(self.t_), n, steps)
            return _optimizer("sgd", lr, *args)
        return _optimizer("adam", lr, float(self.beta_1), float(self.beta_2), float(self.epsilon))

    def _batch_size(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        batch_size = int(self.batch_size)
        if batch_size > n:
            warnings.warn(
                f"batch_size={batch_size} exceeds the {n} training rows; using {n}",
                JaxmlpWarning,
                stacklevel=5,
            )
        return min(batch_size, n)

    def _l2(self, batch_size: int, sw: np.ndarray | None) -> float:
        # scikit-learn's penalty alpha / (2 * batch weight sum) * ||W||^2 beside a mean loss.
        mean_w = 1.0 if sw is None else float(np.mean(sw, dtype=np.float64))
        return float(self.alpha) / (batch_size * mean_w)

    def _l1(self, batch_size: int, sw: np.ndarray | None) -> float:
        # The L1 penalty scaled as alpha is: l1 / (batch weight sum) * sum |W| beside a mean loss.
        mean_w = 1.0 if sw is None else float(np.mean(sw, dtype=np.float64))
        return float(self.l1) / (batch_size * mean_w)

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
        # An estimator owns its process's JAX set-up (a script, a grid search's workers): JAX's
        # persistent compilation cache, unless the user configured it (see jaxmlp._cache).
        enable_by_default()
        _check_params(self, incremental)
        first = not hasattr(self, "coefs_") or not (self.warm_start or incremental)
        X, Y, n_outputs = self._validate_input(X, y, first, incremental, classes)
        # Sparse rows train densified (predict densifies chunk by chunk).
        X = _dense(X)
        if not first:
            X = X.astype(self.coefs_[0].dtype, copy=False)
        Y = Y.astype(X.dtype, copy=False) if Y.dtype.kind == "f" else Y
        sw = _check_sample_weight(sample_weight, X.shape[0], X.dtype)
        rs = check_random_state(self.random_state)
        if first:
            self._initialize(rs, n_outputs, X.dtype)
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"y: {n_outputs} outputs, the fitted network has {self.n_outputs_}")
        # The row orders' key comes from the same random state, after the initial weights.
        seed = rs.randint(np.iinfo(np.int32).max)
        with _precision(X.dtype):
            fit_key = jax.random.key(int(seed))
            if incremental:
                partial_epoch(self, X, Y, sw, rs)
            elif self.solver == "lbfgs":
                self._fit_lbfgs(X, Y, sw)
            else:
                fit_epochs(self, X, Y, sw, rs, fit_key)
        if not all(np.isfinite(w).all() for w in (*self.coefs_, *self.intercepts_)):
            raise ValueError(NONFINITE_MESSAGE)
        return self

    def _initialize(self, rs: np.random.RandomState, n_outputs: int, dtype) -> None:
        self.n_outputs_ = n_outputs
        sizes = (self.n_features_in_, *_hidden_sizes(self.hidden_layer_sizes), n_outputs)
        self.n_layers_ = len(sizes)
        # scikit-learn's initialisation, draw for draw from the same random state (so the same
        # random_state starts from the same weights as scikit-learn's MLP): Glorot's uniform
        # bound sqrt(6 / (fan_in + fan_out)) (sqrt(2 / ...) for logistic) for weights and biases,
        # drawn in float64 and cast.
        factor = 2.0 if self.activation == "logistic" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = np.sqrt(factor / (fan_in + fan_out))
            self.coefs_.append(rs.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
            self.intercepts_.append(rs.uniform(-bound, bound, fan_out).astype(dtype))
        self._opt_state = None
        self.n_iter_ = 0
        self.t_ = 0
        if self.solver != "lbfgs":  # as scikit-learn: the stochastic solvers' bookkeeping
            self.loss_curve_ = []
            self._no_improvement_count = 0
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

    def _fit_lbfgs(self, X, Y, sw) -> None:
        """Full-batch L-BFGS (:func:`jaxmlp.fit_lbfgs`): scikit-learn's objective, the data
        loss plus ``alpha / (2 * weight sum) * sum ||W||^2``, and its ``max_iter``, ``max_fun``
        and ``tol`` (the gradient's largest entry)."""
        n = X.shape[0]
        weight_sum = float(n if sw is None else np.sum(sw, dtype=np.float64))
        model = self._model(padded=True)
        result = fit_lbfgs(
            model,
            self._train_params(),
            _pad(X, n, model.sizes[0]),
            Y,
            loss=self._loss(),
            max_iter=int(self.max_iter),
            max_fun=int(self.max_fun),
            tol=float(self.tol),
            l2=float(self.alpha) / weight_sum,
            l1=float(self.l1) / weight_sum,
            sample_weight=sw,
            method=self.gradient_method,
        )
        self._store(result.params, None)
        self.n_iter_ = min(result.n_iter, int(self.max_iter))
        self.loss_ = result.loss
        if self.verbose:
            print(f"L-BFGS: {result.n_iter} iterations, loss = {result.loss:.8f}, {result.message}")
        if result.status in (2, 3):
            warnings.warn(
                f"lbfgs failed to converge after {result.n_iter} iteration(s) "
                f"({result.message}).\n\nIncrease the number of iterations (max_iter) or "
                "function evaluations (max_fun), or scale the data.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _loss_grad_lbfgs(self, packed, X, y, sample_weight, *buffers):
        """scikit-learn's private L-BFGS objective, which its own tests call: the objective
        and its gradient at the parameters packed as ``[W_0.ravel(), ..., b_0, ...]``, from
        jaxmlp's ``gradient_method`` (``buffers``, scikit-learn's work arrays, are unused)."""
        del buffers
        dtype = self.coefs_[0].dtype
        sizes = [w.size for w in self.coefs_] + [b.size for b in self.intercepts_]
        parts = np.split(np.asarray(packed, dtype), np.cumsum(sizes)[:-1])
        shapes = [w.shape for w in (*self.coefs_, *self.intercepts_)]
        flat = [p.reshape(shape) for p, shape in zip(parts, shapes, strict=True)]
        n_layers = len(self.coefs_)
        X = _dense(X).astype(dtype, copy=False)
        Y = np.asarray(y, dtype).reshape(X.shape[0], -1)
        weight_sum = X.shape[0] if sample_weight is None else float(np.sum(sample_weight))
        with _precision(dtype):
            vg = _value_and_grad_program(
                self._model(), self._loss(), self.gradient_method,
                float(self.alpha) / weight_sum, float(self.l1) / weight_sum,
            )  # fmt: skip
            params = _device_params(flat[:n_layers], flat[n_layers:])
            value, grads = jax.device_get(vg(params, X, Y, sample_weight))
        return float(value), np.concatenate(
            [np.ravel(g.w) for g in grads] + [np.ravel(g.b) for g in grads]
        )

    def _validation_score(self, model: MLP, params, validation) -> float:
        """scikit-learn's ``score`` (accuracy, R^2) on the held-out rows, from ``params``."""
        x_val, y_val, sw_val = validation
        z = np.asarray(_logits_program(model)(params, x_val))
        return float(self._encoded_score(z, y_val, sw_val))

    # -- prediction --------------------------------------------------------------------------
    def _logits(self, X) -> np.ndarray:
        """The output layer's pre-activation ``(n_samples, n_outputs)`` in the parameters'
        dtype; sparse ``X`` is densified ``_PREDICT_CHUNK`` rows at a time."""
        check_is_fitted(self)
        X = cast(
            np.ndarray,
            validate_data(self, X, reset=False, accept_sparse=SPARSE_FORMATS, dtype=DTYPES),  # pyright: ignore[reportArgumentType]
        )
        dtype = self.coefs_[0].dtype
        out = []
        with _precision(dtype):
            program = _logits_program(self._model())
            params = _device_params(self.coefs_, self.intercepts_)
            for start in range(0, X.shape[0], _PREDICT_CHUNK):
                chunk = _dense(X[start : start + _PREDICT_CHUNK]).astype(dtype, copy=False)
                rows = max(32, 1 << (len(chunk) - 1).bit_length())
                out.append(np.asarray(program(params, _pad(chunk, rows)))[: len(chunk)])
        return np.concatenate(out)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coefs_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_solver(self) -> bool:
        """``partial_fit`` exists for the stochastic solvers only, as in scikit-learn."""
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                "partial_fit is only available for stochastic optimizers. "
                f"{self.solver} is not stochastic."
            )
        return True

    def _stratify_labels(self, Y: np.ndarray) -> np.ndarray | None:
        """The labels to stratify the early-stopping split by (None: a plain split)."""
        return None

    def _encoded_score(self, z: np.ndarray, Y: np.ndarray, sw) -> float:
        """The score of the logits ``z`` against the encoded targets ``Y``."""
        raise NotImplementedError

    def _validate_input(
        self, X, y, reset: bool, incremental: bool, classes
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """``(X, Y, n_outputs)``: the checked rows and the targets as the loss reads them."""
        raise NotImplementedError

    def _loss(self) -> Loss:
        raise NotImplementedError
