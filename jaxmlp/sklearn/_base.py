"""``_BaseMLP``: the constructor, training and prediction that :mod:`jaxmlp.sklearn`'s two
estimators share. The loss scaling is described in :mod:`jaxmlp.sklearn`, the padding of rows
and features beside its constants in ``jaxmlp.sklearn._utils``."""

from __future__ import annotations

import numbers
import warnings
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxmlp import EarlyStopping, TrainState, fit, make_train_step
from jaxmlp._cache import enable_by_default
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP, Dense
from jaxmlp.errors import JaxmlpWarning
from jaxmlp.sklearn._utils import (
    _ACTIVATION_ALIASES,
    _FEATURE_MULTIPLE,
    _OUTPUT_ACTIVATIONS,
    _PREDICT_CHUNK,
    _ROW_MULTIPLE,
    _check_params,
    _check_sample_weight,
    _device_params,
    _hidden_sizes,
    _logits_program,
    _minibatch_pass,
    _optimizer,
    _pad,
    _round_up,
    _validation_split,
)


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
    def _model(self, padded: bool = False) -> MLP:
        """The network description (hashable, cheap to rebuild); ``padded``: the one training
        runs on, its inputs padded to a multiple of ``_FEATURE_MULTIPLE``."""
        n_in = self.n_features_in_
        if padded:
            n_in = _round_up(n_in, _FEATURE_MULTIPLE)
        sizes = (n_in, *_hidden_sizes(self.hidden_layer_sizes), self.n_outputs_)
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
        sw = _check_sample_weight(sample_weight, X.shape[0])
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

    def _initialize(self, key: jax.Array, n_outputs: int) -> None:
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(_hidden_sizes(self.hidden_layer_sizes)) + 2
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
            X, Y, sw, validation = _validation_split(
                X, Y, sw, self.validation_fraction, rs, self._stratify()
            )
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
        order = rs.permutation(n) if self.shuffle else np.arange(n)
        X = _pad(X, n, model.sizes[0])
        state, loss = _minibatch_pass(step, state, X, Y, sw, order, batch_size)
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
        X = cast(np.ndarray, validate_data(self, X, reset=False, dtype=np.float32))
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

    def _validate_input(
        self, X, y, reset: bool, incremental: bool, classes
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """``(X, Y, n_outputs)``: the checked rows and the targets as the loss reads them."""
        raise NotImplementedError

    def _loss(self) -> Loss:
        raise NotImplementedError
