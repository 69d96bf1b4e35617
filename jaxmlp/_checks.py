"""The checks room: argument checks shared by every entry point, one behaviour per mistake.

Every message starts with the argument's name. A value of the wrong *type* (a float where an int
belongs, a string where a key belongs) raises ``TypeError``; a value of the right type outside
its range raises ``ValueError``. Model-aware checks (parameters against a model, targets against a
loss) live beside the maths they guard (``_core.mlp``, ``_core.backprop``) and follow the same
rules. Nothing here imports the rest of jaxmlp, so every room may use it.
"""

from __future__ import annotations

import functools
import math
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def check_int(value: Any, argname: str, minimum: int) -> int:
    """``value`` as an ``int`` (a Python or NumPy integer, never a bool) that is ``>= minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{argname}: expected an int, got bool")
    try:
        value = operator.index(value)
    except TypeError as err:
        raise TypeError(f"{argname}: expected an int, got {type(value).__name__}") from err
    if value < minimum:
        raise ValueError(f"{argname}: must be >= {minimum}, got {value}")
    return int(value)


def check_nonnegative(value: Any, argname: str) -> float:
    """``value`` as a finite ``float >= 0`` (a Python or NumPy real number, never a bool)."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not real:
        raise TypeError(f"{argname}: expected a finite number >= 0, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{argname}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_choice(value: Any, argname: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{argname}: expected one of {list(choices)}, got {value!r}")
    return value


def check_key(key: Any, argname: str = "key") -> jax.Array:
    """A single typed PRNG key; a legacy ``uint32[2]`` key is wrapped."""
    if not isinstance(key, jax.Array):
        raise TypeError(f"{argname}: expected a jax.random.key, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim != 0:
            raise ValueError(f"{argname}: expected a single key, got shape {key.shape}")
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{argname}: expected a jax.random.key, got an array of {key.dtype} {tuple(key.shape)}"
    )


# Rows read at a time by the host's value checks: bounds their temporaries.
HOST_SLICE_BYTES = 64 << 20


def row_slices(n: int, row_bytes: int, limit: int = HOST_SLICE_BYTES) -> list[slice]:
    """``n`` rows of ``row_bytes`` each in slices of at most ``limit`` bytes."""
    step = max(1, limit // max(1, row_bytes))
    return [slice(lo, min(n, lo + step)) for lo in range(0, n, step)]


def on_host(a: Any) -> bool:
    """A NumPy array, or a JAX array held whole by this process on one CPU device: NumPy reads
    either in place, with no compiled program and no device round trip."""
    if isinstance(a, np.ndarray):
        return True
    if not isinstance(a, jax.Array):
        return False
    try:
        return _one_cpu(a.sharding)
    except TypeError:  # a sharding that cannot be hashed: asked afresh
        return _one_cpu.__wrapped__(a.sharding)


@functools.lru_cache(maxsize=256)
def _one_cpu(sharding: Any) -> bool:
    devices = sharding.device_set
    return (
        sharding.is_fully_addressable
        and len(devices) == 1
        and next(iter(devices)).platform == "cpu"
    )


def host_nonfinite(a: Any, dtype: Any = None) -> bool:
    """Whether array ``a`` (:func:`on_host`), cast to ``dtype`` (default: its own) as it will be
    used, holds a NaN or an Inf (a float64 value beyond float32's range becomes Inf): slice by
    slice, so the temporaries stay small. Integer and bool arrays never do."""
    a = np.asarray(a)
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    # jnp's test: NumPy's own does not count bfloat16 as a float
    if dtype.kind in "biu" or not jnp.issubdtype(dtype, jnp.inexact):
        return False
    if dtype == a.dtype and a.nbytes <= HOST_SLICE_BYTES:  # one pass, no cast
        return not np.isfinite(a).all()
    if a.ndim == 0:
        a = a.reshape(1)
    with np.errstate(over="ignore"):
        return any(
            not np.isfinite(np.asarray(a[rows], dtype)).all()
            for rows in row_slices(a.shape[0], a[:1].nbytes, HOST_SLICE_BYTES)
        )


def check_path(value: Any, argname: str) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a ``Path``."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argname}: expected a str or os.PathLike, got {type(value).__name__}")
    return Path(value)


def check_optimizer(
    optimizer: Any, default: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``optimizer`` (``default`` for ``None``) if it is an optax ``GradientTransformation``."""
    if optimizer is None:
        return default
    # optax's own class: a factory (optax.adam) or another library's optimizer fails here,
    # not with an unpacking error inside the first step.
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "optimizer: expected an optax.GradientTransformation such as optax.adam(1e-3), "
            f"got {type(optimizer).__name__}"
        )
    return optimizer
