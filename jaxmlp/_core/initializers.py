"""Weight initialisers: ``(key, shape, dtype) -> array`` for a ``(fan_in, fan_out)`` weight.

``"auto"`` picks He (Kaiming) normal for the ReLU family and Glorot (Xavier) uniform otherwise,
the usual pairing that keeps the forward signal's variance roughly constant through the layers.
Any callable of that signature works too, e.g. ``jax.nn.initializers.orthogonal()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, int], jnp.dtype], jax.Array]


def he_normal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """N(0, 2 / fan_in): keeps the variance of ReLU activations constant."""
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / shape[0])


def lecun_normal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """N(0, 1 / fan_in)."""
    return jax.random.normal(key, shape, dtype) * math.sqrt(1.0 / shape[0])


def glorot_uniform(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (shape[0] + shape[1]))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def glorot_normal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """N(0, 2 / (fan_in + fan_out))."""
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (shape[0] + shape[1]))


INITIALIZERS: dict[str, Initializer] = {
    "he_normal": he_normal,
    "lecun_normal": lecun_normal,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
}

_RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus"})


def get_initializer(name: str | Initializer, activation: str) -> Initializer:
    """Returns the initialiser called ``name`` (``"auto"`` chooses by ``activation``), or
    ``name`` itself when it is a callable ``(key, shape, dtype) -> array``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if callable(name):
        return name
    if name == "auto":
        return he_normal if activation in _RELU_FAMILY else glorot_uniform
    if name not in INITIALIZERS:
        valid = ["auto", *INITIALIZERS]
        raise ValueError(f"initializer: unknown initializer {name!r}; valid names are {valid}")
    return INITIALIZERS[name]
