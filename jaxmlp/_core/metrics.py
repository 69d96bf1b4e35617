"""Evaluation metrics: accuracy for the classification losses, R^2 for regression.

Pure and jittable; ``fit`` computes them inside the fused epoch for the validation data.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from jaxmlp._core.backprop import check_model_loss, check_targets, forward
from jaxmlp._core.losses import Loss
from jaxmlp._core.mlp import MLP, Params, as_array, as_batch, check_params


def metric_name(loss: Loss) -> str:
    """``"accuracy"`` for class or binary targets, ``"r2"`` for regression."""
    return "r2" if loss.targets == "regression" else "accuracy"


def accuracy(logits: jax.Array, y: jax.Array, targets: str = "classes") -> jax.Array:
    """Fraction of correct predictions.

    Args:
        logits: ``(batch, k)`` output-layer pre-activations.
        y: integer labels ``(batch,)`` or probabilities ``(batch, k)`` (``targets="classes"``),
            or 0/1 targets ``(batch, k)`` (``targets="binary"``, every output counted).
        targets: ``"classes"`` (one class per row) or ``"binary"`` (one 0/1 decision per output).
    """
    logits, y = as_array(logits, "logits"), as_array(y, "y")
    if targets not in ("classes", "binary"):
        raise ValueError(f"targets: expected 'classes' or 'binary', got {targets!r}")
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape (batch, k), got {tuple(logits.shape)}")
    if y.shape != logits.shape and (targets == "binary" or y.shape != logits.shape[:1]):
        raise ValueError(
            f"y: shape {tuple(y.shape)} does not match logits {tuple(logits.shape)} "
            f"for targets={targets!r}"
        )
    if targets == "binary":
        return jnp.mean(((logits > 0) == (y > 0.5)).astype(logits.dtype))
    labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype))


def r2_score(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Coefficient of determination ``1 - SS_res / SS_tot``, averaged over outputs.

    A constant target scores 1 when predicted exactly and 0 otherwise (scikit-learn's rule).
    """
    pred, y = as_array(pred, "pred"), as_array(y, "y")
    if y.ndim not in (1, 2) or pred.shape != y.shape:
        raise ValueError(
            f"y: expected the shape of pred {tuple(pred.shape)}, (n,) or (n, k), got {tuple(y.shape)}"
        )
    ss_res = jnp.sum((y - pred) ** 2, axis=0)
    ss_tot = jnp.sum((y - jnp.mean(y, axis=0, keepdims=True)) ** 2, axis=0)
    safe = jnp.where(ss_tot > 0, ss_tot, 1)
    r2 = jnp.where(ss_tot > 0, 1 - ss_res / safe, jnp.where(ss_res == 0, 1.0, 0.0))
    return jnp.mean(r2)


def evaluate(
    model: MLP,
    params: Params,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    loss: str | Loss,
) -> tuple[jax.Array, jax.Array]:
    """The data loss (no l2 term) and the metric (accuracy or R^2) of ``params`` on ``(x, y)``.

    The argument order is ``fit``'s and ``gradcheck``'s: ``evaluate(model, params, x, y,
    loss="mse")``. The old order ``evaluate(model, loss, params, x, y)`` (a loss name or
    ``Loss`` second) still works for one release, with a ``DeprecationWarning``.

    Args:
        model: the network description.
        params: its parameters.
        x: ``(n, sizes[0])``.
        y: targets as ``loss`` expects.
        loss: a loss name (``jaxmlp.LOSSES``) or a :class:`jaxmlp.Loss`.

    Returns:
        ``(loss_value, metric)``, two scalars in the parameters' dtype.

    Checks shapes and dtypes at trace time; jittable (``loss`` static, e.g.
    ``jax.jit(evaluate, static_argnames="loss")``).
    """
    if isinstance(params, (str, Loss)):
        warnings.warn(
            "evaluate(model, loss, params, x, y) is deprecated: call "
            "evaluate(model, params, x, y, loss=loss), the order of fit and gradcheck",
            DeprecationWarning,
            stacklevel=2,
        )
        params, x, y, loss = x, y, loss, params  # type: ignore[assignment]
    loss = check_model_loss(model, loss)
    check_params(model, params)
    xb, _ = as_batch(model, x, params)
    yb = check_targets(model, loss, y, xb.shape[0], xb.dtype)
    trace = forward(model, params, xb)
    out = trace.z[-1] if loss.logits else trace.a[-1]
    value = loss.value(out, yb)
    if loss.targets == "regression":
        return value, r2_score(trace.a[-1], yb).astype(value.dtype)
    return value, accuracy(trace.z[-1], yb, loss.targets).astype(value.dtype)
