"""The network's own pictures for :mod:`jaxmlp.plot`: its graph of weights, its first-layer
units over the input plane and the per-layer agreement of its manual gradient.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch

from jaxmlp._core.backprop import forward_trace
from jaxmlp._core.gradcheck import FD_ATOL, FD_RTOL, GradCheckReport
from jaxmlp._core.layers import ActivationLayer, Features, FourierFeatures
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

MAX_NEURONS = 32
MAX_UNITS = 64
MAX_EDGES = 2000
ZERO_FLOOR = 1e-17  # an exact agreement (error 0) is drawn here so that the log axis shows it


def plot_neurons(
    model: MLP, params: Params, x: Any, *, resolution: int = 60, max_neurons: int = MAX_NEURONS
) -> Figure:
    """A grid of each first-layer unit's output ``a[1][:, j]`` over the input plane (2 inputs).

    Each tile is scaled by its own ``max |a|`` (blue positive, orange negative); the dashed
    line is the unit's hyperplane ``z = x @ w[:, j] + b[j] = 0``. Beyond the plain stack,
    ``a[1]`` is the first hidden layer's output as the next layer reads it (after its layer
    norm, activation and residual connection; dropout is off, as at inference), and the dashed
    curve is where the activation's input (after the layer norm) is 0; with input features it
    is a curve, not a line.

    Args:
        model: a network with 2 inputs.
        params: its parameters.
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
    # the input of the first hidden layer's activation: z[1] itself, or its layer norm
    pre = next(i for i, layer in enumerate(model.layers) if isinstance(layer, ActivationLayer))

    def first_layer(params: Params, g: jax.Array) -> jax.Array:
        trace = forward_trace(model, params, g)
        z = trace.values[pre][:, :shown]
        return jnp.concatenate([z, trace.a[1][:, :shown]], axis=1)

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
    zero = "z = 0" if model.norm is None else "the activation's input (after the norm) = 0"
    fig.suptitle(
        f"Layer 1 units{more}: output a over the input plane ({model.activations[0]}); "
        f"dashed: {zero}"
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


def _input_labels(model: MLP) -> tuple[list[str] | None, str]:
    """The first column's per-node labels (``None``: none) and its caption."""
    fl, n = model.feature_layer, model.sizes[0]
    if fl is None:
        return None, f"input\n{n}"
    if isinstance(fl, Features):
        return list(fl.names), f"input features\n{len(fl.names)} from {n} inputs"
    if isinstance(fl, FourierFeatures):
        return None, f"input features\nfourier {2 * fl.n}\nfrom {n} inputs"
    return None, f"input features\n{fl.describe()}\nfrom {n} inputs"


def plot_network(
    model: MLP, params: Params, *, max_units: int = MAX_UNITS, max_edges: int = MAX_EDGES
) -> Figure:
    """The network as a graph: a column of nodes per layer, a line per weight ``w[i, j]``.

    Line width grows with ``|w|`` and its colour gives the sign (blue positive, orange
    negative); a node's colour gives its bias on the same scheme (input nodes are grey).

    Beyond the plain stack: the first column holds what the first affine layer reads, the input
    features when the model has them (each node named, ``x1``, ``x1^2``, ..., for the
    Playground's; "fourier 2n" under the column for Fourier features); a layer with a residual
    connection gets an arc from the previous column and "+ skip" under it; "layernorm" and
    "dropout p" are written under the layers that have them. Only the affine layers' weights
    are drawn (a layer norm's scale and offset are not).

    Args:
        model: a small network.
        params: its parameters.
        max_units: the most units any layer, the input and its features included, may have.
        max_edges: the most weights the network may have.

    Raises:
        ValueError: when a layer has more than ``max_units`` units or the network more than
            ``max_edges`` weights (the graph would be unreadable).
    """
    widths = model.widths()  # the affine layers' input widths, then the output width
    for l, size in enumerate(widths):
        if size > max_units:
            what = (
                "the input features" if l == 0 and model.feature_layer is not None else f"layer {l}"
            )
            raise ValueError(
                f"model: plot_network draws at most max_units={max_units} units per layer; {what} of sizes {model.sizes} has {size}"
            )
    n_edges = sum(i * o for i, o in model.layer_shapes())
    if n_edges > max_edges:
        raise ValueError(
            f"model: plot_network draws at most max_edges={max_edges} weights; sizes {model.sizes} has {n_edges}"
        )
    check_params(model, params)
    dense = [params[i] for i in model.affine_slots()]
    ws = [np.asarray(p.w, np.float32) for p in dense]
    bs = [np.asarray(p.b, np.float32) for p in dense]
    wmax = max(float(np.nanmax(np.abs(w), initial=0.0)) for w in ws) or 1.0
    bmax = max(float(np.nanmax(np.abs(b), initial=0.0)) for b in bs) or 1.0
    ys = [(n - 1) / 2.0 - np.arange(n) for n in widths]  # centred columns, unit 1 on top
    tallest = max(widths)
    labels, input_caption = _input_labels(model)
    fig = _new_figure((1.8 * len(widths) + 1.5 + (0.6 if labels else 0.0), min(10.0, 0.28 * tallest + 2.6)))  # fmt: skip
    ax = fig.add_subplot()
    segments, line_widths, colours = [], [], []
    for l, w in enumerate(ws):
        yi, yj = np.broadcast_arrays(ys[l][:, None], ys[l + 1][None, :])  # w[i, j]: unit i -> j
        segments.append(
            np.stack([np.full(w.size, l), yi.ravel(), np.full(w.size, l + 1), yj.ravel()], 1)
        )
        mag = np.nan_to_num(np.abs(w.ravel()) / wmax)
        line_widths.append(0.2 + 3.0 * mag)
        rgba = np.where((w.ravel() >= 0)[:, None], to_rgba(_POS), to_rgba(_NEG))
        rgba[:, 3] = 0.15 + 0.85 * mag  # small weights stay faint so that the large ones read
        colours.append(rgba)
    ax.add_collection(
        LineCollection(
            list(np.concatenate(segments).reshape(-1, 2, 2)),
            linewidths=np.concatenate(line_widths),
            colors=np.concatenate(colours),
            zorder=1,
        )
    )
    node = min(220.0, (0.55 * 72 * fig.get_figheight() / tallest) ** 2)  # points^2
    ax.scatter(np.zeros(widths[0]), ys[0], s=node, c="0.85", edgecolors="k", zorder=2)
    for name, y in zip(labels or (), ys[0], strict=False):
        ax.text(-0.12, y, name, ha="right", va="center", fontsize=7)
    layers = [
        ax.scatter(
            np.full(b.size, l + 1),
            ys[l + 1],
            s=node,
            c=b,
            cmap=_diverging(),
            norm=Normalize(-bmax, bmax),
            edgecolors="k",
            zorder=2,
        )
        for l, b in enumerate(bs)
    ]
    fig.colorbar(layers[-1], ax=ax, label="bias b", shrink=0.6)
    captions = [input_caption]
    top = tallest / 2.0 + 0.2
    for l in range(1, model.num_layers + 1):
        hidden = l < model.num_layers
        lines = [f"hidden {l}" if hidden else "output", f"{widths[l]} {model.activations[l - 1]}"]
        if hidden:
            if model.norm is not None:
                lines.insert(
                    1, model.norm if isinstance(model.norm, str) else model.norm.describe()
                )
            if model.dropout:
                lines.append(f"dropout {model.dropout:g}")
            if model.has_skip(l - 1):
                lines.append("+ skip")
                # the residual connection: a[l] = a[l-1] + f(z[l]), an arc over the top
                ax.add_patch(
                    FancyArrowPatch(
                        (l - 1, top), (l, top), connectionstyle="arc3,rad=-0.45",
                        arrowstyle="-|>", mutation_scale=10, color="0.3", lw=1.2, zorder=3,
                    )
                )  # fmt: skip
                ax.text(l - 0.5, top + 0.45, "skip", ha="center", va="bottom", fontsize=7)
        captions.append("\n".join(lines))
    for l, caption in enumerate(captions):
        ax.text(l, -tallest / 2.0 - 0.4, caption, ha="center", va="top", fontsize=8)
    left = -0.5 - (0.55 if labels else 0.0)
    skips = any(model.has_skip(l) for l in range(model.num_layers - 1))
    bottom = -tallest / 2.0 - 0.4 - 0.6 * max(c.count("\n") + 1 for c in captions)
    ax.set(xlim=(left, model.num_layers + 0.5), ylim=(bottom, top + (1.0 if skips else 0.0)))
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
