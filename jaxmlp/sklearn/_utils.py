"""Private helpers of :mod:`jaxmlp.sklearn`: constants, its two losses, cached optimizers and
prediction programs, padding, the checks of hyperparameters and sample weights, the
early-stopping split and ``partial_fit``'s pass over minibatches.

They depend on plain values (or an estimator's hyperparameters) only, so that ``_BaseMLP``
keeps just the steps of fitting and predicting.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_array

from jaxmlp._core.activations import HIDDEN_ACTIVATIONS
from jaxmlp._core.backprop import METHODS, forward
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP, Dense

_ACTIVATION_ALIASES = {"logistic": "sigmoid"}  # scikit-learn's name -> ours
# Poisson regression's "exp" output trains on the logits (POISSON_LOSS); predict exponentiates.
_OUTPUT_ACTIVATIONS = {
    "logistic": "sigmoid",
    "softmax": "softmax",
    "identity": "identity",
    "exp": "identity",
}
SOLVERS = ("lbfgs", "sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
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
    "l1": (numbers.Real, 0, False, None),
    "learning_rate_init": (numbers.Real, 0, True, None),
    "max_iter": (numbers.Integral, 1, False, None),
    "max_fun": (numbers.Integral, 1, False, None),
    "power_t": (numbers.Real, 0, False, None),
    "tol": (numbers.Real, 0, False, None),
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


SQUARED_ERROR_LOSS = Loss("half_squared_error", _half_squared_error)


def _half_poisson(z, y):
    # exp(z) - y z per output (scikit-learn's half Poisson deviance up to a constant), summed
    return jnp.sum(jnp.exp(z) - y * z, axis=-1)


def _half_poisson_grad(z, y):
    return jnp.exp(z) - y


POISSON_LOSS = Loss("half_poisson", _half_poisson, _half_poisson_grad, logits=True)
MULTILABEL_LOSS = Loss(
    "multilabel_log_loss",
    _multilabel_log_loss,
    _multilabel_log_loss_grad,
    logits=True,
    fuses_with="sigmoid",
    targets="binary",
)


class _Velocity(NamedTuple):
    velocity: Any


def _sgd(learning_rate, momentum, nesterov: bool) -> optax.GradientTransformation:
    """scikit-learn's SGD: ``v <- mu v - lr g``; the update is ``v`` (Nesterov:
    ``mu v - lr g``). With a learning rate that changes, this differs from optax's trace (which
    scales the whole velocity by the current rate)."""

    def init(params):
        return _Velocity(jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        grads = updates
        v = jax.tree.map(lambda v, g: momentum * v - learning_rate * g, state.velocity, grads)
        if nesterov:
            return jax.tree.map(lambda v, g: momentum * v - learning_rate * g, v, grads), _Velocity(
                v
            )
        return v, _Velocity(v)

    return optax.GradientTransformation(init, update)


class _Moments(NamedTuple):
    step: jax.Array
    m: Any
    v: Any


def _adam(learning_rate: float, b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """scikit-learn's Adam: ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``, update
    ``-lr_t m / (sqrt(v) + eps)`` (optax's adds ``eps`` to the bias-corrected ``sqrt(v)``)."""

    def init(params):
        return _Moments(
            jnp.zeros((), jnp.int32),
            jax.tree.map(jnp.zeros_like, params),
            jax.tree.map(jnp.zeros_like, params),
        )

    def update(updates, state, params=None):
        del params
        grads = updates
        t = state.step + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.v, grads)
        tf = t.astype(jnp.result_type(float))
        lr_t = learning_rate * jnp.sqrt(1 - b2**tf) / (1 - b1**tf)
        updates = jax.tree.map(lambda m, v: (-lr_t * m / (jnp.sqrt(v) + eps)).astype(m.dtype), m, v)
        return updates, _Moments(t, m, v)

    return optax.GradientTransformation(init, update)


def _invscaling(lr: float, power_t: float, t0: int, n: int, steps_per_epoch: int):
    """scikit-learn's ``invscaling`` as a schedule of the step count: the first epoch of a fit
    runs at ``lr``, epoch ``e > 0`` at ``lr / (t + 1) ** power_t`` with ``t = t0 + e n`` the rows
    seen so far (scikit-learn updates the rate at the end of each epoch)."""

    def schedule(count):
        e = count // steps_per_epoch
        t = (t0 + e * n + 1).astype(jnp.result_type(float))
        return jnp.where(e == 0, lr, lr / t**power_t)

    return schedule


@functools.lru_cache(maxsize=32)
def _optimizer(solver: str, lr: float, *args) -> optax.GradientTransformation:
    """One optax object per hyperparameter tuple: fit's compiled programs key on the object.

    ``args``: ``(momentum, nesterov)`` for ``"sgd"`` (its rate in the state, where the
    estimator reads and sets it), plus ``(power_t, t0, n, steps_per_epoch)`` for the
    ``invscaling`` schedule; ``(beta_1, beta_2, epsilon)`` for ``"adam"``.
    """
    if solver == "sgd":
        momentum, nesterov, *schedule = args
        rate = _invscaling(lr, *schedule) if schedule else lr
        return optax.inject_hyperparams(_sgd, static_args=("nesterov",))(
            learning_rate=rate, momentum=momentum, nesterov=bool(nesterov)
        )
    beta_1, beta_2, epsilon = args
    return _adam(lr, beta_1, beta_2, epsilon)


def _set_rate(opt_state, lr: float):
    """``opt_state`` of the ``sgd`` optimizer with its learning rate set to ``lr``."""
    rate = opt_state.hyperparams["learning_rate"]
    return opt_state._replace(
        hyperparams={**opt_state.hyperparams, "learning_rate": jnp.asarray(lr, rate.dtype)}
    )


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


def on_device(a: Any) -> jax.Array:
    """Host values ``a`` on the device in JAX's dtype for them (float64 to float32 without x64),
    cast on the host: ``jnp.array`` and a cast on the device each compile a small program per
    shape, about 10 ms apiece on a CPU, which a first ``fit`` pays a dozen times."""
    host = np.asarray(a)
    return jax.device_put(np.asarray(host, jax.dtypes.canonicalize_dtype(host.dtype)))


def _device_params(coefs, intercepts) -> tuple[Dense, ...]:
    pairs = zip(coefs, intercepts, strict=True)
    return tuple(Dense(on_device(w), on_device(b)) for w, b in pairs)


def _hidden_sizes(h) -> tuple[int, ...]:
    """``hidden_layer_sizes`` (an int or a sequence of ints > 0) as a tuple of ints."""
    sizes = (h,) if isinstance(h, numbers.Integral) else tuple(h)
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
        raise ValueError(f"hidden_layer_sizes: expected ints, got {h!r}")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"hidden_layer_sizes: must be > 0, got {h!r}")
    return tuple(int(s) for s in sizes)


def _check_params(est, incremental: bool) -> None:
    """Raises ``ValueError`` for a hyperparameter of ``est`` out of its domain; scikit-learn
    wants this checked in ``fit``, not in the constructor."""
    for name, valid in (
        ("solver", SOLVERS),
        ("learning_rate", LEARNING_RATES),
        ("activation", ("logistic", *HIDDEN_ACTIVATIONS)),
        ("gradient_method", METHODS),
    ):
        value = getattr(est, name)
        if not isinstance(value, str) or value not in valid:
            raise ValueError(f"{name}: expected one of {list(valid)}, got {value!r}")
    _hidden_sizes(est.hidden_layer_sizes)
    for name, (kind, low, low_open, high) in _NUMERIC_PARAMS.items():
        value = getattr(est, name)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{name}: expected a {kind.__name__} number, got {value!r}")
        if value < low or (low_open and value == low) or (high is not None and value > high):
            raise ValueError(f"{name}: {value!r} is out of range")
    n = est.n_iter_no_change
    if (
        isinstance(n, bool)
        or not isinstance(n, numbers.Real)
        or not ((isinstance(n, numbers.Integral) and int(n) >= 1) or n == math.inf)
    ):
        raise ValueError(f"n_iter_no_change: expected an int >= 1 or np.inf, got {n!r}")
    bs = est.batch_size
    if bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, numbers.Integral) or bs < 1):
        raise ValueError(f"batch_size: expected 'auto' or an int >= 1, got {bs!r}")
    if incremental and est.early_stopping:
        raise ValueError("partial_fit does not support early_stopping=True")


def _check_sample_weight(sample_weight, n: int, dtype) -> np.ndarray | None:
    """``sample_weight`` (None, a number or ``(n,)`` values) as ``(n,)`` of ``dtype``, or None."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sample_weight = np.full(n, sample_weight, dtype)
    # scikit-learn is unannotated: pyright takes check_array's dtype to be a str (its default).
    sw = check_array(sample_weight, ensure_2d=False, dtype=dtype, input_name="sample_weight")  # pyright: ignore[reportArgumentType]
    if sw.shape != (n,):
        raise ValueError(f"sample_weight: expected shape ({n},), got {sw.shape}")
    if np.any(sw < 0) or not np.any(sw > 0):
        raise ValueError("sample_weight: must be non-negative and not all zero")
    return sw


def _validation_split(
    X: np.ndarray,
    Y: np.ndarray,
    sw: np.ndarray | None,
    fraction: float,
    rs,
    stratify: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray, Any]]:
    """Holds out ``fraction`` of the rows for early stopping, as scikit-learn does (its
    ``stratify`` labels: the binary problems' 0/1 column).

    Returns:
        ``(X, Y, sw)`` of the training rows and ``(X_val, Y_val, sw_val)``.
    """
    # scikit-learn is unannotated: its splits of arrays are arrays.
    parts = cast(
        list[np.ndarray],
        train_test_split(
            *((X, Y) if sw is None else (X, Y, sw)),
            test_size=fraction,
            random_state=rs,
            stratify=stratify,
        ),
    )
    X, X_val, Y, Y_val = parts[:4]
    sw, sw_val = (None, None) if sw is None else (parts[4], parts[5])
    if X_val.shape[0] < 2:
        raise ValueError(
            "The validation set is too small. Increase 'validation_fraction' or the "
            "size of your dataset."
        )
    return X, Y, sw, (X_val, Y_val, sw_val)


def _minibatch_pass(step, state, X, Y, sw, order: np.ndarray, batch_size: int):
    """One pass of the jitted ``step`` over the rows ``order`` of ``(X, Y)``, ``batch_size`` at a
    time.

    The last batch is padded with weight-0 rows (a lone batch up to a multiple of
    ``_ROW_MULTIPLE``, as in fit), so one compiled step shape serves the whole pass.

    Returns:
        The new state and the pass's loss: the batches' losses weighted by their weight sums.
    """
    n = len(order)
    n_batches = -(-n // batch_size)
    if n_batches == 1:
        batch_size = _round_up(n, _ROW_MULTIPLE)
    order = _pad(order, n_batches * batch_size)
    w = _pad((np.ones(n, X.dtype) if sw is None else sw)[order[:n]], len(order))
    values = []
    for rows, wb in zip(
        order.reshape(n_batches, batch_size), w.reshape(n_batches, batch_size), strict=True
    ):
        state, value = step(state, X[rows], Y[rows], wb)
        values.append(value)
    wsum = w.reshape(n_batches, batch_size).sum(axis=1)
    return state, float(np.dot(np.asarray(jax.device_get(values)), wsum) / wsum.sum())
