"""Pictures of a network and its training, as matplotlib figures (optional extra ``plot``).

Every function returns a ``matplotlib.figure.Figure`` on its own Agg canvas, built without
``pyplot``: no backend is selected and no global figure state changes, so the functions are safe
on headless machines and inside a user's interactive session alike. Write a figure with
:func:`save_figure` (or ``fig.savefig``). The input-plane views evaluate the model on a grid of
pixel centres in float32 batches, as the TensorFlow Playground does, and share its colours:
blue for positive values and class 1, orange for negative values and class 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.backprop import forward_trace
from jaxmlp.check import FD_ATOL, FD_RTOL, GradCheckReport
from jaxmlp.mlp import MLP, Params, check_params

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LinearSegmentedColormap, Normalize, to_rgb, to_rgba
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
except ImportError as err:
    raise ImportError("jaxmlp.plot needs matplotlib: pip install 'jaxmlp[plot]'") from err

MAX_NEURONS = 32
MAX_UNITS = 64
MAX_EDGES = 2000
ZERO_FLOOR = 1e-17  # an exact agreement (error 0) is drawn here so that the log axis shows it
_GRID_BATCH = 16384  # grid rows per model call
_NEG, _POS = "#f28e2b", "#1f6fb4"
_CLASS_COLOURS = ("#f28e2b", "#1f6fb4", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2")
_METRIC_NAMES = {"accuracy": "accuracy", "r2": "$R^2$"}


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global backend)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _diverging(pale: float = 0.0) -> LinearSegmentedColormap:
    """Orange (negative) through white to blue (positive); ``pale`` mixes the ends with white."""
    ends = [pale + (1.0 - pale) * np.array(to_rgb(c)) for c in (_NEG, _POS)]
    return LinearSegmentedColormap.from_list("jaxmlp_playground", [ends[0], "#f7f7f7", ends[1]])


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
            with the lowest validation loss.
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
        "loss": "training loss",
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
) -> Figure:
    """The Playground view: the model over the input plane, with the data on top.

    Classification: the probability of class 1 as a heat map with its 0.5 contour (one sigmoid
    output or two outputs; an ``identity`` output is read as logits), or, for three or more
    classes, each pixel in its predicted class's colour, paler where the model is less sure.
    Regression: the prediction as a heat map, the points coloured by target on the same scale.
    The title gives the accuracy (or R^2) on each set.

    Args:
        model, params: a network with 2 inputs (``sizes[0] == 2``).
        x: training points ``(batch, 2)``, drawn as circles.
        y: their class labels ``(batch,)`` (or one-hot rows), or regression targets
            ``(batch,)``/``(batch, 1)``.
        x_test, y_test: optional test points, drawn as triangles.
        task: ``"classification"`` or ``"regression"`` (one output).
        resolution: grid pixels per side.

    Raises:
        ValueError: when the inputs are not 2-D features, the targets do not match them or
            the model, or the task or resolution is invalid.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task: expected 'classification' or 'regression', got {task!r}")
    res = _positive_int(resolution, "resolution", 2)
    check_params(model, params)
    if task == "regression" and model.sizes[-1] != 1:
        raise ValueError(f"model: the regression view needs one output, got sizes {model.sizes}")
    if (x_test is None) != (y_test is None):
        raise ValueError("x_test, y_test: give both or neither")
    classes = max(model.sizes[-1], 2) if task == "classification" else None
    sets = []
    for name, xs, ys, suffix, marker, edge in (
        ("train", x, y, "", "o", "white"),
        ("test", x_test, y_test, "_test", "^", "black"),
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
    image = dict(origin="lower", extent=extent, aspect="auto")
    handles = [
        Line2D([], [], ls="", marker=m, mfc="0.7", mec="0.2", label=n) for n, _, _, m, _ in sets
    ]
    if classes is None:
        surface = out[:, 0].reshape(res, res)
        norm = Normalize(
            *np.nanpercentile(np.concatenate([out[:, 0], *(s[2] for s in sets)]), [0, 100])
        )
        fig.colorbar(
            ax.imshow(surface, cmap="viridis", norm=norm, **image),
            ax=ax,
            label="prediction (points: target)",
        )
        colour = lambda ys: dict(c=ys, cmap="viridis", norm=norm)  # noqa: E731
        title = "Prediction surface"
    else:
        probs = _class_probs(model, out)
        palette = np.array(
            [_CLASS_COLOURS[c % len(_CLASS_COLOURS)] for c in range(classes)], dtype=object
        )
        if classes == 2:
            p1 = probs[:, 1].reshape(res, res)
            im = ax.imshow(p1, cmap=_diverging(pale=0.45), vmin=0, vmax=1, **image)
            if p1.min() < 0.5 < p1.max():
                ax.contour(cx, cy, p1, levels=[0.5], colors="k", linewidths=1.0)
            fig.colorbar(im, ax=ax, label="P(class 1)")
        else:
            rgb = np.array([to_rgb(c) for c in palette])[probs.argmax(axis=1)]
            # a guess (probability 1/k) stays white; certainty deepens towards the class colour
            sure = np.clip((probs.max(axis=1) - 1 / classes) / (1 - 1 / classes), 0, 1)[:, None]
            ax.imshow((1 - 0.55 * sure * (1 - rgb)).reshape(res, res, 3), **image)
        handles += [Patch(color=palette[c], label=f"class {c}") for c in range(classes)]
        colour = lambda ys: dict(c=list(palette[ys]))  # noqa: E731
        title = "Decision boundary"
    for _, xs, ys, marker, edge in sets:
        ax.scatter(
            xs[:, 0], xs[:, 1], marker=marker, s=28, edgecolors=edge, linewidths=0.7, **colour(ys)
        )
    scores = ", ".join(
        f"{s[0]} {_score(model, o, s[2], classes)}" for s, o in zip(sets, at_points, strict=True)
    )
    ax.set(
        title=f"{title}: {scores}", xlabel="$x_1$", ylabel="$x_2$", xlim=extent[:2], ylim=extent[2:]
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7), fontsize=8)
    return fig


def plot_neurons(
    model: MLP, params: Params, x: Any, *, resolution: int = 60, max_neurons: int = MAX_NEURONS
) -> Figure:
    """A grid of each first-layer unit's output ``a[1][:, j]`` over the input plane (2 inputs).

    Each tile is scaled by its own ``max |a|`` (blue positive, orange negative); the dashed
    line is the unit's hyperplane ``z = x @ w[:, j] + b[j] = 0``.

    Args:
        model, params: a network with 2 inputs.
        x: ``(batch, 2)`` points; their extent frames the plane.
        resolution: grid pixels per side.
        max_neurons: draw units ``1..max_neurons`` only (the title says how many there are).

    Raises:
        ValueError: when the input is not 2-D features or an argument is out of range.
    """
    res = _positive_int(resolution, "resolution", 2)
    max_neurons = _positive_int(max_neurons, "max_neurons", 1)
    check_params(model, params)
    extent, (cx, cy), grid = _grid(_plane_input(model, x, "x"), res)
    units = model.sizes[1]
    shown = min(units, max_neurons)

    def first_layer(params: Params, g: jax.Array) -> jax.Array:
        trace = forward_trace(model, params, g)
        return jnp.concatenate([trace.z[0][:, :shown], trace.a[1][:, :shown]], axis=1)

    za = _in_batches(first_layer, params, grid)
    cols = min(shown, 8)
    rows = math.ceil(shown / cols)
    fig = _new_figure((1.55 * cols + 1.2, 1.55 * rows + 0.7))
    axes = fig.subplots(rows, cols, squeeze=False)
    cmap = _diverging()
    for j, ax in enumerate(axes.flat):
        ax.set(xticks=[], yticks=[])
        if j >= shown:
            ax.set_axis_off()
            continue
        z, a = za[:, j].reshape(res, res), za[:, shown + j].reshape(res, res)
        scale = max(float(np.nanmax(np.abs(a), initial=0.0)), 1e-30)
        ax.imshow(
            a / scale, cmap=cmap, vmin=-1, vmax=1, origin="lower", extent=extent, aspect="auto"
        )
        if np.nanmin(z) < 0.0 < np.nanmax(z):
            ax.contour(cx, cy, z, levels=[0.0], colors="k", linewidths=0.8, linestyles="--")
        ax.set_title(f"unit {j + 1}", fontsize=8)
    fig.colorbar(
        ScalarMappable(Normalize(-1, 1), cmap), ax=axes, label="a / max|a| (per unit)", shrink=0.8
    )
    more = f" (first {shown} of {units})" if shown < units else ""
    fig.suptitle(
        f"Layer 1 units{more}: output a over the input plane ({model.activations[0]}); dashed: z = 0"
    )
    return fig


def plot_gradcheck(report: GradCheckReport) -> Figure:
    """Per-layer agreement of the manual gradient: relative errors as bars on a log scale.

    For each block (layer, ``w`` or ``b``): the max relative error against ``jax.grad`` (in the
    parameters' dtype) and against central finite differences (float64). An error of exactly 0
    is drawn at ``ZERO_FLOOR`` and marked "0"; a block that failed its check is hatched red.
    Each dashed line is ``atol + rtol``, the most that a block's tolerance
    ``atol * scale + rtol * |ref|`` can allow: bars below it pass.

    Args:
        report: what :func:`jaxmlp.gradcheck` returned.

    Raises:
        TypeError: when ``report`` is not a ``GradCheckReport``; ValueError: when it has no rows.
    """
    if not isinstance(report, GradCheckReport):
        raise TypeError(f"report: expected a GradCheckReport, got {type(report).__name__}")
    if not report.rows:
        raise ValueError("report: has no rows to draw")
    n = len(report.rows)
    fig = _new_figure((max(6.0, 0.8 * n + 2.5), 4.6))
    ax = fig.add_subplot()
    bar_handles, tol_handles = [], []
    refs = (
        ("autodiff", "jax.grad", report.dtype, _POS, -0.2, report.atol + report.rtol),
        ("finite_diff", "finite differences", "float64", _NEG, 0.2, FD_ATOL + FD_RTOL),
    )
    for field, ref, dtype, colour, shift, tol in refs:
        comps = [getattr(r, field) for r in report.rows]
        err = np.array([c.max_rel for c in comps], dtype=np.float64)
        bars = ax.bar(np.arange(n) + shift, np.maximum(err, ZERO_FLOOR), 0.4, color=colour)
        for bar, e, c in zip(bars, err, comps, strict=True):
            if not c.ok:
                bar.set(hatch="//", edgecolor="red", linewidth=1.5)
            if e == 0.0:
                ax.annotate(
                    "0", (bar.get_x() + 0.2, ZERO_FLOOR), ha="center", va="bottom", fontsize=8
                )
        ax.axhline(tol, color=colour, ls="--", lw=1)
        bar_handles.append(Patch(color=colour, label=f"vs {ref} ({dtype})"))
        tol_handles.append(
            Line2D([], [], color=colour, ls="--", label=f"bound vs {ref}: {tol:.2g}")
        )
    if not report.ok:
        bar_handles.append(Patch(facecolor="white", edgecolor="red", hatch="//", label="failed"))
    ax.set_yscale("log")
    ax.set_ylim(bottom=ZERO_FLOOR / 3)
    ax.set_xticks(
        np.arange(n), [f"layer {r.layer}\n{r.name} {r.shape}" for r in report.rows], fontsize=8
    )
    ax.set_ylabel("max relative error\n(max |manual - ref| / gradient scale)")
    ax.set_title(
        f"gradcheck: the manual backward pass {'agrees (OK)' if report.ok else 'DISAGREES'}"
    )
    ax.grid(True, axis="y", alpha=0.3)
    # filled column by column: the bars' legend on the left, the bounds' on the right
    handles = [*bar_handles, *tol_handles]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    return fig


def plot_network(
    model: MLP, params: Params, *, max_units: int = MAX_UNITS, max_edges: int = MAX_EDGES
) -> Figure:
    """The network as a graph: a column of nodes per layer, a line per weight ``w[i, j]``.

    Line width grows with ``|w|`` and its colour gives the sign (blue positive, orange
    negative); a node's colour gives its bias on the same scheme (input nodes are grey).

    Args:
        model, params: a small network.
        max_units: the most units any layer, the input included, may have.
        max_edges: the most weights the network may have.

    Raises:
        ValueError: when a layer has more than ``max_units`` units or the network more than
            ``max_edges`` weights (the graph would be unreadable).
    """
    for l, size in enumerate(model.sizes):
        if size > max_units:
            raise ValueError(
                f"model: plot_network draws at most max_units={max_units} units per layer; layer {l} of sizes {model.sizes} has {size}"
            )
    n_edges = sum(i * o for i, o in model.layer_shapes())
    if n_edges > max_edges:
        raise ValueError(
            f"model: plot_network draws at most max_edges={max_edges} weights; sizes {model.sizes} has {n_edges}"
        )
    check_params(model, params)
    ws = [np.asarray(p.w, np.float32) for p in params]
    bs = [np.asarray(p.b, np.float32) for p in params]
    wmax = max(float(np.nanmax(np.abs(w), initial=0.0)) for w in ws) or 1.0
    bmax = max(float(np.nanmax(np.abs(b), initial=0.0)) for b in bs) or 1.0
    ys = [(n - 1) / 2.0 - np.arange(n) for n in model.sizes]  # centred columns, unit 1 on top
    tallest = max(model.sizes)
    fig = _new_figure((1.8 * len(model.sizes) + 1.5, min(10.0, 0.28 * tallest + 2.2)))
    ax = fig.add_subplot()
    segments, widths, colours = [], [], []
    for l, w in enumerate(ws):
        yi, yj = np.broadcast_arrays(ys[l][:, None], ys[l + 1][None, :])  # w[i, j]: unit i -> j
        segments.append(
            np.stack([np.full(w.size, l), yi.ravel(), np.full(w.size, l + 1), yj.ravel()], 1)
        )
        mag = np.nan_to_num(np.abs(w.ravel()) / wmax)
        widths.append(0.2 + 3.0 * mag)
        rgba = np.where((w.ravel() >= 0)[:, None], to_rgba(_POS), to_rgba(_NEG))
        rgba[:, 3] = 0.15 + 0.85 * mag  # small weights stay faint so that the large ones read
        colours.append(rgba)
    ax.add_collection(
        LineCollection(
            np.concatenate(segments).reshape(-1, 2, 2),
            linewidths=np.concatenate(widths),
            colors=np.concatenate(colours),
            zorder=1,
        )
    )
    node = min(220.0, (0.55 * 72 * fig.get_figheight() / tallest) ** 2)  # points^2
    ax.scatter(np.zeros(model.sizes[0]), ys[0], s=node, c="0.85", edgecolors="k", zorder=2)
    for l, b in enumerate(bs):
        nodes = ax.scatter(
            np.full(b.size, l + 1),
            ys[l + 1],
            s=node,
            c=b,
            cmap=_diverging(),
            norm=Normalize(-bmax, bmax),
            edgecolors="k",
            zorder=2,
        )
    fig.colorbar(nodes, ax=ax, label="bias b", shrink=0.6)
    names = ["input", *(f"hidden {l}" for l in range(1, model.num_layers)), "output"]
    for l, (name, size, act) in enumerate(
        zip(names, model.sizes, ("", *model.activations), strict=True)
    ):
        ax.text(
            l,
            -tallest / 2.0 - 0.4,
            f"{name}\n{size} {act}".strip(),
            ha="center",
            va="top",
            fontsize=8,
        )
    ax.set(xlim=(-0.5, model.num_layers + 0.5), ylim=(-tallest / 2.0 - 1.6, tallest / 2.0 + 0.2))
    ax.set_axis_off()
    ax.legend(
        handles=[
            Line2D([], [], color=c, lw=2, label=t) for c, t in ((_POS, "w > 0"), (_NEG, "w < 0"))
        ],
        loc="upper right",
        fontsize=8,
    )
    ax.set_title(f"MLP {model.sizes}: {n_edges} weights, line width ∝ |w| (max {wmax:.3g})")
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
