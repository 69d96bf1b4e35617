"""The built-in synthetic datasets: Playground-style 2-D classification and two regression toys.

The 2-D classification sets follow the TensorFlow Playground (circle, xor, gaussians, spiral) plus
scikit-learn's two moons; ``plane`` and ``sine`` are regression sets. Every generator is
``name(key, n, *, noise) -> (x, y)`` with ``x`` float32 ``(n, features)`` and either int32 labels
``(n,)`` in ``0..k-1`` (classification, classes alternate row by row so they stay balanced) or
float32 targets ``(n, 1)`` (regression). ``noise`` is the standard deviation of Gaussian jitter
added to the inputs of a classification set (whose points span about ``[-1, 1]``) or to the
targets of a regression set; with ``noise=0`` the sets are exact geometric shapes, and a larger
noise only perturbs the same clean points drawn from the same key.

Generators run eagerly (not under ``jit``): they consume their key in one small draw that seeds
numpy, then work on the host. The key, count and noise checks and the host generator live here
too, since :mod:`jaxmlp.data` (which re-exports everything below) reuses them for splitting and
batching.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp._checks import check_int, check_key, check_nonnegative

Dataset = tuple[jax.Array, jax.Array]


def _start(key: Any, n: Any, noise: Any) -> tuple[np.random.Generator, int, float]:
    n, noise = check_int(n, "n", 1), check_nonnegative(noise, "noise")
    return _host_rng(key), n, noise


def _host_rng(key: Any) -> np.random.Generator:
    """numpy's generator seeded by 128 bits drawn from ``key`` (a draw that consumes it).

    Data are drawn on the host: jitted generators would compile a random-bit program for every
    (dataset, n), which costs far more than drawing a few thousand points with numpy.
    """
    return np.random.default_rng(np.asarray(jax.random.bits(check_key(key), (4,), jnp.uint32)))


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % 2


def _sign(y: np.ndarray) -> np.ndarray:
    """-1 for class 0, +1 for class 1, shaped ``(n, 1)`` to scale 2-D points."""
    return (2.0 * y - 1.0)[:, None]


def _classes(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, noise: float) -> Dataset:
    x = x + noise * rng.standard_normal(x.shape)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def _targets(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, noise: float) -> Dataset:
    y = y + noise * rng.standard_normal(y.shape)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def circle(key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """A disc (class 0, radius < 0.5) inside a ring (class 1, radius in [0.7, 1]).
    Returns ``x``: ``(n, 2)`` float32 and ``y``: ``(n,)`` int32 in {0, 1}.
    """
    rng, n, noise = _start(key, n, noise)
    y = _labels(n)
    u = rng.random(n)
    r = np.where(y == 0, 0.5 * u, 0.7 + 0.3 * u)
    angle = rng.uniform(0.0, 2 * math.pi, n)
    return _classes(rng, r[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1), y, noise)


def xor(key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """Points in the four quadrants; class 1 where the coordinates' signs differ (``x0 * x1 < 0``).

    Coordinates keep a margin of 0.05 from the axes so every clean point has a definite label.
    Returns ``x``: ``(n, 2)`` float32 and ``y``: ``(n,)`` int32 in {0, 1}.
    """
    rng, n, noise = _start(key, n, noise)
    y = _labels(n)
    magnitude = rng.uniform(0.05, 1.0, (n, 2))
    s0 = rng.choice([-1.0, 1.0], n)
    # The second sign equals the first for class 0 and is flipped for class 1.
    return _classes(rng, magnitude * np.stack([s0, s0 * (1 - 2 * y)], axis=1), y, noise)


def gaussians(key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """Two round blobs of standard deviation 0.15, class 0 at (-0.5, -0.5), class 1 at (0.5, 0.5).
    Returns ``x``: ``(n, 2)`` float32 and ``y``: ``(n,)`` int32 in {0, 1}.
    """
    rng, n, noise = _start(key, n, noise)
    y = _labels(n)
    return _classes(rng, 0.5 * _sign(y) + 0.15 * rng.standard_normal((n, 2)), y, noise)


def spiral(key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """Two interleaved spirals of 1.75 turns: radius ``r`` in [0, 1] at angle ``3.5 pi r``.

    Class 0 is ``r (sin(3.5 pi r), cos(3.5 pi r))``; class 1 is the same curve turned by pi.
    Returns ``x``: ``(n, 2)`` float32 and ``y``: ``(n,)`` int32 in {0, 1}.
    """
    rng, n, noise = _start(key, n, noise)
    y = _labels(n)
    r = rng.random(n)
    arm = r[:, None] * np.stack([np.sin(3.5 * math.pi * r), np.cos(3.5 * math.pi * r)], axis=1)
    return _classes(rng, -_sign(y) * arm, y, noise)


def moons(key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """Two interleaving half circles of radius 1, centred on the origin.

    Class 0 is the upper arc ``(cos t - 0.5, sin t - 0.25)``, ``t`` in [0, pi]; class 1 is its
    mirror image through the origin (scikit-learn's ``make_moons`` shifted by (-0.5, -0.25)).
    Returns ``x``: ``(n, 2)`` float32 and ``y``: ``(n,)`` int32 in {0, 1}.
    """
    rng, n, noise = _start(key, n, noise)
    y = _labels(n)
    t = rng.uniform(0.0, math.pi, n)
    arc = np.stack([np.cos(t) - 0.5, np.sin(t) - 0.25], axis=1)
    return _classes(rng, -_sign(y) * arc, y, noise)


def plane(key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """Regression on a plane: ``y = (x0 + x1) / 2 + noise * N(0, 1)``, ``x`` uniform in [-1, 1]^2.
    Returns ``x``: ``(n, 2)`` float32 and ``y``: ``(n, 1)`` float32.
    """
    rng, n, noise = _start(key, n, noise)
    x = rng.uniform(-1.0, 1.0, (n, 2))
    return _targets(rng, x, 0.5 * x.sum(axis=1, keepdims=True), noise)


def sine(key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """One-dimensional regression: ``y = sin(x) + noise * N(0, 1)``, ``x`` uniform in [-pi, pi].
    Returns ``x``: ``(n, 1)`` float32 and ``y``: ``(n, 1)`` float32.
    """
    rng, n, noise = _start(key, n, noise)
    x = rng.uniform(-math.pi, math.pi, (n, 1))
    return _targets(rng, x, np.sin(x), noise)


DATASETS: dict[str, Callable[..., Dataset]] = {
    f.__name__: f for f in (circle, xor, gaussians, spiral, moons, plane, sine)
}
