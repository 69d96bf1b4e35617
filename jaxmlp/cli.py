"""The ``jaxmlp`` command line: ``train``, ``predict``, ``gradcheck``, ``bench``, ``summary``.

``main(argv)`` returns the exit status instead of exiting, so tests run it in-process. Every
error a user can cause (bad flags, unreadable files, a corrupted checkpoint, a diverging run)
ends as one line ``jaxmlp: error: <message>`` on stderr: exit status 2 for a bad command line,
1 for anything that fails while running. matplotlib is imported only when a plot is drawn.

``train`` fits the inputs' standardisation (and, for regression, the target's) on the training
split only and stores it, with the label mapping and feature names, in the checkpoint's
metadata; ``predict`` reads it back, so a CSV goes in raw and labels come out by name.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxmlp import __version__, data
from jaxmlp.activations import get_activation
from jaxmlp.backprop import value_and_grad
from jaxmlp.check import gradcheck
from jaxmlp.checkpoint import load_checkpoint, save_checkpoint
from jaxmlp.distributed import ENV_COORDINATOR, check_mesh, data_parallel_mesh, initialize, local
from jaxmlp.errors import CheckpointError, DivergenceError
from jaxmlp.losses import Loss, get_loss
from jaxmlp.metrics import evaluate
from jaxmlp.mlp import MLP, Dense
from jaxmlp.training import EarlyStopping, fit

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
DATASETS = (*data.DATASETS, *data.SKLEARN_DATASETS)
# An integer-valued CSV target is read as class labels when it has at most this many values
# (and at most half as many as there are rows); otherwise it is a regression target.
MAX_AUTO_CLASSES = 20
GRADCHECK_ROWS = 8  # training examples that train's gradient check (and its plot) uses
CHECKPOINT = "model.npz"


class UsageError(Exception):
    """A bad command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block and exit
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split()) or type(err).__name__


def _fail(err: BaseException | str, status: int) -> int:
    text = err if isinstance(err, str) else _message(err)
    print(f"jaxmlp: error: {text}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit status (0 ok, 1 failed, 2 bad command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as err:
        return _fail(err, 2)
    except SystemExit as err:  # --help and --version exit 0; the benchmarks exit with a message
        if isinstance(err.code, str):
            return _fail(err.code, 2)
        return 0 if err.code is None else int(err.code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (OSError, ValueError, TypeError, ImportError, ArithmeticError, RuntimeError) as err:
        return _fail(err, 1)  # CheckpointError is a ValueError, DivergenceError arithmetic


# ---------------------------------------------------------------- flag types and the parser


def _type(name: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (ValueError, TypeError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


def _number(kind: type, minimum: float, strict: bool = False) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(
                f"expected a{'n int' if kind is int else ' number'}, got {text!r}"
            ) from None
        if not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
            raise ValueError(f"must be {'>' if strict else '>='} {minimum}, got {text}")
        return value

    return _type(kind.__name__, convert)


def _ints(text: str, least: int) -> tuple[int, ...]:
    parts = [] if text.strip().lower() in ("", "none") else text.split(",")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = (0,)
    if len(sizes) < least or min(sizes, default=1) < 1:
        raise ValueError(f"expected comma-separated positive ints like 64,64, got {text!r}")
    return sizes


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(f"must be in [0, 1), got {text}")
    return value


def _activation(text: str) -> str | tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    for n in names:
        get_activation(n)
    return names[0] if len(names) == 1 else names


POSITIVE, COUNT = _number(int, 1), _number(int, 0)
HIDDEN = _type("hidden", lambda t: _ints(t, 0))
SIZES = _type("sizes", lambda t: _ints(t, 2))
ACTIVATION = _type("activation", _activation)
OUTPUT_ACTIVATION = _type("output_activation", lambda t: get_activation(t, output=True).name)
LOSS = _type("loss", lambda t: get_loss(t).name)


def _network_flags(p: argparse.ArgumentParser, hidden: str, activation: str) -> None:
    p.add_argument("--hidden", type=HIDDEN, default=None, metavar="64,64",
                   help=f"hidden layer widths, comma-separated; 'none' for no hidden layer (default {hidden})")  # fmt: skip
    p.add_argument("--activation", type=ACTIVATION, default=activation,
                   help=f"hidden activation, or one per hidden layer comma-separated (default {activation})")  # fmt: skip
    p.add_argument("--output-activation", type=OUTPUT_ACTIVATION, default=None,
                   help="identity, sigmoid or softmax (default: the one that suits the loss)")  # fmt: skip


def _shape_flags(p: argparse.ArgumentParser, hidden: str, activation: str) -> None:
    _network_flags(p, hidden, activation)
    p.add_argument("--sizes", type=SIZES, help="all layer widths, input first (e.g. 3,4,2)")
    p.add_argument("--inputs", type=POSITIVE, help="input features (default 3)")
    p.add_argument("--outputs", type=POSITIVE, help="output units (default 2)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand except ``bench`` (which forwards its flags)."""
    p = _Parser(prog="jaxmlp", description="Train, check and inspect JAX multilayer perceptrons.")
    p.add_argument("--version", action="version", version=f"jaxmlp {__version__} (jax {jax.__version__})")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train on a built-in dataset or a CSV file")
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASETS, help="a built-in dataset")
    source.add_argument("--data", type=Path, metavar="FILE.csv", help="a CSV file with a header row")  # fmt: skip
    t.add_argument("--target", help="the CSV's target column")
    t.add_argument("--task", choices=("auto", "classification", "regression"), default="auto",
                   help="for --data: auto reads non-numeric or few integer targets as classes")  # fmt: skip
    t.add_argument("--n", type=POSITIVE, help="points to generate (default 400)")
    t.add_argument("--noise", type=_number(float, 0.0), help="input (or target) noise, default 0")
    _network_flags(t, "32,32", "relu")
    t.add_argument("--loss", type=LOSS, help="default: softmax_cross_entropy or mse by task")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    t.add_argument("--lr", type=_number(float, 0.0, strict=True), default=0.01)
    t.add_argument("--epochs", type=POSITIVE, default=100)
    t.add_argument("--batch-size", type=POSITIVE, default=32)
    t.add_argument("--seed", type=COUNT, default=0)
    t.add_argument("--method", choices=("manual", "autodiff"), default="manual")
    t.add_argument("--val-split", type=_type("fraction", _fraction), default=0.2,
                   help="fraction held out for validation (0: none; default 0.2)")  # fmt: skip
    t.add_argument("--early-stopping", type=COUNT, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement (0: off)")  # fmt: skip
    t.add_argument("--l2", type=_number(float, 0.0), default=0.0, help="weight decay (l2/2)||w||^2")  # fmt: skip
    t.add_argument("--out", type=Path, default=Path("jaxmlp_out"), metavar="DIR")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-plots", action="store_true", help="skip the PNGs and the gradient check")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over every device (and process: see --coordinator)")  # fmt: skip
    t.add_argument("--coordinator", metavar="HOST:PORT",
                   help="process 0's address for a multi-process run (or $JAXMLP_COORDINATOR_ADDRESS)")  # fmt: skip
    t.add_argument("--num-processes", type=POSITIVE, help="processes in the run (or $JAXMLP_NUM_PROCESSES)")  # fmt: skip
    t.add_argument("--process-id", type=COUNT, help="this process's rank (or $JAXMLP_PROCESS_ID)")
    t.set_defaults(run=cmd_train)

    r = sub.add_parser("predict", help="predict a CSV file with a trained model")
    r.add_argument("--checkpoint", type=Path, required=True, metavar="DIR", help="train's --out (or its model.npz)")  # fmt: skip
    r.add_argument("--data", type=Path, required=True, metavar="FILE.csv")
    r.add_argument("--out", type=Path, metavar="FILE.csv", help="default: standard output")
    r.set_defaults(run=cmd_predict)

    g = sub.add_parser("gradcheck", help="manual vs autodiff vs finite-difference gradients")
    _shape_flags(g, "8", "tanh")
    g.add_argument("--loss", type=LOSS, default="mse")
    g.add_argument("--l2", type=_number(float, 0.0), default=0.0)
    g.add_argument("--n", type=POSITIVE, default=16, help="random examples in the batch")
    g.add_argument("--seed", type=COUNT, default=0)
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    g.add_argument("--plot", type=Path, metavar="FILE.png", help="write the bar chart")
    g.set_defaults(run=cmd_gradcheck)

    s = sub.add_parser("summary", help="the per-layer table with parameter counts")
    s.add_argument("--checkpoint", type=Path, metavar="DIR")
    _shape_flags(s, "4", "sigmoid")
    s.set_defaults(run=cmd_summary)

    sub.add_parser("bench", add_help=False, help="the benchmark suite ('jaxmlp bench --help')")
    return p


def _sizes(args: argparse.Namespace, hidden: tuple[int, ...]) -> tuple[int, ...]:
    if args.sizes is not None:
        if (args.inputs, args.hidden, args.outputs) != (None, None, None):
            raise UsageError("give either --sizes or --inputs/--hidden/--outputs")
        return args.sizes
    inner = hidden if args.hidden is None else args.hidden
    return (args.inputs or 3, *inner, args.outputs or 2)


def _bench(argv: list[str]) -> int:
    from jaxmlp import benchmarking

    parser = benchmarking.build_parser("jaxmlp bench")
    parser.error = lambda message: _Parser.error(parser, message)  # type: ignore[method-assign]
    parser.parse_args(argv)  # flags checked (and --help answered) before any work
    return benchmarking.main(argv, prog="jaxmlp bench")


# ---------------------------------------------------------------- data in


class Table(NamedTuple):
    """A CSV file as text: its header, its rows, and each row's line number (for messages)."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [row[i].strip() for row in self.rows]

    def numbers(self, name: str) -> np.ndarray:
        """The column as float64, or a ValueError naming the first bad cell."""
        cells = self.column(name)
        try:
            values = np.asarray(cells, np.float64)
        except ValueError:
            values = None
        if values is None or not np.all(np.isfinite(values)):
            for cell, line in zip(cells, self.lines, strict=True):
                if not (_is_number(cell) and math.isfinite(float(cell))):
                    raise ValueError(
                        f"{self.path}: line {line}, column {name!r}: expected a finite number, got {cell!r}"
                    )
        return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path) -> Table:
    """Reads a CSV with a header row; blank lines are skipped, every other row must be full."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            records = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
        except csv.Error as err:
            raise ValueError(f"{path}: not a readable CSV file ({err})") from None
    if not records:
        raise ValueError(f"{path}: empty file (expected a header row)")
    header = [h.strip() for h in records[0][1]]
    if "" in header or len(set(header)) != len(header):
        raise ValueError(f"{path}: the header needs distinct, non-empty column names, got {header}")
    for line, row in records[1:]:
        if len(row) != len(header):
            raise ValueError(f"{path}: line {line} has {len(row)} fields, the header {len(header)}")
    if len(records) < 2:
        raise ValueError(f"{path}: no data rows below the header")
    return Table(path, header, [r for _, r in records[1:]], [n for n, _ in records[1:]])


class Dataset(NamedTuple):
    """Raw training data: ``x`` ``(n, d)`` float32; ``y`` int labels ``(n,)`` or ``(n, 1)``."""

    x: np.ndarray
    y: np.ndarray
    task: str
    features: list[str]
    target: str
    classes: list[str] | None
    source: str


def _class_name(cell: str) -> str:
    """A label's canonical name: ``"1"`` and ``"1.0"`` are one class; other text stays as is."""
    try:
        value = float(cell)
    except ValueError:
        return cell
    return str(int(value)) if value.is_integer() else repr(value)


def _labels(cells: list[str], numeric: bool) -> tuple[np.ndarray, list[str]]:
    """Class indices ``(n,)`` and the sorted class names (numbers sort by value)."""
    names = [_class_name(c) for c in cells]
    classes = sorted(set(names), key=float if numeric else None)
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[c] for c in names], np.int32), classes


def load_csv(path: Path, target: str, task: str) -> Dataset:
    """A training CSV: numeric feature columns, and ``target`` as classes or values."""
    table = read_csv(path)
    if target not in table.header:
        raise ValueError(f"{path}: no target column {target!r}; the columns are {table.header}")
    features = [h for h in table.header if h != target]
    if not features:
        raise ValueError(f"{path}: no feature columns besides the target {target!r}")
    x = np.stack([table.numbers(f) for f in features], axis=1).astype(np.float32)
    cells = table.column(target)
    numeric = np.asarray(cells, np.float64) if all(map(_is_number, cells)) else None
    if numeric is not None and not np.all(np.isfinite(numeric)):
        table.numbers(target)  # raises, naming the cell
    if task == "auto":
        integral = numeric is not None and bool(np.all(numeric == np.round(numeric)))
        distinct = len(set(map(_class_name, cells)))
        few = integral and distinct <= min(MAX_AUTO_CLASSES, len(cells) // 2)
        task = "classification" if numeric is None or few else "regression"
    if task == "regression":
        y = table.numbers(target).astype(np.float32).reshape(-1, 1)
        return Dataset(x, y, task, features, target, None, str(path))
    if "" in cells:
        line = table.lines[cells.index("")]
        raise ValueError(f"{path}: line {line}, column {target!r}: empty class label")
    y, classes = _labels(cells, numeric is not None)
    if len(classes) < 2:
        raise ValueError(f"{path}: target {target!r} has one class only ({classes[0]!r})")
    return Dataset(x, y, task, features, target, classes, str(path))


def load_dataset(args: argparse.Namespace, key: jax.Array) -> Dataset:
    """The ``--dataset`` or ``--data`` of a ``train`` command line."""
    if args.data is not None:
        if args.target is None:
            raise UsageError("--data needs --target COLUMN")
        if args.n is not None or args.noise is not None:
            raise UsageError("--n and --noise apply to the generated datasets, not to --data")
        return load_csv(args.data, args.target, args.task)
    name, task = args.dataset, data.TASKS[args.dataset]
    if args.target is not None or args.task not in ("auto", task):
        raise UsageError(f"--target and --task apply to --data; {name} is a {task} dataset")
    if name in data.SKLEARN_DATASETS:
        if args.n is not None or args.noise is not None:
            raise UsageError(f"--n and --noise apply to the generated datasets, not to {name}")
        x, y = data.load_sklearn(name)
        features, classes = _sklearn_names(name)
        return Dataset(x, y, task, features, "target", classes, name)
    x, y = data.load(name, key, args.n or 400, noise=args.noise or 0.0)
    x, y = np.asarray(x, np.float32), np.asarray(y)
    classes = [str(c) for c in range(int(y.max()) + 1)] if task == "classification" else None
    return Dataset(x, y, task, [f"x{i + 1}" for i in range(x.shape[1])], "y", classes, name)


def _sklearn_names(name: str) -> tuple[list[str], list[str] | None]:
    """scikit-learn's own feature and class names (e.g. iris's "setosa") for ``predict``."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    classes = [str(c) for c in bunch.target_names] if "target_names" in bunch else None
    return [str(f) for f in bunch.feature_names], classes


# ---------------------------------------------------------------- the model's head


class Head(NamedTuple):
    """How a task meets a loss: output units, output activation and the targets' encoding.

    ``encoding`` is ``"index"`` (int labels), ``"binary"`` (one sigmoid output, ``(n, 1)``),
    ``"onehot"`` (``(n, k)`` floats, for non-logit losses) or ``"values"`` (regression).
    """

    loss: Loss
    outputs: int
    output_activation: str
    encoding: str


def choose_head(ds: Dataset, loss_name: str | None, output_activation: str | None) -> Head:
    k = len(ds.classes or ())
    if ds.task == "regression":
        loss = get_loss(loss_name or "mse")
        if loss.targets != "regression":
            raise UsageError(f"--loss {loss.name} is for classification; {ds.source} is regression")
        return Head(loss, ds.y.shape[1], output_activation or "identity", "values")
    loss = get_loss(loss_name or "softmax_cross_entropy")
    if loss.targets == "classes":
        return Head(loss, k, output_activation or "softmax", "index")
    if loss.targets == "binary":
        return Head(loss, 1 if k == 2 else k, output_activation or "sigmoid", "binary" if k == 2 else "onehot")  # fmt: skip
    return Head(loss, k, output_activation or "softmax", "onehot")


def encode(head: Head, y: np.ndarray) -> np.ndarray:
    """Targets in the form ``head.loss`` reads."""
    if head.encoding == "binary":
        return y.astype(np.float32).reshape(-1, 1)
    if head.encoding == "onehot":
        return np.eye(head.outputs, dtype=np.float32)[y]
    return y


def probabilities(out: np.ndarray, output_activation: str, logits: bool) -> np.ndarray:
    """Model outputs ``(n, k)`` as class probabilities ``(n, max(k, 2))`` (rows sum to 1)."""
    out = np.asarray(out, np.float64)
    if output_activation == "identity" and logits:  # the cross entropies' logits
        # sigmoid as 0.5 (1 + tanh(z / 2)) and softmax shifted by the max: neither overflows
        out = 0.5 * (1 + np.tanh(0.5 * out)) if out.shape[1] == 1 else np.exp(out - out.max(1, keepdims=True))  # fmt: skip
    if out.shape[1] == 1:
        p1 = np.clip(out[:, 0], 0, 1)
        return np.stack([1 - p1, p1], axis=1)
    p = np.clip(out, 0, None)
    total = p.sum(axis=1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1), 1 / p.shape[1])


def fold_preprocessing(params, x_mean, x_scale, y_mean=None, y_scale=None) -> tuple[Dense, ...]:
    """Parameters that take raw inputs (and, given ``y_*``, give raw targets) directly.

    ``((x - m) / s) @ w + b = x @ (w / s^T) + (b - (m / s) @ w)``; the plots use this to draw
    the input plane in the data's own units.
    """
    layers = [Dense(np.asarray(p.w, np.float64), np.asarray(p.b, np.float64)) for p in params]
    w, b = layers[0]
    m, s = np.asarray(x_mean, np.float64), np.asarray(x_scale, np.float64)
    layers[0] = Dense(w / s[:, None], b - (m / s) @ w)
    if y_mean is not None:
        w, b = layers[-1]
        ym, ys = np.asarray(y_mean, np.float64), np.asarray(y_scale, np.float64)
        layers[-1] = Dense(w * ys[None, :], b * ys + ym)
    dtype = params[0].w.dtype
    return tuple(Dense(jax.numpy.asarray(w, dtype), jax.numpy.asarray(b, dtype)) for w, b in layers)


def _import_plot():
    """``jaxmlp.plot``, or ``None`` and the reason (matplotlib is an optional extra)."""
    try:
        from jaxmlp import plot
    except ImportError as err:
        return None, _message(err)
    return plot, None


# ---------------------------------------------------------------- train


@functools.lru_cache(maxsize=16)
def _optimizer(name: str, lr: float):
    """One optax object per (name, lr): ``fit`` caches its compiled programs on it."""
    import optax

    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    return getattr(optax, name)(lr)


def _scores(model, head, params, ds, rows, x, y, y_std) -> dict[str, float]:
    """Data loss (standardised units) and accuracy, or R^2, RMSE and MAE in the target's units."""
    value, metric = evaluate(model, head.loss, params, jax.numpy.asarray(x), jax.numpy.asarray(y))
    out = np.asarray(model.apply(params, x))
    scores = {"loss": float(value)}
    if ds.task == "classification":
        p = probabilities(out, model.output_activation, head.loss.logits)
        scores["accuracy"] = float(np.mean(p.argmax(axis=1) == ds.y[rows]))
    else:
        err = np.asarray(y_std.inverse_transform(out)) - ds.y[rows]
        scores |= {"r2": float(metric), "rmse": float(np.sqrt(np.mean(err**2)))}
        scores["mae"] = float(np.mean(np.abs(err)))
    return scores


def _write_metrics(path: Path, history: dict[str, list[float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "val_loss", "val_metric"])
        for e, loss in enumerate(history["loss"]):
            val = [history[k][e] if k in history else "" for k in ("val_loss", "val_metric")]
            writer.writerow([e + 1, loss, *val])


def _train_plots(out: Path, ds, model, head, result, split, x_std, y_std, report) -> list[str]:
    plot, why = _import_plot()
    if plot is None:
        print(f"jaxmlp: note: no plots ({why})", file=sys.stderr)
        return []
    written = []

    def save(fig, name: str) -> None:
        plot.save_figure(fig, out / name)
        written.append(name)

    save(plot.plot_history(result.history, metric_name=result.metric), "loss.png")
    train, val = split
    if ds.x.shape[1] == 2:
        # Draw the plane in the data's units: fold the standardisation into the weights.
        raw_y = ds.task == "regression" and model.output_activation == "identity"
        stats = [x_std.mean[0], x_std.scale[0]]
        if raw_y:
            stats += [y_std.mean[0], y_std.scale[0]]
        folded = fold_preprocessing(result.params, *stats)
        y = ds.y if ds.task == "classification" or raw_y else np.asarray(y_std.transform(ds.y))
        test = {"x_test": ds.x[val], "y_test": y[val]} if len(val) else {}
        name = "decision_boundary.png" if ds.task == "classification" else "prediction_surface.png"
        save(plot.plot_decision_boundary(model, folded, ds.x[train], y[train], task=ds.task, **test), name)  # fmt: skip
        if model.num_layers > 1:
            save(plot.plot_neurons(model, folded, ds.x), "neurons.png")
    save(plot.plot_gradcheck(report), "gradcheck.png")
    edges = sum(i * o for i, o in model.layer_shapes())
    if max(model.sizes) <= plot.MAX_UNITS and edges <= plot.MAX_EDGES:
        save(plot.plot_network(model, result.params), "network.png")
    return written


def _config(args: argparse.Namespace) -> dict[str, Any]:
    skip = ("run", "command")
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}


def _format(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in scores.items())


def cmd_train(args: argparse.Namespace) -> int:
    """``jaxmlp train``: load, split, standardise, fit, evaluate, write the files, plot."""
    start = time.perf_counter()
    mesh = _distributed_mesh(args)
    k_data, k_split, k_init, k_fit = jax.random.split(jax.random.key(args.seed), 4)
    ds = load_dataset(args, k_data)
    head = choose_head(ds, args.loss, args.output_activation)
    args.hidden = (32, 32) if args.hidden is None else args.hidden  # as summary.json records it
    model = MLP(
        (ds.x.shape[1], *args.hidden, head.outputs), args.activation, head.output_activation
    )
    rows = np.arange(len(ds.x))
    train, val = rows, rows[:0]
    if args.val_split > 0:
        train, _, val, _ = data.train_test_split(k_split, rows, rows, args.val_split)
    x_std = data.Standardizer.fit(ds.x[train])
    y_std = data.Standardizer.fit(ds.y[train]) if ds.task == "regression" else None

    def prepared(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x_std.transform(ds.x[r]), np.float32)
        if y_std is None:
            return x, encode(head, ds.y[r])
        return x, np.asarray(y_std.transform(ds.y[r]), np.float32)

    (xt, yt), validation = prepared(train), prepared(val) if len(val) else None
    loaded = time.perf_counter()
    try:
        result = fit(
            model, model.init(k_init), xt, yt, loss=head.loss, key=k_fit,
            optimizer=_optimizer(args.optimizer, args.lr), epochs=args.epochs,
            batch_size=min(args.batch_size, len(xt)), method=args.method,
            validation_data=validation, progress=not args.no_progress, l2=args.l2,
            early_stopping=EarlyStopping(args.early_stopping) if args.early_stopping else None,
            mesh=mesh,
        )  # fmt: skip
    except DivergenceError as err:
        raise ArithmeticError(
            f"training diverged: the loss became NaN or Inf in epoch {err.epoch}, step "
            f"{err.step}; try a smaller --lr"
        ) from None
    trained = time.perf_counter()
    if mesh is not None:
        # Every process holds the same replicated result; process 0 alone writes the files.
        result = result._replace(params=jax.tree.map(local, result.params))
        if jax.process_index() != 0:
            return 0
    final = {"train": _scores(model, head, result.params, ds, train, xt, yt, y_std)}
    if validation is not None:
        final["val"] = _scores(model, head, result.params, ds, val, *validation, y_std)

    out = args.out
    meta = {
        "written_by": "jaxmlp train", "task": ds.task, "target": ds.target,
        "features": ds.features, "classes": ds.classes, "loss": head.loss.name,
        "encoding": head.encoding, "source": ds.source,
        "x_mean": np.asarray(x_std.mean)[0].tolist(), "x_scale": np.asarray(x_std.scale)[0].tolist(),
        "y_mean": None if y_std is None else np.asarray(y_std.mean)[0].tolist(),
        "y_scale": None if y_std is None else np.asarray(y_std.scale)[0].tolist(),
    }  # fmt: skip
    save_checkpoint(out / CHECKPOINT, model=model, params=result.params, step=result.step, metadata=meta)  # fmt: skip
    _write_metrics(out / "metrics.csv", result.history)
    files = [CHECKPOINT, "metrics.csv", "summary.json"]
    check = None
    if not args.no_plots:
        # A few training rows at the trained weights: the manual gradient vs two references.
        check = gradcheck(model, result.params, xt[:GRADCHECK_ROWS], yt[:GRADCHECK_ROWS], head.loss, l2=args.l2)  # fmt: skip
        files += _train_plots(out, ds, model, head, result, (train, val), x_std, y_std, check)
    done = time.perf_counter()

    epochs = len(result.history["loss"])
    summary = {
        "source": ds.source, "task": ds.task, "target": ds.target, "features": ds.features,
        "classes": ds.classes, "rows": {"train": len(train), "val": len(val)},
        "model": model.to_dict(), "num_params": model.count_params(), "loss": head.loss.name,
        "metric": result.metric,
        "final": {**final, "epochs": epochs, "steps": result.step, "best_epoch": result.best_epoch,
                  "stopped_epoch": result.stopped_epoch,
                  "gradcheck_ok": None if check is None else check.ok},
        "config": _config(args),
        "timings": {"load_s": loaded - start, "fit_s": trained - loaded, "plots_s": done - trained,
                    "total_s": done - start},
        "versions": {"jaxmlp": __version__, "jax": jax.__version__},
        "files": files,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    acts = "/".join(model.activations)
    print(f"{ds.source}: {ds.task}, {len(train)} training and {len(val)} validation rows, {len(ds.features)} features")  # fmt: skip
    print(f"model {model.sizes} ({acts}), {model.count_params()} parameters; {head.loss.name}, {args.optimizer} lr {args.lr:g}, {args.method} gradients")  # fmt: skip
    stop = f", stopped early (best epoch {result.best_epoch})" if result.stopped_epoch else ""
    print(f"{epochs} epochs ({result.step} steps) in {trained - loaded:.1f} s, compilation included{stop}")  # fmt: skip
    for name, scores in final.items():
        print(f"{name + ':':6} {_format(scores)}")
    if check is not None:
        print(f"gradcheck on {min(GRADCHECK_ROWS, len(xt))} training rows: {'OK' if check.ok else 'MISMATCH'}")  # fmt: skip
    print(f"wrote {out}/: {', '.join(files)}")
    return 0


def _distributed_mesh(args: argparse.Namespace):
    """``--distributed``: join the multi-process run if one is described, then a data mesh."""
    if not args.distributed:
        if args.coordinator or args.num_processes or args.process_id is not None:
            raise ValueError("--coordinator, --num-processes and --process-id need --distributed")
        return None
    if (
        args.coordinator
        or args.num_processes
        or args.process_id is not None
        or ENV_COORDINATOR in os.environ
    ):
        initialize(args.coordinator, args.num_processes, args.process_id)
    mesh = data_parallel_mesh()
    size = check_mesh(mesh)
    if args.batch_size % size:
        raise ValueError(f"--batch-size {args.batch_size} must be a multiple of the {size} devices")
    return mesh


# ---------------------------------------------------------------- predict


def load_trained(path: Path):
    """``(file, Checkpoint)`` of ``train``'s output directory (or its ``model.npz``)."""
    file = path / CHECKPOINT if path.is_dir() else path
    ck = load_checkpoint(file)
    meta, d = ck.metadata, ck.model.sizes[0]
    keys = ("task", "features", "classes", "loss", "x_mean", "x_scale", "y_mean", "y_scale")
    if not isinstance(meta, dict) or any(k not in meta for k in keys):
        raise CheckpointError(f"checkpoint {file}: no preprocessing metadata (not written by 'jaxmlp train')")  # fmt: skip
    if not len(meta["features"]) == len(meta["x_mean"]) == len(meta["x_scale"]) == d:
        raise CheckpointError(f"checkpoint {file}: its preprocessing does not fit {d} inputs")
    return file, ck


def cmd_predict(args: argparse.Namespace) -> int:
    """``jaxmlp predict``: the saved preprocessing, the model, labels or values as CSV."""
    file, ck = load_trained(args.checkpoint)
    meta, model = ck.metadata, ck.model
    table = read_csv(args.data)
    features = meta["features"]
    if missing := [f for f in features if f not in table.header]:
        raise ValueError(f"{args.data}: lacks the feature columns {missing} that {file} was trained on (it reads {features})")  # fmt: skip
    x = np.stack([table.numbers(f) for f in features], axis=1)
    x = ((x - np.asarray(meta["x_mean"])) / np.asarray(meta["x_scale"])).astype(model.param_dtype)
    out = np.asarray(jax.jit(model.apply)(ck.params, x), np.float64)
    truth = table.column(meta["target"]) if meta.get("target") in table.header else None
    if meta["task"] == "classification":
        classes = meta["classes"]
        p = probabilities(out, model.output_activation, get_loss(meta["loss"]).logits)
        labels = [classes[i] for i in p.argmax(axis=1)]
        header = ["prediction", *(f"prob_{c}" for c in classes)]
        rows = [[label, *(f"{v:.6g}" for v in row)] for label, row in zip(labels, p, strict=True)]
        if truth is not None:
            hits = np.mean([a == _class_name(b) for a, b in zip(labels, truth, strict=True)])
            print(f"jaxmlp: accuracy {hits:.4f} against column {meta['target']!r}", file=sys.stderr)  # fmt: skip
    else:
        pred = out * np.asarray(meta["y_scale"]) + np.asarray(meta["y_mean"])
        header = ["prediction"] if pred.shape[1] == 1 else [f"prediction_{j + 1}" for j in range(pred.shape[1])]  # fmt: skip
        rows = [[repr(float(v)) for v in row] for row in pred]
        if truth is not None and all(map(_is_number, truth)):
            y = np.asarray(truth, np.float64).reshape(-1, 1)
            rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
            print(f"jaxmlp: rmse {rmse:.4g} against column {meta['target']!r}", file=sys.stderr)
    if args.out is None:
        _write_rows(sys.stdout, header, rows)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            _write_rows(f, header, rows)
        print(f"jaxmlp: wrote {len(rows)} predictions to {args.out}", file=sys.stderr)
    return 0


def _write_rows(f, header: list[str], rows: list[list[str]]) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


# ---------------------------------------------------------------- gradcheck and summary


def _random_targets(loss: Loss, key: jax.Array, n: int, k: int, dtype: str) -> jax.Array:
    if loss.targets == "classes":
        return jax.random.randint(key, (n,), 0, k)
    if loss.targets == "binary":
        return jax.random.bernoulli(key, 0.5, (n, k)).astype(dtype)
    return jax.random.normal(key, (n, k), dtype)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """``jaxmlp gradcheck``: a random network and batch; exit status 1 on disagreement."""
    sizes = _sizes(args, (8,))
    loss = get_loss(args.loss)
    with jax.enable_x64(args.dtype == "float64"):
        model = MLP(sizes, args.activation, args.output_activation or "identity", param_dtype=args.dtype)  # fmt: skip
        k_init, k_bias, k_x, k_y, k_dirs = jax.random.split(jax.random.key(args.seed), 5)
        # Non-zero biases: a backward pass that mishandles them cannot hide behind zeros.
        params = tuple(
            p._replace(b=p.b + 0.1 * jax.random.normal(k, p.b.shape, p.b.dtype))
            for p, k in zip(model.init(k_init), jax.random.split(k_bias, model.num_layers), strict=True)
        )  # fmt: skip
        x = jax.random.normal(k_x, (args.n, sizes[0]), args.dtype)
        y = _random_targets(loss, k_y, args.n, sizes[-1], args.dtype)
        grad_fn = value_and_grad(model, loss, method="manual", l2=args.l2)
        report = gradcheck(model, params, x, y, loss, l2=args.l2, grad_fn=grad_fn, key=k_dirs)
    print(report)
    if args.plot is not None:
        plot, why = _import_plot()
        if plot is None:
            raise ImportError(f"--plot: {why}")
        plot.save_figure(plot.plot_gradcheck(report), args.plot)
        print(f"wrote {args.plot}")
    if not report.ok:
        return _fail("gradcheck: the manual gradient disagrees with its references", 1)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """``jaxmlp summary``: a checkpoint's model, or one described by flags."""
    if args.checkpoint is None:
        model = MLP(_sizes(args, (4,)), args.activation, args.output_activation or "identity")
        print(model.summary())
        return 0
    if (args.sizes, args.inputs, args.hidden, args.outputs, args.output_activation) != (None,) * 5:
        raise UsageError("--checkpoint describes the model; drop the shape flags")
    file = args.checkpoint / CHECKPOINT if args.checkpoint.is_dir() else args.checkpoint
    ck = load_checkpoint(file)
    print(ck.model.summary())
    meta = ck.metadata if isinstance(ck.metadata, dict) else {}
    for key in ("task", "source", "target", "features", "classes", "loss"):
        if meta.get(key) is not None:
            print(f"{key}: {meta[key]}")
    return 0
