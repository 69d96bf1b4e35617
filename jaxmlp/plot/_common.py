"""Figure helpers shared by :mod:`jaxmlp.plot`'s views: a pyplot-free figure, the Playground
colours, argument checks and the evaluation of a model over a grid of the input plane.

Import :mod:`jaxmlp.plot`, which checks first that matplotlib is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, to_rgb
from matplotlib.figure import Figure

from jaxmlp._core.mlp import MLP, Params

_GRID_BATCH = 16384  # grid rows per model call
_NEG, _POS = "#f28e2b", "#1f6fb4"


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global backend)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _diverging(pale: float = 0.0) -> LinearSegmentedColormap:
    """Orange (negative) through white to blue (positive); ``pale`` mixes the ends with white."""
    ends = [pale + (1.0 - pale) * np.array(to_rgb(c)) for c in (_NEG, _POS)]
    colours = np.array([ends[0], to_rgb("#f7f7f7"), ends[1]])
    return LinearSegmentedColormap.from_list("jaxmlp_playground", colours)


def _positive_int(value: Any, argname: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{argname}: expected an int >= {minimum}, got {value!r}")
    return value


def _plane_input(model: MLP, x: Any, argname: str) -> np.ndarray:
    """``x`` as finite float64 ``(batch, 2)`` for a model with two inputs."""
    if model.sizes[0] != 2:
        raise ValueError(f"model: the input-plane views need 2 inputs, got sizes {model.sizes}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise ValueError(f"{argname}: expected 2-D features of shape (batch, 2), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{argname}: contains NaN or infinity")
    return x


def _grid(points: np.ndarray, resolution: int):
    """Pixel centres over ``points`` plus a 10% margin: extent, (cx, cy), (res*res, 2) float32."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = np.where(hi > lo, 0.1 * (hi - lo), 0.5)
    lo, hi = lo - pad, hi + pad
    cx, cy = lo[:, None] + (hi - lo)[:, None] * (np.arange(resolution) + 0.5) / resolution
    gx, gy = np.meshgrid(cx, cy)  # row i is y = cy[i], drawn with origin="lower"
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    return (lo[0], hi[0], lo[1], hi[1]), (cx, cy), grid


def _in_batches(
    fn: Callable[[Params, jax.Array], jax.Array], params: Params, rows: np.ndarray
) -> np.ndarray:
    """``fn(params, batch)`` over ``rows`` in equal float32 batches (the last one zero-padded),
    so that a single compilation serves every batch."""
    size = min(_GRID_BATCH, len(rows))
    padded = np.zeros((-(-len(rows) // size) * size, rows.shape[1]), np.float32)
    padded[: len(rows)] = rows
    fn = jax.jit(fn)
    parts = [
        np.asarray(fn(params, padded[i : i + size]), np.float32)
        for i in range(0, len(padded), size)
    ]
    return np.concatenate(parts)[: len(rows)]
