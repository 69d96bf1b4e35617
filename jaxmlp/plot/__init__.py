"""Pictures of a network and its training, as matplotlib figures (optional extra ``plot``).

Every function returns a ``matplotlib.figure.Figure`` on its own Agg canvas, built without
``pyplot``: no backend is selected and no global figure state changes, so the functions are safe
on headless machines and inside a user's interactive session alike. Write a figure with
:func:`save_figure` (or ``fig.savefig``). The input-plane views evaluate the model on a grid of
pixel centres in float32 batches, as the TensorFlow Playground does, and share its colours:
blue for positive values and class 1, orange for negative values and class 0.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

try:
    from matplotlib.colors import Normalize, to_rgb
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
except ImportError as err:
    raise ImportError("jaxmlp.plot needs matplotlib: pip install 'jaxmlp[plot]'") from err

from jaxmlp._core.mlp import MLP, Params, check_params
from jaxmlp.plot._common import (
    _NEG,
    _POS,
    _diverging,
    _grid,
    _in_batches,
    _new_figure,
    _plane_input,
    _positive_int,
)
from jaxmlp.plot._network import (
    MAX_EDGES,
    MAX_NEURONS,
    MAX_UNITS,
    ZERO_FLOOR,
    plot_gradcheck,
    plot_network,
    plot_neurons,
)

__all__ = [
    "MAX_EDGES",
    "MAX_NEURONS",
    "MAX_UNITS",
    "ZERO_FLOOR",
    "plot_decision_boundary",
    "plot_gradcheck",
    "plot_history",
    "plot_network",
    "plot_neurons",
    "save_figure",
]

_CLASS_COLOURS = ("#f28e2b", "#1f6fb4", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2")
_METRIC_NAMES = {"accuracy": "accuracy", "r2": "$R^2$"}


def _targets(y: Any, n: int, classes: int | None, argname: str) -> np.ndarray:
    """``(n,)`` class indices below ``classes`` (one-hot rows become their argmax), or values."""
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(f"{argname}: expected {n} rows, one per point, got shape {y.shape}")
    if classes is not None and y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    if y.size != n:
        raise ValueError(f"{argname}: expected one target per point, got shape {y.shape}")
    y = y.reshape(n).astype(np.float64)
    if classes is None:
        return y
    if np.any(y != np.round(y)) or np.any(y < 0) or np.any(y >= classes):
        raise ValueError(f"{argname}: class labels must be integers in 0..{classes - 1}")
    return y.astype(np.int64)


def _class_probs(model: MLP, out: np.ndarray) -> np.ndarray:
    """``(n, k)`` outputs as ``(n, max(k, 2))`` class probabilities; identity outputs are logits."""
    act = model.output_activation
    if out.shape[1] == 1:
        p1 = out[:, 0] if act == "sigmoid" else 0.5 * (1.0 + np.tanh(0.5 * out[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    if act == "softmax":
        return out
    if act == "sigmoid":  # independent sigmoids: normalise them to compare
        return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-30)
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _score(model: MLP, out: np.ndarray, y: np.ndarray, classes: int | None) -> str:
    """Accuracy (``classes`` given) or R^2 of the outputs ``out`` ``(n, k)`` on targets ``y``."""
    out = out.astype(np.float64)
    if classes is not None:
        return f"accuracy {np.mean(_class_probs(model, out).argmax(axis=1) == y):.3f}"
    ss_tot = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum((y - out[:, 0]) ** 2) / ss_tot if ss_tot > 0 else float("nan")
    return f"$R^2$ {r2:.3f}"


def plot_history(history: Mapping[str, Any], *, metric_name: str | None = None) -> Figure:
    """Training and validation loss per epoch, and the validation metric in a second panel.

    Args:
        history: ``fit``'s history: per-epoch float lists under ``"loss"``, ``"val_loss"`` and
            ``"val_metric"`` (each may be absent), optionally ``"metric_name"``. The loss axis
            is logarithmic when every finite value is positive; a dotted line marks the epoch
            with the lowest validation loss. ``"loss"`` is the mean of the epoch's step losses
            (each at the parameters before its update), as the legend says; the validation
            curves evaluate the parameters at each epoch's end.
        metric_name: what ``"val_metric"`` holds (``FitResult.metric``: ``"accuracy"`` or
            ``"r2"``); overrides ``history["metric_name"]``.

    Raises:
        ValueError: when every list is empty or absent, or one is not a flat list of numbers.
    """
    if not isinstance(history, Mapping):
        raise TypeError(
            f"history: expected a dict of per-epoch lists, got {type(history).__name__}"
        )
    curves = {}
    for key in ("loss", "val_loss", "val_metric"):
        if history.get(key) is not None:
            values = np.asarray(history[key], dtype=np.float64)
            if values.ndim != 1:
                raise ValueError(f"history[{key!r}]: expected a flat list of per-epoch floats")
            if values.size:
                curves[key] = values
    if not curves:
        raise ValueError("history: empty; expected per-epoch values under 'loss' or 'val_loss'")
    name = str(metric_name or history.get("metric_name") or "metric")
    name = _METRIC_NAMES.get(name.lower(), name)
    labels = {
        "loss": "training loss, mean over the epoch's steps",
        "val_loss": "validation loss",
        "val_metric": f"validation {name}",
    }
    panels = [
        p
        for p in ([k for k in ("loss", "val_loss") if k in curves], ["val_metric"])
        if p and p[0] in curves
    ]
    fig = _new_figure((5.2 * len(panels), 3.8))
    for keys, ax in zip(panels, fig.subplots(1, len(panels), squeeze=False)[0], strict=True):
        for key in keys:
            v = curves[key]
            ax.plot(
                np.arange(1, v.size + 1),
                v,
                color=_NEG if key == "val_loss" else _POS,
                marker="o" if v.size <= 30 else None,
                ms=3,
                label=f"{labels[key]} (last {v[-1]:.4g})",
            )
        if "val_loss" in keys and np.any(np.isfinite(curves["val_loss"])):
            best = int(np.nanargmin(curves["val_loss"])) + 1
            ax.axvline(best, color="0.5", ls=":", label=f"lowest validation loss (epoch {best})")
        finite = np.concatenate([curves[k][np.isfinite(curves[k])] for k in keys])
        if keys != ["val_metric"] and finite.size and np.all(finite > 0):
            ax.set_yscale("log")
        quantity = "loss" if keys != ["val_metric"] else labels["val_metric"]
        ax.set(
            xlabel="epoch", ylabel=quantity, title=f"{quantity[0].upper()}{quantity[1:]} per epoch"
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_decision_boundary(
    model: MLP,
    params: Params,
    x: Any,
    y: Any,
    *,
    x_test: Any = None,
    y_test: Any = None,
    task: str = "classification",
    resolution: int = 200,
    axis_labels: tuple[str, str] = ("$x_1$", "$x_2$"),
) -> Figure:
    """The Playground view: the model over the input plane, with the data on top.

    Classification: the probability of class 1 as a heat map with its 0.5 contour (one sigmoid
    output or two outputs; an ``identity`` output is read as logits), or, for three or more
    classes, each pixel in its predicted class's colour, paler where the model is less sure.
    Regression: the prediction as a heat map, the points coloured by target on the same scale.
    The title gives the accuracy (or R^2) on each set.

    Args:
        model: a network with 2 inputs (``sizes[0] == 2``).
        params: its parameters.
        x: training points ``(batch, 2)``, drawn as circles.
        y: their class labels ``(batch,)`` (or one-hot rows), or regression targets
            ``(batch,)``/``(batch, 1)``.
        x_test: optional held-out points (``jaxmlp train`` passes its validation split), drawn
            as triangles and labelled "validation".
        y_test: their labels or targets.
        task: ``"classification"`` or ``"regression"`` (one output).
        resolution: grid pixels per side.
        axis_labels: the two axes' labels (``jaxmlp train`` says "standardised" when it draws
            the plane in standardised units).

    Raises:
        ValueError: when the inputs are not 2-D features, the targets do not match them or
            the model, or the task or resolution is invalid.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task: expected 'classification' or 'regression', got {task!r}")
    res = _positive_int(resolution, "resolution", 2)
    if (
        not isinstance(axis_labels, (tuple, list))
        or len(axis_labels) != 2
        or not all(isinstance(t, str) for t in axis_labels)
    ):
        raise ValueError(f"axis_labels: expected two strings, got {axis_labels!r}")
    check_params(model, params)
    if task == "regression" and model.sizes[-1] != 1:
        raise ValueError(f"model: the regression view needs one output, got sizes {model.sizes}")
    if (x_test is None) != (y_test is None):
        raise ValueError("x_test, y_test: give both or neither")
    classes = max(model.sizes[-1], 2) if task == "classification" else None
    sets = []
    for name, xs, ys, suffix, marker, edge in (
        ("train", x, y, "", "o", "white"),
        ("validation", x_test, y_test, "_test", "^", "black"),
    ):
        if xs is not None:
            xs = _plane_input(model, xs, "x" + suffix)
            sets.append((name, xs, _targets(ys, len(xs), classes, "y" + suffix), marker, edge))
    extent, (cx, cy), grid = _grid(np.vstack([s[1] for s in sets]), res)
    # the points ride along with the grid so that one compiled call serves both
    out = _in_batches(model.apply, params, np.vstack([grid, *(s[1] for s in sets)]))
    at_points = np.split(out[len(grid) :], np.cumsum([len(s[1]) for s in sets])[:-1])
    out = out[: len(grid)]
    fig = _new_figure((6.6, 5.6))
    ax = fig.add_subplot()
    show = functools.partial(ax.imshow, origin="lower", extent=extent, aspect="auto")
    handles = [
        Line2D([], [], ls="", marker=m, mfc="0.7", mec="0.2", label=n) for n, _, _, m, _ in sets
    ]
    if classes is None:
        surface = out[:, 0].reshape(res, res)
        norm = Normalize(
            *np.nanpercentile(np.concatenate([out[:, 0], *(s[2] for s in sets)]), [0, 100])
        )
        fig.colorbar(
            show(surface, cmap="viridis", norm=norm),
            ax=ax,
            label="prediction (points: target)",
        )
        cmap, point_colours = "viridis", lambda ys: ys
        title = "Prediction surface"
    else:
        probs = _class_probs(model, out)
        palette = np.array(
            [_CLASS_COLOURS[c % len(_CLASS_COLOURS)] for c in range(classes)], dtype=object
        )
        if classes == 2:
            p1 = probs[:, 1].reshape(res, res)
            im = show(p1, cmap=_diverging(pale=0.45), vmin=0, vmax=1)
            if p1.min() < 0.5 < p1.max():
                ax.contour(cx, cy, p1, levels=[0.5], colors="k", linewidths=1.0)
            fig.colorbar(im, ax=ax, label="P(class 1)")
        else:
            rgb = np.array([to_rgb(c) for c in palette])[probs.argmax(axis=1)]
            # a guess (probability 1/k) stays white; certainty deepens towards the class colour
            sure = np.clip((probs.max(axis=1) - 1 / classes) / (1 - 1 / classes), 0, 1)[:, None]
            show((1 - 0.55 * sure * (1 - rgb)).reshape(res, res, 3))
        handles += [Patch(color=palette[c], label=f"class {c}") for c in range(classes)]
        cmap, norm, point_colours = None, None, lambda ys: list(palette[ys])
        title = "Decision boundary"
    for _, xs, ys, marker, edge in sets:
        ax.scatter(
            xs[:, 0],
            xs[:, 1],
            marker=marker,
            s=28,
            c=point_colours(ys),
            cmap=cmap,
            norm=norm,
            edgecolors=edge,
            linewidths=0.7,
        )
    scores = ", ".join(
        f"{s[0]} {_score(model, o, s[2], classes)}" for s, o in zip(sets, at_points, strict=True)
    )
    ax.set(
        title=f"{title}: {scores}",
        xlabel=axis_labels[0],
        ylabel=axis_labels[1],
        xlim=extent[:2],
        ylim=extent[2:],
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7), fontsize=8)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: float = 120) -> Path:
    """Writes ``fig`` as a PNG (whatever the suffix), creating missing parent folders.

    Args:
        fig: a figure from this module (or any matplotlib figure).
        path: the file to write.
        dpi: pixels per inch.

    Returns:
        The path written.
    """
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise ValueError(f"dpi: expected a positive number, got {dpi!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path
