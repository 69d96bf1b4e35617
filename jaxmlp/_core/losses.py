"""Losses, their reductions, and their hand-written gradients with respect to the output.

A loss is described per example: ``per_example(out, y) -> (batch,)`` and its gradient
``per_example_grad(out, y) -> (batch, k)``. The reduction turns that into the batch loss:
``"mean"`` is the (weighted) mean over examples, ``"sum"`` the (weighted) sum. With
``sample_weight`` ``w`` of shape ``(batch,)`` the mean is ``sum_n w_n l_n / sum_n w_n``, so
weights of 0 mask padded rows exactly.

The two cross-entropy losses work on logits (``logits=True``): the backward pass hands them the
output layer's pre-activation and uses the fused gradient, e.g. ``(softmax(z) - y) / n``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

HUBER_DELTA = 1.0


class Loss(NamedTuple):
    """A loss and, optionally, its hand-written gradient.

    ``Loss("quantile", per_example)`` alone is a complete loss: its derivative with respect to the
    output then comes from ``jax.grad`` (the network's backward stays hand-written). A hand-written
    ``per_example_grad`` is checked against ``jax.grad`` once per ``fit`` (see
    :func:`check_loss_grad`).

    Attributes:
        name: the registry name (any string for a user-defined loss).
        per_example: ``(out, y) -> (batch,)``, the loss of each example on its own.
        per_example_grad: ``(out, y) -> (batch, k)``, d per_example[n] / d out[n], or ``None``
            to let JAX differentiate ``per_example``.
        reduction: ``"mean"`` (weighted mean over examples) or ``"sum"``.
        logits: True when ``out`` is the output layer's pre-activation (cross entropies).
        fuses_with: the output activation whose composition with this loss is computed from
            the logits (``"softmax"``/``"sigmoid"``), or ``None``.
        targets: ``"regression"`` (float targets shaped like the output) or ``"classes"``
            (integer labels ``(batch,)`` or probabilities ``(batch, k)``) or ``"binary"``.
    """

    name: str
    per_example: Callable[[jax.Array, jax.Array], jax.Array]
    per_example_grad: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    reduction: str = "mean"
    logits: bool = False
    fuses_with: str | None = None
    targets: str = "regression"

    def weights(self, batch: int, dtype, sample_weight: jax.Array | None) -> jax.Array:
        """The factor ``c_n`` with ``L = sum_n c_n l_n``: 1/n, w_n/sum(w), 1 or w_n."""
        if sample_weight is None:
            scale = 1.0 / batch if self.reduction == "mean" else 1.0
            return jnp.full((batch,), scale, dtype)
        w = sample_weight.astype(dtype)
        if self.reduction == "mean":
            total = jnp.sum(w)
            # All-zero weights give a loss and gradient of zero rather than 0/0.
            return w / jnp.where(total > 0, total, 1)
        return w

    def value(self, out: jax.Array, y: jax.Array, sample_weight: jax.Array | None = None):
        """The reduced loss, a scalar."""
        c = self.weights(out.shape[0], out.dtype, sample_weight)
        return jnp.sum(c * self.per_example(out, y))

    def grad(self, out: jax.Array, y: jax.Array, sample_weight: jax.Array | None = None):
        """dL/d out, shape ``(batch, k)``."""
        c = self.weights(out.shape[0], out.dtype, sample_weight)
        return c[:, None] * self.example_grad(out, y)

    def example_grad(self, out: jax.Array, y: jax.Array) -> jax.Array:
        """d per_example[n] / d out[n], ``(batch, k)``: the hand-written one, else JAX's (example
        ``n``'s loss depends on row ``n`` alone, so the gradient of their sum holds every row's)."""
        if self.per_example_grad is not None:
            return self.per_example_grad(out, y)
        return jax.grad(lambda o: jnp.sum(self.per_example(o, y)))(out)


def _sq_per_example(out, y):
    return jnp.sum((out - y) ** 2, axis=-1)


def _mse_per_example(out, y):
    return jnp.mean((out - y) ** 2, axis=-1)


def _mse_grad(out, y):
    # d/d out mean_k (out_k - y_k)^2 = 2 (out - y) / K
    return 2 * (out - y) / out.shape[-1]


def _mae_per_example(out, y):
    return jnp.mean(jnp.abs(out - y), axis=-1)


def _mae_grad(out, y):
    # sign(r) / K; 0 at r = 0, as jax.grad of jnp.abs gives
    return jnp.sign(out - y) / out.shape[-1]


def _huber_per_example(out, y):
    r = jnp.abs(out - y)
    quad = jnp.minimum(r, HUBER_DELTA)
    # 0.5 r^2 inside |r| <= delta, delta (|r| - delta/2) outside, written without a branch
    return jnp.mean(0.5 * quad**2 + HUBER_DELTA * (r - quad), axis=-1)


def _huber_grad(out, y):
    return jnp.clip(out - y, -HUBER_DELTA, HUBER_DELTA) / out.shape[-1]


def _as_probs(z, y):
    """Integer labels (batch,) -> one-hot (batch, k); probabilities pass through."""
    if y.ndim == 1:
        return jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    return y.astype(z.dtype)


def _softmax_ce_per_example(z, y):
    # -sum_k y_k log softmax(z)_k, through log-softmax so logits of 1e4 stay finite
    return -jnp.sum(_as_probs(z, y) * jax.nn.log_softmax(z, axis=-1), axis=-1)


def _softmax_ce_grad(z, y):
    # d/dz = softmax(z) * sum_k y_k - y (= softmax(z) - y for a probability vector y)
    p = _as_probs(z, y)
    return jax.nn.softmax(z, axis=-1) * jnp.sum(p, axis=-1, keepdims=True) - p


def _bce_per_example(z, y):
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, stable for large |z|
    return jnp.mean(jax.nn.softplus(z) - y * z, axis=-1)


def _bce_grad(z, y):
    return (jax.nn.sigmoid(z) - y) / z.shape[-1]


_LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("sse", _sq_per_example, lambda out, y: 2 * (out - y), reduction="sum"),
        Loss("mse", _mse_per_example, _mse_grad),
        Loss(
            "half_mse",
            lambda o, y: 0.5 * _mse_per_example(o, y),
            lambda o, y: (o - y) / o.shape[-1],
        ),
        Loss("mae", _mae_per_example, _mae_grad),
        Loss("huber", _huber_per_example, _huber_grad),
        Loss(
            "softmax_cross_entropy",
            _softmax_ce_per_example,
            _softmax_ce_grad,
            logits=True,
            fuses_with="softmax",
            targets="classes",
        ),
        Loss(
            "sigmoid_binary_cross_entropy",
            _bce_per_example,
            _bce_grad,
            logits=True,
            fuses_with="sigmoid",
            targets="binary",
        ),
    )
}

LOSSES: tuple[str, ...] = tuple(_LOSSES)
CLASSIFICATION_LOSSES: tuple[str, ...] = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy")
_TARGETS = ("regression", "classes", "binary")


def get_loss(loss: str | Loss, *, argname: str = "loss") -> Loss:
    """Returns the :class:`Loss` for a name, or ``loss`` itself when it already is one.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
        TypeError: for anything that is neither a name nor a ``Loss``.
    """
    if isinstance(loss, Loss):
        if loss.reduction not in ("mean", "sum"):
            raise ValueError(
                f"{argname}: reduction must be 'mean' or 'sum', got {loss.reduction!r}"
            )
        if loss.targets not in _TARGETS:
            raise ValueError(
                f"{argname}: targets must be one of {list(_TARGETS)}, got {loss.targets!r}"
            )
        if not callable(loss.per_example):
            raise TypeError(f"{argname}: per_example must be a callable")
        if loss.per_example_grad is not None and not callable(loss.per_example_grad):
            raise TypeError(f"{argname}: per_example_grad must be a callable or None")
        return loss
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"{argname}: unknown loss {loss!r}; valid names are {list(LOSSES)}")
        return _LOSSES[loss]
    raise TypeError(f"{argname}: expected a loss name or a jaxmlp.Loss, got {type(loss).__name__}")


# How far a hand-written per_example_grad may stray from JAX's, relative to the gradient's size.
_GRAD_CHECK_RTOL = {2: 5e-2, 4: 1e-3, 8: 1e-8}


def is_builtin(loss: Loss) -> bool:
    """``loss`` is one of the registry's own (their gradients are tested, never re-checked)."""
    return _LOSSES.get(loss.name) is loss


def check_loss_grad(loss: Loss, out: jax.Array, y: jax.Array, argname: str = "loss") -> None:
    """Compares a user loss's hand-written ``per_example_grad`` with ``jax.grad`` of its
    ``per_example`` on one batch (eager, a few small ops); raises ``ValueError`` naming the loss
    when they disagree. Nothing to check for a built-in loss or one without a hand-written
    gradient."""
    if loss.per_example_grad is None or is_builtin(loss):
        return
    mine = jnp.asarray(loss.per_example_grad(out, y))
    want = jax.grad(lambda o: jnp.sum(loss.per_example(o, y)))(out)
    if mine.shape != want.shape:
        raise ValueError(
            f"{argname}: per_example_grad of {loss.name!r} returns shape {tuple(mine.shape)}, "
            f"expected {tuple(want.shape)} (the output's)"
        )
    scale = float(jnp.max(jnp.abs(want))) + 1e-30
    err = float(jnp.max(jnp.abs(mine.astype(want.dtype) - want)))
    rtol = _GRAD_CHECK_RTOL.get(want.dtype.itemsize, 1e-3)
    if not err <= rtol * scale:
        raise ValueError(
            f"{argname}: per_example_grad of {loss.name!r} disagrees with jax.grad of its "
            f"per_example (max abs difference {err:.3g} against a gradient of size {scale:.3g}); "
            "fix it, or leave per_example_grad=None to let JAX differentiate the loss"
        )
