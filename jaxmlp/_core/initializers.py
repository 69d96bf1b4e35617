"""Weight initialisers: ``(key, shape, dtype) -> array`` for a ``(fan_in, fan_out)`` weight.

``"auto"`` picks He (Kaiming) normal for the ReLU family and Glorot (Xavier) uniform otherwise,
the usual pairing that keeps the forward signal's variance roughly constant through the layers.
Any callable of that signature works too, e.g. ``jax.nn.initializers.orthogonal()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, int], jnp.dtype], jax.Array]


def _normal(key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    """``jax.random.normal``, kept whole under ``jit``: ``MLP.init`` draws every layer in one
    compiled program, and without the barrier XLA folds the scale into the normal draw's own
    constant, which moves some weights by one ulp from what the same draw gives eagerly."""
    return jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype))


def he_normal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """N(0, 2 / fan_in): keeps the variance of ReLU activations constant."""
    return _normal(key, shape, dtype) * math.sqrt(2.0 / shape[0])


def lecun_normal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """N(0, 1 / fan_in)."""
    return _normal(key, shape, dtype) * math.sqrt(1.0 / shape[0])


def glorot_uniform(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (shape[0] + shape[1]))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def glorot_normal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """N(0, 2 / (fan_in + fan_out))."""
    return _normal(key, shape, dtype) * math.sqrt(2.0 / (shape[0] + shape[1]))


SIREN_OMEGA0 = 30.0


def siren_first(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32):
    """SIREN's first layer, with the frequency factor folded in: ``sin(omega0 (x w' + b'))``
    is ``sin(x w + b)`` for ``w = omega0 w'``, ``w' ~ U(-1/fan_in, 1/fan_in)``; the bias
    ``b = omega0 b'`` with ``b' ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. Returns ``(w, b)``."""
    kw, kb = jax.random.split(key)
    n = shape[0]
    w = jax.random.uniform(kw, shape, dtype, -1.0 / n, 1.0 / n) * SIREN_OMEGA0
    bound = 1.0 / math.sqrt(n)
    b = jax.random.uniform(kb, (shape[1],), dtype, -bound, bound) * SIREN_OMEGA0
    return w.astype(dtype), b.astype(dtype)


def siren_hidden(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32):
    """SIREN's later layers: ``w ~ U(-sqrt(6/fan_in), sqrt(6/fan_in))`` (the paper's
    ``sqrt(6/fan_in) / omega0`` with ``omega0`` folded in), so every pre-activation stays
    roughly standard normal through the ``sin`` layers; bias ``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))``. Returns ``(w, b)``."""
    kw, kb = jax.random.split(key)
    n = shape[0]
    limit = math.sqrt(6.0 / n)
    w = jax.random.uniform(kw, shape, dtype, -limit, limit)
    bound = 1.0 / math.sqrt(n)
    return w, jax.random.uniform(kb, (shape[1],), dtype, -bound, bound)


INITIALIZERS: dict[str, Initializer] = {
    "he_normal": he_normal,
    "lecun_normal": lecun_normal,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
}

_RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus"})


def get_initializer(
    name: str | Initializer, activation: str, *, first: bool = False
) -> Callable[..., Any]:
    """Returns the initialiser called ``name`` (``"auto"`` chooses by ``activation``), or
    ``name`` itself when it is a callable ``(key, shape, dtype) -> array``. ``"siren"`` (for
    ``sin`` networks) differs for the ``first`` layer and draws biases too.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if callable(name):
        return name
    if name == "siren":
        return siren_first if first else siren_hidden
    if name == "auto":
        return he_normal if activation in _RELU_FAMILY else glorot_uniform
    if name not in INITIALIZERS:
        valid = ["auto", "siren", *INITIALIZERS]
        raise ValueError(f"initializer: unknown initializer {name!r}; valid names are {valid}")
    return INITIALIZERS[name]
