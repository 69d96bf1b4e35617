"""The Playground's data: jaxmlp's datasets on TF Playground's [-6, 6] plane, its regression
sets, two three-class sets, and a small CSV reader for uploads.

jaxmlp's generators draw points in about [-1, 1]; the Playground scales them by 5, as TF
Playground draws its points in [-6, 6] (so ``sin(x1)`` is not just ``x1``). The noise slider's 0
to 50 is TF Playground's percent; it becomes a Gaussian jitter of ``noise / 100 * 0.5`` in
jaxmlp's units (targets: ``noise / 100``).
"""

from __future__ import annotations

import csv
import io
import math
from typing import NamedTuple

import jax
import numpy as np

from jaxmlp import data as jdata

SCALE = 5.0
DOMAIN = 6.0  # the heatmaps span [-DOMAIN, DOMAIN]^2
N_CLASSIFY, N_REGRESS = 500, 1200
MAX_UPLOAD_BYTES = 1_000_000
MAX_UPLOAD_ROWS = 20_000
MAX_CLASSES = 8


class Points(NamedTuple):
    """``x``: (n, 2) float32; ``y``: (n,) int32 classes, or (n,) float32 regression targets."""

    x: np.ndarray
    y: np.ndarray
    classes: int  # 0 for regression
    names: tuple[str, ...]  # class names (CSV labels), or ()


_JAXMLP = {"circle": "circle", "xor": "xor", "gauss": "gaussians", "spiral": "spiral", "moons": "moons"}  # fmt: skip


def generate(name: str, noise: int, seed: int) -> Points:
    """The built-in dataset ``name`` (see :mod:`jaxmlp.playground._config`)."""
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed % (2**31))
    if name in _JAXMLP:
        x, y = jdata.load(_JAXMLP[name], key, N_CLASSIFY, noise=noise / 100 * 0.5)
        return Points(np.asarray(x) * SCALE, np.asarray(y), 2, ())
    if name == "reg-plane":
        x, y = jdata.plane(key, N_REGRESS, noise=noise / 100)
        return Points(np.asarray(x) * SCALE, np.asarray(y)[:, 0], 0, ())
    if name == "reg-gauss":  # TF Playground's: signed bumps whose nearest centre sets the target
        x = rng.uniform(-SCALE, SCALE, (N_REGRESS, 2))
        centres = np.array([[-4, 2.5], [0, 2.5], [4, 2.5], [-4, -2.5], [0, -2.5], [4, -2.5]])
        signs = np.array([-1, 1, -1, 1, -1, 1])
        d = np.linalg.norm(x[:, None, :] - centres[None], axis=-1)
        y = (signs * np.exp(-(d**2) / 2)).sum(axis=1) + noise / 100 * rng.standard_normal(len(x))
        return Points(x.astype(np.float32), y.astype(np.float32), 0, ())
    if name == "gauss3":
        y = np.arange(N_CLASSIFY) % 3
        angle = 2 * math.pi * y / 3 + math.pi / 2
        centre = 3.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        x = centre + (0.8 + noise / 100 * 2.5) * rng.standard_normal((N_CLASSIFY, 2))
        return Points(x.astype(np.float32), y.astype(np.int32), 3, ())
    if name == "spiral3":
        y = np.arange(N_CLASSIFY) % 3
        r = rng.random(N_CLASSIFY)
        t = 1.5 * math.pi * r + 2 * math.pi * y / 3
        x = SCALE * r[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
        x = x + noise / 100 * 2.5 * rng.standard_normal(x.shape)
        return Points(x.astype(np.float32), y.astype(np.int32), 3, ())
    raise ValueError(f"dataset: unknown dataset {name!r}")


def split(points: Points, perc_train: int, seed: int) -> tuple[Points, Points]:
    """Shuffles and splits, ``perc_train`` percent for training (at least one point each)."""
    order = np.random.default_rng(seed + 1).permutation(len(points.x))
    n_train = min(max(1, round(len(order) * perc_train / 100)), len(order) - 1)
    a, b = order[:n_train], order[n_train:]
    return (
        Points(points.x[a], points.y[a], points.classes, points.names),
        Points(points.x[b], points.y[b], points.classes, points.names),
    )


def _number(cell: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"csv: {where}: expected a number, got {cell[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"csv: {where}: expected a finite number, got {cell[:40]!r}")
    return value


def read_csv(text: str, problem: str) -> Points:
    """An uploaded CSV: a header row, then two numeric feature columns and a label (a class
    name or number for classification, a number for regression). The features are rescaled
    into the Playground's plane, [-5, 5]."""
    if not isinstance(text, str):
        raise TypeError(f"csv: expected the file's text, got {type(text).__name__}")
    if len(text.encode("utf-8", "replace")) > MAX_UPLOAD_BYTES:
        raise ValueError(f"csv: the file is larger than {MAX_UPLOAD_BYTES // 1000} kB")
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if len(rows) < 3:
        raise ValueError("csv: expected a header row and at least two data rows")
    if len(rows) - 1 > MAX_UPLOAD_ROWS:
        raise ValueError(f"csv: at most {MAX_UPLOAD_ROWS} rows, got {len(rows) - 1}")
    for i, r in enumerate(rows):
        if len(r) != 3:
            raise ValueError(f"csv: row {i + 1}: expected 3 columns (x1, x2, label), got {len(r)}")
    body = rows[1:]
    x = np.array(
        [[_number(r[j].strip(), f"row {i + 2}, column {j + 1}") for j in (0, 1)] for i, r in enumerate(body)],
        np.float64,
    )  # fmt: skip
    low, high = x.min(axis=0), x.max(axis=0)
    x = (x - (low + high) / 2) / np.maximum((high - low) / 2, 1e-12) * SCALE
    labels = [r[2].strip() for r in body]
    if problem == "regression":
        y = np.array([_number(c, f"row {i + 2}, column 3") for i, c in enumerate(labels)])
        return Points(x.astype(np.float32), y.astype(np.float32), 0, ())
    names = tuple(sorted(set(labels), key=lambda s: (not _is_number(s), _sort_key(s))))
    if not 2 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"csv: classification needs 2 to {MAX_CLASSES} labels, got {len(names)}")
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[c] for c in labels], np.int32)
    return Points(x.astype(np.float32), y, len(names), names)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _sort_key(s: str) -> tuple[float, str]:
    return (float(s), s) if _is_number(s) else (0.0, s)
