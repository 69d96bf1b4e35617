"""The data side of the ``jaxmlp`` command line: CSV files, datasets, the model's head.

``train`` reads its rows here (a built-in dataset or a CSV with a header), decides the task and
the label mapping, and picks the loss's output units and target encoding; ``predict`` reads a
checkpoint's preprocessing back and turns outputs into class probabilities. This module sits
below the other CLI modules, so the helpers they share (the optional import of the plots) live
here as well; the usage error and the one-line error report live in ``_errors``.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from jaxmlp import data
from jaxmlp._checkpoint.files import load_checkpoint
from jaxmlp._core.layers import Features
from jaxmlp._core.losses import Loss, get_loss
from jaxmlp._core.mlp import MLP, Dense
from jaxmlp.cli._errors import UsageError, _message
from jaxmlp.errors import CheckpointError

# An integer-valued CSV target is read as class labels when it has at most this many values
# (and at most half as many as there are rows); otherwise it is a regression target.
MAX_AUTO_CLASSES = 20
CHECKPOINT = "model.npz"

# ---------------------------------------------------------------- shared by every command


def _import_plot():
    """``jaxmlp.plot``, or ``None`` and the reason (matplotlib is an optional extra)."""
    try:
        from jaxmlp import plot
    except ImportError as err:
        return None, _message(err)
    return plot, None


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
        if values is not None and np.all(np.isfinite(values)):
            return values
        for cell, line in zip(cells, self.lines, strict=True):
            if not (_is_number(cell) and math.isfinite(float(cell))):
                raise ValueError(
                    f"{self.path}: line {line}, column {name!r}: expected a finite number, got {cell!r}"
                )
        # Every cell is a finite float to Python although NumPy refused the column as a whole.
        return np.array([float(cell) for cell in cells], np.float64)


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


def fold_preprocessing(
    model: MLP, params, x_mean=None, x_scale=None, y_mean=None, y_scale=None
) -> tuple:
    """Parameters that take raw inputs (given ``x_*``) and give raw targets (given ``y_*``)
    directly.

    ``((x - m) / s) @ w + b = x @ (w / s^T) + (b - (m / s) @ w)`` on the first affine layer,
    and ``(z s_y + m_y)`` on the last one (valid for an identity output); the plots use this to
    draw the input plane in the data's own units. The inputs fold only when the first affine
    layer alone reads them: with input features or a residual connection around the first
    hidden layer, the network reads the standardised inputs elsewhere too (a ``ValueError``
    says which; see :func:`can_fold_inputs`). Entries other than the two ``Dense`` (layer
    norms, ...) are returned as they are.
    """
    slots = model.affine_slots()
    first, last = slots[0], slots[-1]
    # the two Dense on the host in float64; they become device arrays again at the end
    host = {i: (np.asarray(params[i].w, np.float64), np.asarray(params[i].b, np.float64)) for i in {first, last}}  # fmt: skip
    if x_mean is not None:
        if why := can_fold_inputs(model):
            raise ValueError(f"fold_preprocessing: cannot fold the inputs' standardisation: {why}")
        w, b = host[first]
        m, s = np.asarray(x_mean, np.float64), np.asarray(x_scale, np.float64)
        host[first] = (w / s[:, None], b - (m / s) @ w)
    if y_mean is not None:
        w, b = host[last]
        ym, ys = np.asarray(y_mean, np.float64), np.asarray(y_scale, np.float64)
        host[last] = (w * ys[None, :], b * ys + ym)
    out = list(params)
    dtype = params[first].w.dtype
    for i, (w, b) in host.items():
        out[i] = Dense(jax.numpy.asarray(w, dtype), jax.numpy.asarray(b, dtype))
    return tuple(out)


# ---------------------------------------------------------------- the model from flags

# MLP's argument names as the flags that set them, for the error messages.
_FLAG_OF = {"activation": "--activation", "output_activation": "--output-activation",
            "initializer": "--initializer", "norm": "--norm", "dropout": "--dropout",
            "residual": "--residual", "features": "--features"}  # fmt: skip


def build_model(
    args: argparse.Namespace, sizes: tuple[int, ...], output_activation: str, dtype: str = "float32"
) -> MLP:
    """The :class:`MLP` the network flags describe (``--activation``, ``--initializer``,
    ``--norm``, ``--dropout``, ``--residual``, ``--features``); an impossible combination is a
    usage error naming its flag."""
    from jaxmlp.cli import feature_map

    kw = {
        "initializer": args.initializer or "auto",
        "norm": None if args.norm in (None, "none") else args.norm,
        "dropout": args.dropout or 0.0,
        "residual": bool(args.residual),
        "features": feature_map(args.features),
    }
    names = kw["features"]
    if isinstance(names, tuple) and (need := Features(names).n_inputs()) > sizes[0]:
        raise UsageError(
            f"--features: {','.join(names)} reads input x{need}, but there are {sizes[0]} inputs "
            f"(x1 to x{sizes[0]})"
        )
    try:
        model = MLP(sizes, args.activation, output_activation, param_dtype=dtype, **kw)
    except (ValueError, TypeError) as err:
        text = str(err)
        name, _, rest = text.partition(": ")
        flag = _FLAG_OF.get(name.split("[")[0])
        raise UsageError(f"{flag}: {rest}" if flag else text) from None
    if model.residual and not any(model.has_skip(l) for l in range(model.num_layers - 1)):
        widths = ",".join(map(str, model.widths()))
        raise UsageError(
            f"--residual: no hidden layer keeps its width (layer widths {widths}, the input "
            "after any --features), so no layer would carry a skip; use equal consecutive "
            "widths, e.g. --hidden 32,32"
        )
    return model


def pieces(model: MLP) -> list[str]:
    """The model's pieces beyond the plain stack, one phrase each (empty for a plain one)."""
    out = []
    if model.feature_layer is not None:
        out.append(model.feature_layer.describe())
    if model.norm is not None:
        out.append(model.norm if isinstance(model.norm, str) else model.norm.describe())
    if model.dropout:
        out.append(f"dropout {model.dropout:g}")
    skips = [str(l + 1) for l in range(model.num_layers - 1) if model.has_skip(l)]
    if skips:
        out.append(f"residual on hidden layer{'s' if len(skips) > 1 else ''} {', '.join(skips)}")
    if model.initializer != "auto":
        out.append(f"initializer {model.initializer}")
    return out


def can_fold_inputs(model: MLP) -> str | None:
    """``None`` when the inputs' standardisation folds into the first affine layer's weights,
    else why it cannot."""
    if model.feature_layer is not None:
        return "the input features (--features) read the standardised inputs"
    if model.has_skip(0):
        return "the first hidden layer's residual connection adds the standardised inputs"
    return None


# ---------------------------------------------------------------- a trained model


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
