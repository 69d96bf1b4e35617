"""Tests for ``jaxmlp.plot``: each figure renders to a real PNG, and bad inputs are refused."""

from __future__ import annotations

import importlib
import sys

import jax
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from jaxmlp import MLP, Dense, plot
from jaxmlp._core.gradcheck import TOLERANCES, Comparison, GradCheckReport, GradCheckRow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> np.ndarray:
    """A valid, non-trivial PNG: magic bytes, > 1 KB, readable, (h, w, 3|4), not one colour."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1024
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 50
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10
    return image


def render(fig: Figure, path) -> np.ndarray:
    """Writes ``fig`` at a low dpi (fast) and checks the PNG."""
    assert isinstance(fig, Figure)
    return assert_png(plot.save_figure(fig, path, dpi=72))


def zeros(model: MLP) -> tuple[Dense, ...]:
    """Parameters of the right shapes without running (and compiling) ``init``."""
    return tuple(
        Dense(np.zeros(s, np.float32), np.zeros(s[1], np.float32)) for s in model.layer_shapes()
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (40, 2)).astype(np.float32)
    labels = (np.sum(x**2, axis=1) < 0.5).astype(np.int32)
    return x, labels


@pytest.fixture(scope="module")
def binary():
    model = MLP((2, 6, 5, 1), "tanh", "sigmoid")
    params = model.init(jax.random.key(0))
    # non-zero biases so the bias colours and z = 0 lines have something to show
    return model, tuple(p._replace(b=p.b + 0.3) for p in params)


def test_history_two_panels_log_scale(tmp_path):
    history = {
        "loss": [1.0, 0.5, 0.3, 0.2],
        "val_loss": [1.1, 0.6, 0.4, 0.45],
        "val_metric": [0.5, 0.7, 0.8, 0.78],
    }
    fig = plot.plot_history(history, metric_name="accuracy")
    assert isinstance(fig, Figure)
    loss_ax, metric_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and metric_ax.get_yscale() == "linear"
    assert metric_ax.get_ylabel() == "validation accuracy"
    # two curves plus the dotted line at the lowest validation loss (epoch 3)
    assert len(loss_ax.lines) == 3 and tuple(loss_ax.lines[2].get_xdata()) == (3, 3)
    render(fig, tmp_path / "history.png")


@pytest.mark.parametrize(
    "history, panels, yscale",
    [
        ({"loss": [0.9, 0.4, 0.1]}, 1, "log"),
        ({"loss": [1.0, -2.0, -3.0], "val_loss": []}, 1, "linear"),
        ({"loss": [0.5, float("nan")], "val_metric": [0.1, 0.2], "metric_name": "r2"}, 2, "log"),
        ({"val_metric": [0.1, 0.2], "metric_name": "r2"}, 1, "linear"),
    ],
    ids=["loss-only", "negative-loss", "nan-and-r2", "metric-only"],
)
def test_history_missing_keys(history, panels, yscale):
    fig = plot.plot_history(history)
    assert len(fig.axes) == panels
    assert fig.axes[0].get_yscale() == yscale
    if "val_metric" in history:
        assert fig.axes[-1].get_title() == "Validation $R^2$ per epoch"


@pytest.mark.parametrize(
    "history, error",
    [
        ({}, ValueError),
        ({"loss": [], "val_loss": [], "val_metric": []}, ValueError),
        ({"loss": [[1.0, 2.0]]}, ValueError),
        ([1.0, 2.0], TypeError),
    ],
    ids=["empty-dict", "empty-lists", "nested", "not-a-dict"],
)
def test_history_bad_input(history, error):
    with pytest.raises(error):
        plot.plot_history(history)


def test_decision_boundary_binary_matches_model(tmp_path, binary, data):
    model, params = binary
    x, y = data
    fig = plot.plot_decision_boundary(
        model, params, x[:30], y[:30], x_test=x[30:], y_test=y[30:], resolution=24
    )
    ax = fig.axes[0]
    image = ax.images[0]
    p1 = np.asarray(image.get_array())
    assert p1.shape == (24, 24)
    # pixel [0, 0] is the bottom-left cell centre, [-1, 0] the top-left
    assert image.origin == "lower"
    x0, x1, y0, y1 = image.get_extent()
    dx, dy = (x1 - x0) / 24, (y1 - y0) / 24
    corners = np.array([[x0 + dx / 2, y0 + dy / 2], [x0 + dx / 2, y1 - dy / 2]], np.float32)
    expected = np.asarray(model.apply(params, corners))[:, 0]
    np.testing.assert_allclose([p1[0, 0], p1[-1, 0]], expected, rtol=1e-5, atol=1e-6)
    assert len(ax.collections) >= 2  # training and held-out points
    assert "train accuracy" in ax.get_title() and "validation accuracy" in ax.get_title()
    render(fig, tmp_path / "boundary.png")


@pytest.mark.parametrize(
    "sizes, output, task, classes",
    [
        ((2, 5, 2), "identity", "classification", 2),
        ((2, 5, 3), "softmax", "classification", 3),
        ((2, 5, 1), "identity", "regression", None),
    ],
    ids=["two-logits", "three-classes", "regression"],
)
def test_decision_boundary_kinds(tmp_path, data, sizes, output, task, classes):
    model = MLP(sizes, "relu", output)
    params = model.init(jax.random.key(1))
    x, labels = data
    y = labels + (np.arange(len(labels)) % 2) if classes == 3 else labels
    if task == "regression":
        y = x[:, :1] - x[:, 1:]
    fig = plot.plot_decision_boundary(model, params, x, y, task=task, resolution=24)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "train"
    assert [t for t in legend if t.startswith("class")] == [
        f"class {c}" for c in range(classes or 0)
    ]
    assert ("$R^2$" in fig.axes[0].get_title()) == (task == "regression")
    render(fig, tmp_path / "kind.png")


@pytest.mark.parametrize(
    "sizes, x, y, kwargs, match",
    [
        ((3, 4, 1), np.zeros((5, 3)), np.zeros(5), {}, "2 inputs"),
        ((2, 4, 1), np.zeros(5), np.zeros(5), {}, "x: expected 2-D"),
        ((2, 4, 1), np.zeros((5, 2)), np.zeros(4), {}, "y: expected 5 rows"),
        ((2, 4, 1), np.zeros((5, 2)), np.full(5, 2), {}, r"0\.\.1"),
        ((2, 4, 1), np.zeros((5, 2)), np.zeros(5), {"task": "ranking"}, "task"),
        ((2, 4, 1), np.zeros((5, 2)), np.zeros(5), {"resolution": 1}, "resolution"),
        ((2, 4, 1), np.zeros((5, 2)), np.zeros(5), {"x_test": np.zeros((2, 2))}, "both"),
        ((2, 4, 2), np.zeros((5, 2)), np.zeros(5), {"task": "regression"}, "one output"),
        ((2, 4, 1), np.full((5, 2), np.nan), np.zeros(5), {}, "NaN"),
    ],
    ids=[
        "3-inputs",
        "1-d-x",
        "short-y",
        "label-out-of-range",
        "bad-task",
        "bad-resolution",
        "x-test-without-y",
        "regression-2-outputs",
        "nan-x",
    ],
)
def test_decision_boundary_bad_input(sizes, x, y, kwargs, match):
    model = MLP(sizes, "tanh")
    with pytest.raises(ValueError, match=match):
        plot.plot_decision_boundary(model, zeros(model), x, y, **kwargs)


@pytest.mark.parametrize(
    "hidden, max_neurons, shown",
    [(6, 32, 6), (40, 32, 32), (6, 4, 4)],
    ids=["all", "capped-default", "capped-arg"],
)
def test_neurons_grid(tmp_path, data, hidden, max_neurons, shown):
    model = MLP((2, hidden, 1), "tanh")
    params = model.init(jax.random.key(3))
    x, _ = data
    fig = plot.plot_neurons(model, params, x, resolution=24, max_neurons=max_neurons)
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == shown
    assert (f"first {shown} of {hidden}" in fig.get_suptitle()) == (shown < hidden)
    # each tile is its unit's activation scaled to max |a| = 1
    tile = np.asarray(tiles[0].images[0].get_array())
    assert np.isclose(np.max(np.abs(tile)), 1.0)
    if shown == hidden:  # drawing the capped grids is slow and shows nothing new
        render(fig, tmp_path / "neurons.png")


def test_neurons_bad_input(binary, data):
    model, params = binary
    x, _ = data
    with pytest.raises(ValueError, match="x: expected 2-D"):
        plot.plot_neurons(model, params, x[:, :1])
    with pytest.raises(ValueError, match="max_neurons"):
        plot.plot_neurons(model, params, x, max_neurons=0)
    wide = MLP((3, 4, 1))
    with pytest.raises(ValueError, match="2 inputs"):
        plot.plot_neurons(wide, zeros(wide), np.zeros((4, 3)))


def _report(ok: bool) -> GradCheckReport:
    """A float32 report for a (2, 3, 1) network; ``ok=False`` plants a bad first-layer ``w``."""
    good = Comparison(max_abs=1e-7, max_rel=2e-7, cosine=1.0, ok=True)
    fd = Comparison(max_abs=1e-10, max_rel=3e-11, cosine=1.0, ok=True)
    bad = Comparison(max_abs=0.3, max_rel=0.2, cosine=0.9, ok=False)
    shapes = {(1, "w"): (2, 3), (1, "b"): (3,), (2, "w"): (3, 1), (2, "b"): (1,)}
    rows = tuple(
        GradCheckRow(l, name, shape, good, fd, "directions") for (l, name), shape in shapes.items()
    )
    if not ok:
        rows = (rows[0]._replace(autodiff=bad, finite_diff=bad), *rows[1:])
    return GradCheckReport(rows, "float32", *TOLERANCES["float32"])


@pytest.mark.parametrize("ok", [True, False], ids=["agreeing", "planted-bug"])
def test_gradcheck_bars(tmp_path, ok):
    report = _report(ok)
    assert report.ok == ok
    fig = plot.plot_gradcheck(report)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    bars = ax.patches
    assert len(bars) == 2 * len(report.rows)
    heights = np.array([b.get_height() for b in bars])
    assert np.all(heights >= plot.ZERO_FLOOR)
    expected = [max(r.autodiff.max_rel, plot.ZERO_FLOOR) for r in report.rows]
    np.testing.assert_allclose(heights[: len(report.rows)], expected)
    hatched = [b.get_hatch() == "//" for b in bars[: len(report.rows)]]
    assert hatched == [not r.autodiff.ok for r in report.rows]
    assert ("DISAGREES" in ax.get_title()) == (not report.ok)
    assert len(ax.lines) == 2  # the two tolerance bounds
    render(fig, tmp_path / "gradcheck.png")


def test_gradcheck_zero_error_is_floored():
    good = _report(True)
    row = good.rows[0]
    exact = row._replace(autodiff=row.autodiff._replace(max_abs=0.0, max_rel=0.0))
    fig = plot.plot_gradcheck(good._replace(rows=(exact, *good.rows[1:])))
    assert fig.axes[0].patches[0].get_height() == plot.ZERO_FLOOR
    assert any(t.get_text() == "0" for t in fig.axes[0].texts)


def test_gradcheck_bad_input():
    with pytest.raises(ValueError, match="no rows"):
        plot.plot_gradcheck(_report(True)._replace(rows=()))
    with pytest.raises(TypeError, match="GradCheckReport"):
        plot.plot_gradcheck(str(_report(True)))


def test_network_edges(tmp_path, binary):
    model, params = binary
    fig = plot.plot_network(model, params)
    ax = fig.axes[0]
    (edges,) = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    assert len(edges.get_segments()) == 2 * 6 + 6 * 5 + 5 * 1
    # the widest line is the largest |w|, in the colour of its sign
    flat = np.concatenate([np.asarray(p.w).ravel() for p in params])
    widths = edges.get_linewidths()
    assert np.argmax(widths) == np.argmax(np.abs(flat))
    render(fig, tmp_path / "network.png")


@pytest.mark.parametrize(
    "sizes, match",
    [((2, 65, 1), "max_units=64"), ((40, 60, 40), "max_edges=2000")],
    ids=["too-wide", "too-many-edges"],
)
def test_network_too_large(sizes, match):
    model = MLP(sizes)
    with pytest.raises(ValueError, match=match):
        plot.plot_network(model, zeros(model))


def test_save_figure(tmp_path, binary):
    fig = plot.plot_network(*binary)
    small = plot.save_figure(fig, tmp_path / "sub" / "dir" / "small.png", dpi=50)
    large = assert_png(plot.save_figure(fig, tmp_path / "large.png", dpi=100))
    assert imread(small).shape[1] * 2 == pytest.approx(large.shape[1], abs=2)
    with pytest.raises(ValueError, match="dpi"):
        plot.save_figure(fig, tmp_path / "x.png", dpi=0)


def test_missing_matplotlib_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.delitem(sys.modules, "jaxmlp.plot")
    with pytest.raises(ImportError, match=r"pip install 'jaxmlp\[plot\]'"):
        importlib.import_module("jaxmlp.plot")


def test_works_without_pyplot(monkeypatch, tmp_path, binary, data):
    # pyplot is what picks a backend and holds global figures: blocking it proves we never use it
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    model, params = binary
    x, y = data
    fig = plot.plot_decision_boundary(model, params, x, y, resolution=8)
    render(fig, tmp_path / "no_pyplot.png")


# ---------------------------------------------------------------- layers beyond the plain stack


@pytest.fixture(scope="module")
def rich():
    """Every piece: Playground features (7 columns), layer norm, dropout and a residual
    connection on hidden layer 2 (8 -> 8; hidden 1 reads 7 features, so it has none)."""
    model = MLP((2, 8, 8, 1), "tanh", "sigmoid", norm="layernorm", dropout=0.1, residual=True,
                features="playground")  # fmt: skip
    params = model.init(jax.random.key(5))
    # moved off init: a Norm's scale of ones and offset of zeros, the zero biases
    return model, jax.tree.map(
        lambda a: a + 0.2 * np.cos(np.arange(a.size).reshape(a.shape)), params
    )


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_network_with_every_piece(tmp_path, rich):
    from matplotlib.patches import FancyArrowPatch

    model, params = rich
    fig = plot.plot_network(model, params)
    ax = fig.axes[0]
    (edges,) = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    assert len(edges.get_segments()) == 7 * 8 + 8 * 8 + 8 * 1  # the affine layers' weights only
    dense = [params[i] for i in model.affine_slots()]
    flat = np.concatenate([np.asarray(p.w).ravel() for p in dense])
    assert np.argmax(edges.get_linewidths()) == np.argmax(np.abs(flat))
    texts = _texts(fig)
    # the feature inputs by name, then the captions with the pieces under their layers
    assert texts[:7] == ["x1", "x2", "x1^2", "x2^2", "x1*x2", "sin(x1)", "sin(x2)"]
    captions = [t for t in texts if "\n" in t]
    assert captions == [
        "input features\n7 from 2 inputs",
        "hidden 1\nlayernorm\n8 tanh\ndropout 0.1",
        "hidden 2\nlayernorm\n8 tanh\ndropout 0.1\n+ skip",
        "output\n1 sigmoid",
    ]
    arcs = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arcs) == 1 and texts.count("skip") == 1  # hidden 2 only
    # the bias colours are the Dense biases (the node scatter of hidden 1 is the second)
    np.testing.assert_allclose(ax.collections[2].get_array(), np.asarray(dense[0].b), rtol=1e-6)
    render(fig, tmp_path / "network_rich.png")


def test_network_with_fourier_features_and_skips_everywhere(tmp_path):
    from matplotlib.patches import FancyArrowPatch

    from jaxmlp.layers import FourierFeatures

    model = MLP((2, 6, 6, 6, 2), "sin", initializer="siren", residual=True,
                features=FourierFeatures(3, 1.0, 0))  # fmt: skip
    fig = plot.plot_network(model, model.init(jax.random.key(0)))
    captions = [t for t in _texts(fig) if "\n" in t]
    assert captions[0] == "input features\nfourier 6\nfrom 2 inputs"
    assert [c.endswith("+ skip") for c in captions] == [False, True, True, True, False]
    assert sum(isinstance(p, FancyArrowPatch) for p in fig.axes[0].patches) == 3
    render(fig, tmp_path / "network_fourier.png")
    wide = MLP((2, 8, 1), features=FourierFeatures(40))
    with pytest.raises(ValueError, match=r"the input features of sizes .* has 80"):
        plot.plot_network(wide, wide.init(jax.random.key(0)))


def test_plain_network_keeps_its_captions(binary):
    fig = plot.plot_network(*binary)
    assert _texts(fig) == ["input\n2", "hidden 1\n6 tanh", "hidden 2\n5 tanh", "output\n1 sigmoid"]  # fmt: skip


def test_neurons_show_the_block_output_after_norm_and_skip(data):
    """Hidden layer 1 with a skip (2 -> 2) and a layer norm: each tile is
    ``a[1] = x + tanh(layernorm(z))`` over the plane, not ``tanh(z)``."""
    from jaxmlp._core.backprop import forward_trace
    from jaxmlp.plot._common import _grid

    model = MLP((2, 2, 1), "tanh", norm="layernorm", dropout=0.5, residual=True)
    params = jax.tree.map(lambda a: a + 0.3, model.init(jax.random.key(2)))
    x, _ = data
    fig = plot.plot_neurons(model, params, x, resolution=12)
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == 2
    _, _, grid = _grid(np.asarray(x, np.float64), 12)
    trace = forward_trace(model, params, grid)
    (w, b), norm = params[0], params[1]
    z = grid @ np.asarray(w) + np.asarray(b)
    zh = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-5)
    expected = grid + np.tanh(zh * np.asarray(norm.scale) + np.asarray(norm.offset))
    np.testing.assert_allclose(np.asarray(trace.a[1]), expected, rtol=1e-4, atol=1e-5)
    for j, ax in enumerate(tiles):
        a = expected[:, j].reshape(12, 12)
        np.testing.assert_allclose(ax.images[0].get_array(), a / np.abs(a).max(), rtol=1e-4, atol=1e-5)  # fmt: skip
    assert "after the norm" in fig.get_suptitle()


def test_decision_boundary_of_a_model_with_every_piece(tmp_path, rich, data):
    model, params = rich
    x, y = data
    fig = plot.plot_decision_boundary(model, params, x, y, resolution=24)
    image = fig.axes[0].images[0]
    x0, x1, y0, y1 = image.get_extent()
    dx, dy = (x1 - x0) / 24, (y1 - y0) / 24
    corner = np.array([[x0 + dx / 2, y0 + dy / 2]], np.float32)
    # inference: no dropout, the same as model.apply without a key
    expected = float(np.asarray(model.apply(params, corner))[0, 0])
    assert np.asarray(image.get_array())[0, 0] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    render(fig, tmp_path / "boundary_rich.png")


def test_decision_boundary_axis_labels(binary, data):
    model, params = binary
    x, y = data
    fig = plot.plot_decision_boundary(model, params, x, y, resolution=8)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("$x_1$", "$x_2$")
    labels = ("width (standardised)", "height (standardised)")
    fig = plot.plot_decision_boundary(model, params, x, y, resolution=8, axis_labels=labels)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == labels
    with pytest.raises(ValueError, match="axis_labels: expected two strings"):
        plot.plot_decision_boundary(model, params, x, y, axis_labels=("only one",))
