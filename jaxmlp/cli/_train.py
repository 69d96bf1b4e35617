"""``jaxmlp train``: load, split, standardise, fit, evaluate, write the files, plot.

The standardisation of the inputs (and, for regression, of the target) is fitted on the
training split only and stored with the label mapping and feature names in the checkpoint's
metadata, which ``predict`` reads back.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmlp import EarlyStopping, __version__, data, fit
from jaxmlp._checkpoint.files import save_checkpoint
from jaxmlp._core.gradcheck import gradcheck
from jaxmlp._core.metrics import evaluate
from jaxmlp._distributed import ENV_COORDINATOR, check_mesh, data_parallel_mesh, initialize, local
from jaxmlp.cli import _data as _cli_data
from jaxmlp.cli._data import (
    CHECKPOINT,
    build_model,
    can_fold_inputs,
    choose_head,
    encode,
    fold_preprocessing,
    load_dataset,
    pieces,
    probabilities,
)
from jaxmlp.errors import DivergenceError

GRADCHECK_ROWS = 8  # training examples that train's gradient check (and its plot) uses


@functools.lru_cache(maxsize=16)
def _optimizer(name: str, lr: float):
    """One optax object per (name, lr): ``fit`` caches its compiled programs on it."""
    import optax

    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    return getattr(optax, name)(lr)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate(model, loss, params, x, y):
    """The data loss, the metric and the outputs as one program (run eagerly, each of their
    operations would compile a program of its own)."""
    value, metric = evaluate(model, params=params, x=x, y=y, loss=loss)
    return value, metric, model.apply(params, x)


def _scores(model, head, params, ds, rows, x, y, y_std) -> dict[str, float]:
    """Data loss (standardised units) and accuracy, or R^2, RMSE and MAE in the target's units."""
    value, metric, out = _evaluate(model, head.loss, params, x, y)
    out = np.asarray(out)
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
    plot, why = _cli_data._import_plot()  # looked up at call time: tests hide matplotlib there
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
        # Draw the plane in the data's units: fold the standardisation into the weights. Input
        # features (or a skip around the first layer) read the standardised inputs themselves:
        # then the plane is drawn in standardised units.
        raw_y = ds.task == "regression" and model.output_activation == "identity"
        x, labels = ds.x, tuple(f.replace("$", r"\$") for f in ds.features)  # no mathtext
        x_stats = [x_std.mean[0], x_std.scale[0]]
        if why := can_fold_inputs(model):
            print(f"jaxmlp: note: the input-plane plots show standardised inputs ({why})", file=sys.stderr)  # fmt: skip
            x, x_stats = np.asarray(x_std.transform(ds.x), np.float64), [None, None]
            labels = tuple(f"{f} (standardised)" for f in labels)
        y_stats = [y_std.mean[0], y_std.scale[0]] if raw_y else []
        folded = fold_preprocessing(model, result.params, *x_stats, *y_stats)
        y = ds.y if ds.task == "classification" or raw_y else np.asarray(y_std.transform(ds.y))
        test = {"x_test": x[val], "y_test": y[val]} if len(val) else {}
        name = "decision_boundary.png" if ds.task == "classification" else "prediction_surface.png"
        save(plot.plot_decision_boundary(model, folded, x[train], y[train], task=ds.task, axis_labels=labels, **test), name)  # fmt: skip
        if model.num_layers > 1:
            save(plot.plot_neurons(model, folded, x), "neurons.png")
    save(plot.plot_gradcheck(report), "gradcheck.png")
    edges = sum(i * o for i, o in model.layer_shapes())
    if max(model.sizes[0], *model.widths()) <= plot.MAX_UNITS and edges <= plot.MAX_EDGES:
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
    model = build_model(args, (ds.x.shape[1], *args.hidden, head.outputs), head.output_activation)
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
            validation_data=validation, progress=not args.no_progress, l2=args.l2, l1=args.l1,
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
        # With dropout, training mode with a fixed key: every reference sees the same masks.
        train_key = jax.random.fold_in(jax.random.key(args.seed), 1) if model.dropout else None
        check = gradcheck(model, result.params, xt[:GRADCHECK_ROWS], yt[:GRADCHECK_ROWS], head.loss,
                          l2=args.l2, l1=args.l1, train_key=train_key)  # fmt: skip
        files += _train_plots(out, ds, model, head, result, (train, val), x_std, y_std, check)
    done = time.perf_counter()

    epochs = len(result.history["loss"])
    summary = {
        "source": ds.source, "task": ds.task, "target": ds.target, "features": ds.features,
        "classes": ds.classes, "rows": {"train": len(train), "val": len(val)},
        "model": model.to_dict(), "pieces": pieces(model), "num_params": model.count_params(),
        "loss": head.loss.name,
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

    acts = "; ".join(["/".join(model.activations), *pieces(model)])
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
