"""Built-in datasets, standardisation, train/test split and batching.

The synthetic generators (``circle``, ``xor``, ``gaussians``, ``spiral``, ``moons``, ``plane``,
``sine``) and their registry :data:`DATASETS` live in :mod:`jaxmlp.data._datasets`, which documents
their shapes and noise; they are re-exported here, so ``jaxmlp.data`` stays the one place to get
data from. This module adds the by-name dispatcher ``load``, scikit-learn's bundled sets, and the
utilities that prepare any dataset for training.

Generators, the split and ``batches`` run eagerly (not under ``jit``): they consume their key in
one small draw that seeds numpy, then work on the host. ``Standardizer`` and ``pad_to_batches``
are pure JAX and work under ``jit``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.typing import ArrayLike

from jaxmlp._checks import check_int
from jaxmlp.data._datasets import DATASETS as DATASETS
from jaxmlp.data._datasets import Dataset as Dataset
from jaxmlp.data._datasets import _host_rng
from jaxmlp.data._datasets import circle as circle
from jaxmlp.data._datasets import gaussians as gaussians
from jaxmlp.data._datasets import moons as moons
from jaxmlp.data._datasets import plane as plane
from jaxmlp.data._datasets import sine as sine
from jaxmlp.data._datasets import spiral as spiral
from jaxmlp.data._datasets import xor as xor

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
        if not isinstance(finite, Tracer) and not finite:
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
    n = check_int(n, "n", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
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
