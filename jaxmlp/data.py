"""Built-in datasets, standardisation, train/test split and batching.

The 2-D classification sets follow the TensorFlow Playground (circle, xor, gaussians, spiral) plus
scikit-learn's two moons; ``plane`` and ``sine`` are regression sets. Every generator is
``name(key, n, *, noise) -> (x, y)`` with ``x`` float32 ``(n, features)`` and either int32 labels
``(n,)`` in ``0..k-1`` (classification, classes alternate row by row so they stay balanced) or
float32 targets ``(n, 1)`` (regression). ``noise`` is the standard deviation of Gaussian jitter
added to the inputs of a classification set (whose points span about ``[-1, 1]``) or to the
targets of a regression set; with ``noise=0`` the sets are exact geometric shapes, and a larger
noise only perturbs the same clean points drawn from the same key.

Generators, the split and ``batches`` run eagerly (not under ``jit``): they consume their key in
one small draw that seeds numpy, then work on the host. ``Standardizer`` and ``pad_to_batches``
are pure JAX and work under ``jit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Dataset = tuple[jax.Array, jax.Array]


def _check_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim == 0:
            return key
    elif isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(f"key: expected a single jax.random.key, got {key!r:.80}")


def _check_int(value: Any, argname: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{argname}: must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_noise(noise: Any) -> float:
    real = isinstance(noise, (int, float, np.integer, np.floating)) and not isinstance(noise, bool)
    if not (real and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: must be a finite number >= 0, got {noise!r}")
    return float(noise)


def _start(key: Any, n: Any, noise: Any) -> tuple[np.random.Generator, int, float]:
    n, noise = _check_int(n, "n", 1), _check_noise(noise)
    return _host_rng(key), n, noise


def _host_rng(key: Any) -> np.random.Generator:
    """numpy's generator seeded by 128 bits drawn from ``key`` (a draw that consumes it).

    Data are drawn on the host: jitted generators would compile a random-bit program for every
    (dataset, n), which costs far more than drawing a few thousand points with numpy.
    """
    return np.random.default_rng(np.asarray(jax.random.bits(_check_key(key), (4,), jnp.uint32)))


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
_SKLEARN_LOADERS = {
    name: f"load_{name}" for name in ("digits", "diabetes", "breast_cancer", "iris")
}
SKLEARN_DATASETS: tuple[str, ...] = tuple(_SKLEARN_LOADERS)
# "classification": int labels (n,); "regression": float targets (n, 1).
TASKS: dict[str, str] = {
    name: "regression" if name in ("plane", "sine", "diabetes") else "classification"
    for name in (*DATASETS, *SKLEARN_DATASETS)
}


def load(name: str, key: jax.Array, n: int = 200, *, noise: float = 0.0) -> Dataset:
    """Generates the built-in dataset ``name`` (a key of :data:`DATASETS`); see its generator."""
    if not isinstance(name, str) or name not in DATASETS:
        hint = " (use load_sklearn for that one)" if name in SKLEARN_DATASETS else ""
        raise ValueError(f"name: unknown dataset {name!r}{hint}; valid names are {list(DATASETS)}")
    return DATASETS[name](key, n, noise=noise)


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads one of scikit-learn's bundled (offline) datasets as numpy arrays.

    Args:
        name: ``"digits"`` (1797 x 64, 10 classes), ``"diabetes"`` (442 x 10, regression),
            ``"breast_cancer"`` (569 x 30, 2 classes) or ``"iris"`` (150 x 4, 3 classes).

    Returns:
        x: ``(n, features)`` float32; y: ``(n,)`` int32 labels, or ``(n, 1)`` float32 for diabetes.

    Raises:
        ImportError: scikit-learn is not installed (``pip install 'jaxmlp[sklearn]'``).
    """
    if not isinstance(name, str) or name not in _SKLEARN_LOADERS:
        raise ValueError(
            f"name: unknown dataset {name!r}; valid names are {list(SKLEARN_DATASETS)}"
        )
    try:
        import sklearn.datasets
    except ImportError as err:
        raise ImportError(
            "load_sklearn needs scikit-learn; install it with: pip install 'jaxmlp[sklearn]'"
        ) from err
    x, y = getattr(sklearn.datasets, _SKLEARN_LOADERS[name])(return_X_y=True)
    x = np.asarray(x, np.float32)
    if TASKS[name] == "regression":
        return x, np.asarray(y, np.float32).reshape(-1, 1)
    return x, np.asarray(y, np.int32)


@jax.jit
def _moments(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    # A feature is constant exactly when max == min; its float mean may be off by rounding,
    # so take the value itself as the mean (it then maps to exactly 0) and a scale of 1.
    constant = jnp.max(x, axis=0, keepdims=True) == jnp.min(x, axis=0, keepdims=True)
    mean = jnp.where(constant, x[:1], jnp.mean(x, axis=0, keepdims=True))
    std = jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=0, keepdims=True))
    return mean, jnp.where(constant, jnp.ones_like(std), std), jnp.all(jnp.isfinite(x))


class Standardizer(NamedTuple):
    """Per-feature standardisation ``(x - mean) / scale``; a pytree, so it passes through ``jit``.

    Attributes:
        mean: ``(1, *features)``, kept with a leading axis so it broadcasts without rank promotion.
        scale: ``(1, *features)``, the standard deviation, or 1 for a constant feature (so it maps
            to exactly 0 instead of NaN).
    """

    mean: jax.Array
    scale: jax.Array

    @classmethod
    def fit(cls, x: ArrayLike) -> Standardizer:
        """Fits the statistics of ``x``: ``(n, *features)``, reduced over the first axis.

        Raises:
            ValueError: ``x`` is empty or (when concrete, i.e. outside ``jit``) has NaN or Inf.
        """
        x = _real_array(x, "x")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        if x.ndim < 1 or x.shape[0] < 1:
            raise ValueError(f"x: need at least one row, got shape {x.shape}")
        mean, scale, finite = _moments(x)
        # Value checks need concrete data; under jit the caller owns them.
        if not isinstance(finite, jax.core.Tracer) and not finite:
            raise ValueError("x: contains NaN or Inf; standardisation needs finite data")
        return cls(mean, scale)

    def transform(self, x: ArrayLike) -> jax.Array:
        """``(n, *features) -> (n, *features)``: ``(x - mean) / scale``."""
        return (self._check(x) - self.mean) / self.scale

    def inverse_transform(self, x: ArrayLike) -> jax.Array:
        """``(n, *features) -> (n, *features)``: ``x * scale + mean``."""
        return self._check(x) * self.scale + self.mean

    def _check(self, x: ArrayLike) -> jax.Array:
        x = _real_array(x, "x")
        if x.shape[1:] != self.mean.shape[1:] or x.ndim != self.mean.ndim:
            raise ValueError(
                f"x: expected shape (n, {', '.join(map(str, self.mean.shape[1:]))}) as fitted, "
                f"got {tuple(x.shape)}"
            )
        return x


def _real_array(x: Any, argname: str) -> jax.Array:
    """``x`` as a JAX array of a real (bool, int or float) dtype, else a ``TypeError``."""
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{argname}: expected a numeric array, got {type(x).__name__}") from err
    if not (jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.floating)):
        if x.dtype != jnp.bool_:
            raise TypeError(f"{argname}: expected a real array, got dtype {x.dtype}")
    return x


def _host_array(x: Any, argname: str) -> Any:
    """Arrays pass through (keeping their kind); anything else becomes a numpy array."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise TypeError(f"{argname}: expected an array, got {type(x).__name__}") from err


def _rows(x: Any, y: Any) -> int:
    if np.ndim(x) < 1 or np.ndim(y) < 1:
        raise ValueError(
            f"x, y: need a leading batch axis, got shapes {np.shape(x)}, {np.shape(y)}"
        )
    if np.shape(x)[0] != np.shape(y)[0]:
        raise ValueError(f"y: has {np.shape(y)[0]} rows but x has {np.shape(x)[0]}")
    return np.shape(x)[0]


def train_test_split(
    key: jax.Array, x: Any, y: Any, test_fraction: float = 0.25
) -> tuple[Any, Any, Any, Any]:
    """Shuffles the rows by ``key`` and splits them; eager (not for use under ``jit``).

    Args:
        x: ``(n, ...)``; y: ``(n, ...)``, numpy or JAX arrays (the outputs keep their kind).
        test_fraction: in (0, 1); the test set gets ``round(test_fraction * n)`` rows, clipped so
            that each side keeps at least one row.

    Returns:
        ``(x_train, y_train, x_test, y_test)``.
    """
    x, y = _host_array(x, "x"), _host_array(y, "y")
    n = _rows(x, y)
    if not isinstance(test_fraction, (float, np.floating)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")
    if n < 2:
        raise ValueError(f"x: need at least 2 rows to split, got {n}")
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    perm = _host_rng(key).permutation(n)
    train, test = perm[n_test:], perm[:n_test]
    return x[train], y[train], x[test], y[test]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Minibatches per epoch: ``n // batch_size`` with ``drop_last``, else ``ceil(n / batch_size)``."""
    n = _check_int(n, "n", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    x: Any, y: Any, batch_size: int, *, key: jax.Array | None = None, drop_last: bool = False
) -> Iterator[tuple[Any, Any]]:
    """Yields ``(x_b, y_b)`` minibatches covering every row once (eager, a Python generator).

    Args:
        x: ``(n, ...)``; y: ``(n, ...)``, numpy or JAX arrays (batches keep their kind).
        batch_size: rows per batch; the last batch is smaller unless ``drop_last`` drops it.
        key: shuffles the row order when given; without it rows come in order.

    Yields:
        x_b: ``(b, ...)``; y_b: ``(b, ...)`` with ``b <= batch_size``.
    """
    x, y = _host_array(x, "x"), _host_array(y, "y")
    n = _rows(x, y)
    count = num_batches(n, batch_size, drop_last)
    order = None if key is None else _host_rng(key).permutation(n)
    for i in range(count):
        rows = slice(i * batch_size, min((i + 1) * batch_size, n))
        if order is not None:
            rows = order[rows]
        yield x[rows], y[rows]


def pad_to_batches(
    x: ArrayLike, y: ArrayLike, batch_size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pads ``n`` rows with zeros to whole batches and stacks them, with a mask of real rows.

    A fused training epoch scans over the stacked batches; padding keeps every batch the same
    shape (so nothing recompiles), and the mask, passed as ``sample_weight``, gives the zero rows
    (x zeros, label 0 or target 0) weight 0 so they change neither the loss nor the gradient.

    Args:
        x: ``(n, ...)``; y: ``(n, ...)``.

    Returns:
        xb: ``(num_batches, batch_size, ...)``; yb: ``(num_batches, batch_size, ...)``;
        mask: ``(num_batches, batch_size)``, 1 on real rows and 0 on padding (x's float dtype,
        float32 for integer x), summing to ``n``.
    """
    x, y = _real_array(x, "x"), _real_array(y, "y")
    n = _rows(x, y)
    count = num_batches(n, batch_size)
    padding = count * batch_size - n

    def stack(v: jax.Array) -> jax.Array:
        v = jnp.pad(v, [(0, padding)] + [(0, 0)] * (v.ndim - 1))
        return v.reshape(count, batch_size, *v.shape[1:])

    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    mask = (jnp.arange(count * batch_size) < n).astype(dtype).reshape(count, batch_size)
    return stack(x), stack(y), mask
