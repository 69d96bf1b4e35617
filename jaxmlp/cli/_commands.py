"""``jaxmlp predict``, ``gradcheck`` and ``summary``: a trained model at work, and its checks."""

from __future__ import annotations

import argparse
import csv
import sys

import jax
import numpy as np

from jaxmlp._checkpoint.files import load_checkpoint
from jaxmlp._core.backprop import value_and_grad
from jaxmlp._core.gradcheck import gradcheck
from jaxmlp._core.losses import Loss, get_loss
from jaxmlp._core.mlp import Dense
from jaxmlp.cli import _data as _cli_data
from jaxmlp.cli._data import (
    CHECKPOINT,
    _class_name,
    _is_number,
    build_model,
    load_trained,
    probabilities,
    read_csv,
)
from jaxmlp.cli._errors import UsageError, _fail

# ---------------------------------------------------------------- predict


def cmd_predict(args: argparse.Namespace) -> int:
    """``jaxmlp predict``: the saved preprocessing, the model, labels or values as CSV; the
    ``--keep`` columns (an ``id``, say) come first, copied from the input as they are."""
    file, ck = load_trained(args.checkpoint)
    meta, model = ck.metadata, ck.model
    table = read_csv(args.data)
    if missing := [c for c in args.keep if c not in table.header]:
        raise ValueError(f"--keep: {args.data} has no column {missing[0]!r}; its columns are {table.header}")  # fmt: skip
    kept = [table.column(c) for c in args.keep]
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
    if clash := [c for c in args.keep if c in header]:
        raise ValueError(f"--keep: column {clash[0]!r} would repeat an output column's name")
    header = [*args.keep, *header]
    rows = [[*(column[i] for column in kept), *row] for i, row in enumerate(rows)]
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


def _sizes(args: argparse.Namespace, hidden: tuple[int, ...]) -> tuple[int, ...]:
    if args.sizes is not None:
        if (args.inputs, args.hidden, args.outputs) != (None, None, None):
            raise UsageError("give either --sizes or --inputs/--hidden/--outputs")
        return args.sizes
    inner = hidden if args.hidden is None else args.hidden
    return (args.inputs or 3, *inner, args.outputs or 2)


def _random_targets(loss: Loss, key: jax.Array, n: int, k: int, dtype: str) -> jax.Array:
    if loss.targets == "classes":
        return jax.random.randint(key, (n,), 0, k)
    if loss.targets == "binary":
        return jax.random.bernoulli(key, 0.5, (n, k)).astype(dtype)
    return jax.random.normal(key, (n, k), dtype)


def _perturbed(params: tuple, key: jax.Array) -> tuple:
    """Non-zero biases, and every other entry (a layer norm's scale of ones and offset of
    zeros, ...) moved off its initial values: a backward pass that mishandles them cannot hide
    behind zeros or ones. The weights are random already."""
    out = []
    for p, k in zip(params, jax.random.split(key, len(params)), strict=True):
        if isinstance(p, Dense):
            out.append(p._replace(b=p.b + 0.1 * jax.random.normal(k, p.b.shape, p.b.dtype)))
            continue
        leaves, treedef = jax.tree.flatten(p)
        keys = jax.random.split(k, len(leaves))
        moved = [a + 0.1 * jax.random.normal(kk, a.shape, a.dtype) for a, kk in zip(leaves, keys, strict=True)]  # fmt: skip
        out.append(jax.tree.unflatten(treedef, moved))
    return tuple(out)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """``jaxmlp gradcheck``: a random network and batch; exit status 1 on disagreement."""
    sizes = _sizes(args, (8,))
    loss = get_loss(args.loss)
    with jax.enable_x64(args.dtype == "float64"):
        model = build_model(args, sizes, args.output_activation or "identity", args.dtype)
        k_init, k_bias, k_x, k_y, k_dirs = jax.random.split(jax.random.key(args.seed), 5)
        params = _perturbed(model.init(k_init), k_bias)
        x = jax.random.normal(k_x, (args.n, sizes[0]), args.dtype)
        y = _random_targets(loss, k_y, args.n, sizes[-1], args.dtype)
        # With dropout: training mode, every gradient and finite difference with the same masks.
        train_key = jax.random.fold_in(jax.random.key(args.seed), 1) if model.dropout else None
        grad_fn = value_and_grad(model, loss, method="manual", l2=args.l2, l1=args.l1)
        report = gradcheck(model, params, x, y, loss, l2=args.l2, l1=args.l1, grad_fn=grad_fn,
                           train_key=train_key, key=k_dirs)  # fmt: skip
    if extra := _cli_data.pieces(model):
        print(f"model {model.sizes}: {'; '.join(extra)}")
    if train_key is not None:
        print(f"training mode: dropout {model.dropout:g} with masks from a fixed key (--seed {args.seed})")  # fmt: skip
    print(report)
    if args.plot is not None:
        plot, why = _cli_data._import_plot()
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
        model = build_model(args, _sizes(args, (4,)), args.output_activation or "identity")
        print(model.summary())
        return 0
    shape = (args.sizes, args.inputs, args.hidden, args.outputs, args.output_activation)
    more = (args.initializer, args.norm, args.dropout, args.residual, args.features)
    if (*shape, *more) != (None,) * 10:
        raise UsageError("--checkpoint describes the model; drop the shape and network flags")
    file = args.checkpoint / CHECKPOINT if args.checkpoint.is_dir() else args.checkpoint
    ck = load_checkpoint(file)
    print(ck.model.summary())
    meta = ck.metadata if isinstance(ck.metadata, dict) else {}
    for key in ("task", "source", "target", "features", "classes", "loss"):
        if meta.get(key) is not None:
            print(f"{key}: {meta[key]}")
    return 0
