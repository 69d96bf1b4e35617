"""The stack walker: runs a model's layers (:attr:`jaxmlp.MLP.layers`) forward, backward
(reverse mode) and forward again along a tangent (forward mode).

It knows the layer protocol (:mod:`jaxmlp._core.layers`) and nothing about any one layer,
except the residual markers: at ``SkipBegin`` the forward pass keeps the value, at ``SkipEnd``
it adds it back (``a[l] = a[l-1] + f(z[l])``); the backward pass sends ``dL/da[l]`` both
through the block and straight to ``a[l-1]``, where the two add up. The same holds for
tangents in forward mode.

Dropout (and any layer of the user's that draws random numbers) gets a key of its own, folded
from the call's key with the layer's position: the same key gives the same masks in the forward
pass of the manual and of the automatic gradient.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxmlp._core.layers import Affine, SkipBegin, SkipEnd


def _layer_key(key: jax.Array | None, i: int) -> jax.Array | None:
    return None if key is None else jax.random.fold_in(key, i)


def run_forward(
    model: Any, params: Any, x: jax.Array, key: jax.Array | None = None
) -> tuple[tuple[jax.Array, ...], tuple[Any, ...]]:
    """``(values, saved)``: ``values[i]`` enters layer ``i`` (``values[0] = x``,
    ``values[-1]`` is the output) and ``saved[i]`` is what layer ``i`` kept for its
    derivatives."""
    values, saved, skips = [x], [], []
    for i, (layer, slot) in enumerate(zip(model.layers, model.param_slots, strict=True)):
        a = values[-1]
        if isinstance(layer, SkipBegin):
            skips.append(a)
            out, s = a, None
        elif isinstance(layer, SkipEnd):
            out, s = a + skips.pop(), None  # a[l] = a[l-1] + f(z[l])
        else:
            p = None if slot is None else params[slot]
            out, s = layer.forward(p, a, _layer_key(key, i))
        values.append(out)
        saved.append(s)
    return tuple(values), tuple(saved)


def run_backward(
    model: Any,
    params: Any,
    values: tuple[jax.Array, ...],
    saved: tuple[Any, ...],
    d: Any,
    *,
    stop: int,
    need_dx: bool = False,
) -> tuple[tuple[Any, ...], tuple[jax.Array, ...], jax.Array | None]:
    """The chain rule from ``d = dL/dvalues[stop]`` back to the input, through layers
    ``stop - 1, ..., 0``.

    Returns ``(grads, deltas, dx)``: ``grads`` shaped like ``params``, ``deltas`` the
    ``dL/dz`` at every affine layer's output (the lecture's deltas, first layer first), and
    ``dx = dL/dx`` when ``need_dx`` (else ``None``).
    """
    layers, slots = model.layers, model.param_slots
    first = min(s_i for s_i, s in enumerate(slots) if s is not None)
    grads: list[Any] = [None] * model.num_params_entries
    deltas: list[jax.Array] = []
    skips: list[Any] = []
    for i in reversed(range(stop)):
        layer, slot = layers[i], slots[i]
        if isinstance(layer, SkipEnd):
            skips.append(d)  # dL/da[l] reaches a[l-1] directly, and through the block
            continue
        if isinstance(layer, SkipBegin):
            d = d + skips.pop()  # dL/da[l-1]: both paths
            continue
        if isinstance(layer, Affine):
            deltas.append(d)
        need_din = need_dx or i > first
        p = None if slot is None else params[slot]
        g, d = layer.backward(p, values[i], values[i + 1], saved[i], d, need_din)
        if slot is not None:
            grads[slot] = g
        if not need_din:
            break
    return tuple(grads), tuple(reversed(deltas)), d if need_dx else None


def run_tangent(
    model: Any,
    params: Any,
    values: tuple[jax.Array, ...],
    saved: tuple[Any, ...],
    dparams: Any,
    dx: jax.Array | None,
) -> jax.Array:
    """The output's tangent along ``(dparams, dx)`` (forward mode; ``None`` is zero, in
    ``dparams`` for a whole entry or one of its leaves)."""
    d, skips = dx, []
    for i, (layer, slot) in enumerate(zip(model.layers, model.param_slots, strict=True)):
        dp = None if slot is None or dparams is None else dparams[slot]
        if isinstance(layer, SkipBegin):
            skips.append(d)
            continue
        if isinstance(layer, SkipEnd):
            s = skips.pop()
            d = s if d is None else d if s is None else d + s  # da[l] = da[l-1] + d f(z[l])
            continue
        if d is None and dp is None:
            continue  # nothing before this layer moves
        p = None if slot is None else params[slot]
        d = layer.tangent(p, values[i], values[i + 1], saved[i], dp, d)
    return jax.numpy.zeros_like(values[-1]) if d is None else d
