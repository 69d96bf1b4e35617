"""The fused kernels as jaxmlp functions: padding, the custom VJP, ``apply``, ``value_and_grad``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxmlp._checks import check_key, check_nonnegative
from jaxmlp._core.backprop import (
    ValueAndGradFn,
    check_model_loss,
    penalty_grads,
    penalty_value,
    prepare_batch,
)
from jaxmlp._core.losses import Loss, is_builtin
from jaxmlp._core.mlp import MLP, Dense, Params, as_rows, check_params, unrows
from jaxmlp.fused import _calls as C
from jaxmlp.fused import _kernels as K
from jaxmlp.fused._config import FusedConfig, check, layout


def _pad(a: jax.Array, shape: tuple[int, ...], dtype=None) -> jax.Array:
    a = a if dtype is None else a.astype(dtype)
    return jnp.pad(a, [(0, s - n) for s, n in zip(shape, a.shape, strict=True)])


def _padded_rows(lay: K.Layout, n: int) -> int:
    return -(-n // lay.block_rows) * lay.block_rows


def _weights(lay: K.Layout, params: Params) -> list[jax.Array]:
    p, cd = lay.padded, jnp.dtype(lay.compute_dtype)
    ws = [_pad(d.w, (p[l], p[l + 1]), cd) for l, d in enumerate(params)]
    bs = [_pad(d.b[None, :], (1, p[l + 1]), jnp.float32) for l, d in enumerate(params)]
    return ws + bs


def _forward(lay: K.Layout, params: Params, x: jax.Array) -> jax.Array:
    n, rows = x.shape[0], _padded_rows(lay, x.shape[0])
    xp = _pad(x, (rows, lay.padded[0]), lay.compute_dtype)
    out = C.forward_call(lay, rows)(xp, *_weights(lay, params))
    return out[:n, : lay.widths[-1]]


def _grads(lay: K.Layout, params: Params, parts) -> Params:
    L, w = lay.num_layers, lay.widths
    dws, dbs = parts[:L], parts[L : 2 * L]
    return tuple(
        Dense(jnp.sum(dw, 0)[: w[l], : w[l + 1]].astype(d.w.dtype),
              jnp.sum(db, (0, 1))[: w[l + 1]].astype(d.b.dtype))
        for l, (d, dw, db) in enumerate(zip(params, dws, dbs, strict=True))
    )  # fmt: skip


def _backward(lay: K.Layout, params: Params, x, g, need_dx: bool):
    """The cotangent backward kernel: ``(grads, dx or None)`` from ``g`` = dL/d(output)."""
    n, rows = x.shape[0], _padded_rows(lay, x.shape[0])
    xp = _pad(x, (rows, lay.padded[0]), lay.compute_dtype)
    gp = _pad(g, (rows, lay.padded[-1]), jnp.float32)
    parts = C.backward_call(lay, rows, "cotangent", need_dx)(xp, gp, *_weights(lay, params))
    dx = parts[-1][:n, : lay.widths[0]].astype(x.dtype) if need_dx else None
    return _grads(lay, params, parts), dx


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _apply(lay: K.Layout, params: Params, x: jax.Array) -> jax.Array:
    return _forward(lay, params, x)


def _apply_fwd(lay, params, x):
    return _forward(lay, params, x), (params, x)


def _apply_bwd(lay, res, g):
    params, x = res
    grads, dx = _backward(lay, params, x, g, need_dx=True)
    return grads, dx


_apply.defvjp(_apply_fwd, _apply_bwd)


def apply(
    model: MLP, params: Params, x: ArrayLike, *, config: FusedConfig | None = None
) -> jax.Array:
    """``model.apply(params, x)`` in one fused kernel; ``jax.grad`` (reverse mode) of anything
    built on it runs the fused backward kernel, with respect to ``params`` and ``x``.

    Args:
        model: a plain network that :func:`supports` accepts.
        params: its parameter tuple.
        x: ``(..., sizes[0])``, any leading axes (rows of any number: padded inside).
        config: block sizes and interpretation (:class:`FusedConfig`).

    Returns:
        ``(..., sizes[-1])`` in the parameters' dtype, output activation included.
    """
    config = FusedConfig() if config is None else config
    check(model, None, config)
    check_params(model, params)
    xb, lead = as_rows(model, x, params)
    lay = layout(model, xb.shape[0], config, logits=False)
    return unrows(_apply(lay, tuple(params), xb), lead)


def _targets(loss: Loss, y: jax.Array, lay: K.Layout, rows: int) -> jax.Array:
    """Targets padded for the kernel, in the output's dtype (they are read once per row: half
    precision halves the traffic; the kernel computes the head in float32)."""
    dtype = jnp.dtype(lay.out_dtype)
    if y.ndim == 1:  # class labels: one-hot over the real columns (0 and 1 are exact)
        y = jax.nn.one_hot(y, lay.widths[-1], dtype=dtype)
    return _pad(y, (rows, lay.padded[-1]), dtype)


def value_and_grad(
    model: MLP,
    loss: str | Loss,
    *,
    l2: float = 0.0,
    l1: float = 0.0,
    config: FusedConfig | None = None,
) -> ValueAndGradFn:
    """:func:`jaxmlp.value_and_grad` on the fused kernels: the same signature and results.

    The built-in squared errors (``sse``, ``mse``, ``half_mse``) and cross entropies are fused
    into the backward kernel (one launch: forward, loss, deltas, weight gradients); any other
    loss runs between the forward and the backward kernel (two launches). The penalties are
    added outside the kernels. ``key`` is accepted and unused (a plain network has no dropout).

    Raises:
        ValueError: when the kernels cannot run the model (see :func:`check`).
    """
    loss = check_model_loss(model, loss)
    config = FusedConfig() if config is None else config
    check(model, loss, config)
    l2 = check_nonnegative(l2, "l2")
    l1 = check_nonnegative(l1, "l1")
    head = loss.name if is_builtin(loss) and loss.name in K.HEADS else None

    def f(
        params: Params,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, Params]:
        if key is not None:
            check_key(key)
        xb, yb, sw = prepare_batch(model, loss, params, x, y, sample_weight)
        n = xb.shape[0]
        lay = layout(model, n, config, logits=loss.logits)
        if head is None:
            out = _forward(lay, params, xb)
            value = loss.value(out, yb, sw)
            grads, _ = _backward(lay, params, xb, loss.grad(out, yb, sw), need_dx=False)
        else:
            rows = _padded_rows(lay, n)
            xp = _pad(xb, (rows, lay.padded[0]), lay.compute_dtype)
            c = _pad(loss.weights(n, jnp.float32, sw)[:, None], (rows, 1))
            call = C.backward_call(lay, rows, head, False)
            parts = call(xp, _targets(loss, yb, lay, rows), c, *_weights(lay, params))
            value = jnp.sum(parts[0][:, 0, 0]).astype(xb.dtype)
            grads = _grads(lay, params, parts[1:])
        if l2 or l1:
            value = value + penalty_value(model, params, l2, l1)
            grads = penalty_grads(model, params, grads, l2, l1)
        return value, grads

    return f
