"""Training on the host side: ``fit``, early stopping, checkpoints and resume.

``fit`` checks its inputs eagerly, then calls the fused multi-epoch program of
``jaxmlp.engine`` until the epochs are done; the host syncs only between calls (progress bar,
divergence and early-stopping checks, checkpoints).

What triggers a compile: a new model description, loss, optimizer *object*, method, ``l2``,
batch size, ``drop_last``/``shuffle``/``epochs_per_call``/early stopping on or off, a mesh, a new
number of rows or features, or validation data of a new size. Everything else (the data's
values, the key, ``epochs``, ``patience``, ``min_delta``) is a run-time argument.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxmlp.backprop import _check_l2, _check_method, _check_model_loss, check_targets
from jaxmlp.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from jaxmlp.distributed import check_mesh, local, put, replicated
from jaxmlp.engine import (
    TrainState,
    _Carry,
    _check_optimizer,
    _epochs_program,
    _Spec,
    call_permutations,
    fresh_carry,
    order_seed,
)
from jaxmlp.errors import CheckpointError, DivergenceError, JaxmlpWarning
from jaxmlp.losses import Loss
from jaxmlp.metrics import metric_name
from jaxmlp.mlp import (
    MLP,
    Params,
    _check_key,
    as_array,
    as_batch,
    check_finite_params,
    check_params,
    nonfinite,
)


class EarlyStopping(NamedTuple):
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs.

    The monitored loss is the validation loss when validation data is given, else the
    training loss. With ``restore_best`` the result holds the best epoch's parameters.
    """

    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
        params, opt_state: the final (or, with early stopping, best) state.
        history: per-epoch lists: ``loss`` (training objective, l2 included), and with
            validation data ``val_loss`` (data loss) and ``val_metric`` (accuracy or R^2).
        step: optimizer steps taken.
        best_epoch: 1-based epoch of the best monitored loss (early stopping), else None.
        stopped_epoch: 1-based epoch at which early stopping ended the run, else None.
        metric: the name of ``val_metric`` (``"accuracy"`` or ``"r2"``).
    """

    params: Params
    opt_state: Any
    history: dict[str, list[float]]
    step: int
    best_epoch: int | None
    stopped_epoch: int | None
    metric: str


def _check_int(value: Any, argname: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argname}: must be >= {minimum}, got {value}")
    return int(value)


def prepare_data(
    model: MLP, loss: Loss, params: Params, x: Any, y: Any, names=("x", "y"), finite_params=False
):
    """Eager checks of a data set (shape, dtype, NaN/Inf, label range); returns it prepared.

    Returns ``x`` as ``(n, sizes[0])`` in the parameters' dtype and ``y`` in the form the
    loss reads. Raises ``ValueError``/``TypeError`` naming the argument. With
    ``finite_params`` the parameters' NaN/Inf check runs in the same compiled call.
    """
    xn, yn = names
    x_arr = as_array(x, xn)
    if x_arr.ndim != 2:
        raise ValueError(f"{xn}: expected shape (n, {model.sizes[0]}), got {tuple(x_arr.shape)}")
    if x_arr.shape[0] == 0:
        raise ValueError(f"{xn}: empty data (0 rows)")
    xb, _ = as_batch(model, x_arr, params, xn)
    n = xb.shape[0]
    y_arr = as_array(y, yn)
    if y_arr.ndim >= 1 and y_arr.shape[0] != n:
        raise ValueError(f"{yn}: {y_arr.shape[0]} rows, but {xn} has {n} rows")
    yb = check_targets(model, loss, y_arr, n, xb.dtype, yn)
    if finite_params:
        bad_x, bad_y = check_finite_params(params, "params", xb, yb)
    else:
        bad_x, bad_y = nonfinite(xb, yb)
    if bad_x:
        raise ValueError(f"{xn}: contains NaN or Inf")
    if bad_y:
        raise ValueError(f"{yn}: contains NaN or Inf")
    k = model.sizes[-1]
    if loss.targets == "classes" and yb.ndim == 1:
        # On the host: jnp would first narrow int64 labels to int32, wrapping 2**32 to 0.
        labels = np.asarray(yb)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= k:
            raise ValueError(f"{yn}: class labels must lie in [0, {k}), got labels in [{lo}, {hi}]")
    elif loss.targets in ("classes", "binary") and (bool(jnp.any(yb < 0)) or bool(jnp.any(yb > 1))):
        raise ValueError(f"{yn}: {loss.name} targets must lie in [0, 1]")
    return xb, yb


def prepare_validation(model: MLP, loss: Loss, params: Params, validation_data: Any):
    """Checks ``validation_data`` like the training data; ``(None, None)`` without it."""
    if validation_data is None:
        return None, None
    if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
        raise TypeError("validation_data: expected a pair (x_val, y_val)")
    return prepare_data(
        model, loss, params, *validation_data, names=("validation_data[0]", "validation_data[1]")
    )


def clip_batch_size(batch_size: int, n: int) -> int:
    """``batch_size`` clipped to the ``n`` rows, with a warning (as scikit-learn does)."""
    if batch_size > n:
        msg = f"batch_size={batch_size} exceeds the {n} rows; using {n}"
        warnings.warn(msg, JaxmlpWarning, stacklevel=3)  # points at the caller of fit
        return n
    return batch_size


# Work between two host syncs of fit: enough that the per-call overhead (argument checks,
# transfers, reading the epoch outputs: a few ms) stays small next to the compiled work.
_FLOPS_PER_CALL = 16e9
_MAX_EPOCHS_PER_CALL = 64
_PERM_BYTES_PER_CALL = 64 << 20


def _auto_epochs_per_call(model: MLP, n_batches: int, batch_size: int, members: int = 1) -> int:
    """Epochs per compiled call: about 16 GFLOP of training work, at most 64 epochs and 64 MiB
    of row orders, rounded down to a power of two (so that few programs are ever compiled).

    It does not depend on ``epochs``: a call skips the epochs past the end on the device, so
    fits of any length share one compiled program.
    """
    flops = 6 * batch_size * n_batches * members * sum(i * o for i, o in model.layer_shapes())
    perm_bytes = 4 * batch_size * n_batches * members
    e = min(
        _MAX_EPOCHS_PER_CALL,
        int(_FLOPS_PER_CALL // max(flops, 1)),
        _PERM_BYTES_PER_CALL // max(perm_bytes, 1),
    )
    return 1 << (max(e, 1).bit_length() - 1)


def fit(
    model: MLP,
    params: Params,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    loss: str | Loss,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    method: str = "manual",
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    early_stopping: EarlyStopping | None = None,
    progress: bool = True,
    l2: float = 0.0,
    sample_weight: jax.typing.ArrayLike | None = None,
    drop_last: bool = False,
    epochs_per_call: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    mesh: Mesh | None = None,
) -> FitResult:
    """Trains ``params`` with minibatch gradient steps, whole epochs fused on the device.

    Args:
        model, params: the network and its starting parameters (left untouched: donation
            only ever consumes copies).
        x: ``(n, sizes[0])``; y: targets as ``loss`` expects (``(n,)`` labels, ``(n, k)``).
        loss: a loss name or ``jaxmlp.Loss``.
        key: PRNG key; epoch ``e``'s row order depends only on ``(key, e)``
            (:func:`jaxmlp.engine.epoch_permutations`).
        optimizer: any optax ``GradientTransformation``; default ``optax.sgd(0.01)`` (eq. 17).
        epochs: total epochs; batch_size: rows per step (clipped to ``n`` with a warning).
        method: ``"manual"`` or ``"autodiff"`` gradients.
        shuffle: reshuffle every epoch; drop_last: drop the last partial batch instead of
            padding it (padded rows carry ``sample_weight`` 0, so no data is lost).
        validation_data: ``(x_val, y_val)``, evaluated after every epoch on the device.
        early_stopping: an :class:`EarlyStopping`, monitoring ``val_loss`` (else ``loss``).
        progress: show a tqdm progress bar.
        l2: weight decay term ``(l2/2) sum ||w||^2`` in the objective.
        sample_weight: ``(n,)`` non-negative weights per row.
        epochs_per_call: epochs per compiled call (host syncs between calls); default: about
            16 GFLOP of work per call, at most 64 epochs (a divisor of ``checkpoint_every``).
        checkpoint_dir: write ``ckpt_{epoch:06d}.npz`` there every ``checkpoint_every``
            epochs and at the end, keeping the newest ``keep``; on divergence the last finite
            state goes to ``diverged.npz`` there.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (if any), with
            ``epochs`` counting the total. Parameters, optimizer state, history, early-stopping
            state and the shuffling key (the stored one) resume exactly.
        mesh: data parallelism: a ``jax.sharding.Mesh`` with a ``"data"`` axis (see
            ``data_parallel_mesh``); each minibatch's rows are split across it (``batch_size``
            must divide evenly), parameters and optimizer state are replicated. In a
            multi-process run every process passes the same data and key; process 0 writes
            the checkpoints.

    Raises:
        ValueError/TypeError: bad arguments, checked before anything compiles.
        DivergenceError: the loss became NaN/Inf; it carries the last finite state.
    """
    lossf = _check_model_loss(model, loss)
    _check_method(method)
    l2 = _check_l2(l2)
    optimizer = _check_optimizer(optimizer)
    key = _check_key(key)
    epochs = _check_int(epochs, "epochs", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    check_params(model, params)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint_dir: expected a str or os.PathLike, got {type(checkpoint_dir).__name__}"
        )
    xb, yb = prepare_data(model, lossf, params, x, y, finite_params=True)
    n = xb.shape[0]
    batch_size = clip_batch_size(batch_size, n)
    sw = None  # every row weighs 1
    if sample_weight is not None:
        sw = as_array(sample_weight, "sample_weight")
        if jnp.issubdtype(sw.dtype, jnp.complexfloating):
            raise TypeError(f"sample_weight: dtype {sw.dtype}, expected a real array")
        sw = jnp.asarray(sw, xb.dtype)
        if sw.shape != (n,):
            raise ValueError(f"sample_weight: expected shape ({n},), got {tuple(sw.shape)}")
        if nonfinite(sw)[0] or bool(jnp.any(sw < 0)):
            raise ValueError("sample_weight: must be finite and non-negative")
    xv, yv = prepare_validation(model, lossf, params, validation_data)
    n_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
    keep = _check_int(keep, "keep", 1)
    if resume and checkpoint_dir is None:
        raise ValueError("resume: needs checkpoint_dir")
    if epochs_per_call is None:
        epochs_per_call = _auto_epochs_per_call(model, n_batches, batch_size)
        if checkpoint_dir is not None:
            epochs_per_call = max(
                d for d in range(1, epochs_per_call + 1) if checkpoint_every % d == 0
            )
    epochs_per_call = _check_int(epochs_per_call, "epochs_per_call", 1)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping: expected a jaxmlp.EarlyStopping, got {type(early_stopping).__name__}"
        )
    track_best = early_stopping is not None and early_stopping.restore_best
    patience = early_stopping.patience if early_stopping is not None else np.iinfo(np.int32).max
    min_delta = early_stopping.min_delta if early_stopping is not None else 0.0
    patience = np.int32(_check_int(patience, "early_stopping.patience", 1))
    real = isinstance(min_delta, (int, float, np.integer, np.floating))
    if isinstance(min_delta, bool) or not (real and math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(
            f"early_stopping.min_delta: expected a finite number >= 0, got {min_delta!r}"
        )
    if mesh is not None:
        check_mesh(mesh, batch_size)
    spec = _Spec(
        model, lossf, optimizer, method, l2, batch_size, bool(drop_last), bool(shuffle),
        epochs_per_call, track_best, validation_data is not None, mesh,
    )  # fmt: skip
    program = _epochs_program(spec)

    dtype = xb.dtype
    carry = fresh_carry(params, optimizer, dtype, track_best)
    min_delta = np.asarray(min_delta, dtype)
    has_val = validation_data is not None
    history: dict[str, list[float]] = {"loss": []}
    if has_val:
        history.update(val_loss=[], val_metric=[])
    best_epoch = stopped_epoch = None
    done, stopped, step = 0, False, 0
    if resume:
        restored = _resume(checkpoint_dir, model, optimizer, carry, track_best)
        if restored is not None:
            carry, key, done, history, best_epoch = restored
            stopped, step = bool(carry.stopped), int(carry.state.step)
    seed = order_seed(key)
    if mesh is not None:
        # Global, replicated inputs: every process holds the same data and key.
        carry, xb, yb, sw, key, xv, yv = put((carry, xb, yb, sw, key, xv, yv), replicated(mesh))

    from tqdm.auto import tqdm

    with tqdm(
        total=epochs, initial=min(done, epochs), disable=not progress, unit="epoch", desc="fit"
    ) as bar:
        while done < epochs and not stopped:
            # With checkpoints, a call never runs past the next multiple of checkpoint_every.
            limit = epochs
            if checkpoint_dir is not None:
                limit = min(epochs, (done // checkpoint_every + 1) * checkpoint_every)
            perms = call_permutations(spec, seed, done, limit, n)
            if mesh is not None and perms is not None:
                perms = put(perms, replicated(mesh))
            carry, out = program(carry, xb, yb, sw, perms, xv, yv, done, limit, patience, min_delta)
            # One read per call: the epochs' outputs and the flags and counters the loop needs.
            (ran, tl, vl, vm, improved), flags = _host((out, _flags(carry)))
            stopped, diverged, bad_epoch, bad_step, step = flags
            if diverged:
                bad_epoch, bad_step = int(bad_epoch) + 1, int(bad_step)
                if checkpoint_dir is not None:
                    _save(Path(checkpoint_dir) / "diverged.npz", model, carry, key, done, history,
                          best_epoch, {"diverged_epoch": bad_epoch, "diverged_step": bad_step})  # fmt: skip
                raise DivergenceError(
                    f"loss became non-finite in epoch {bad_epoch}, step {bad_step}; "
                    f".params and .opt_state hold the last finite state",
                    epoch=bad_epoch,
                    step=bad_step,
                    params=carry.state.params,
                    opt_state=carry.state.opt_state,
                    history=_history_upto(history, ran, tl, vl, vm, bad_epoch - 1 - done),
                )
            for i in np.flatnonzero(ran):
                history["loss"].append(float(tl[i]))
                if has_val:
                    history["val_loss"].append(float(vl[i]))
                    history["val_metric"].append(float(vm[i]))
                if improved[i]:
                    best_epoch = done + int(i) + 1
            n_ran = int(np.sum(ran))
            if n_ran == 0:
                break
            done += n_ran
            finished = done >= epochs or stopped
            if checkpoint_dir is not None and (finished or done % checkpoint_every == 0):
                _save(
                    checkpoint_path(checkpoint_dir, done),
                    model,
                    carry,
                    key,
                    done,
                    history,
                    best_epoch,
                )
                prune_checkpoints(checkpoint_dir, keep)
            bar.update(n_ran)
            post = {"loss": f"{history['loss'][-1]:.4g}"}
            if has_val:
                post.update(
                    val_loss=f"{history['val_loss'][-1]:.4g}",
                    val=f"{history['val_metric'][-1]:.4g}",
                )
            bar.set_postfix(post)
            if stopped:
                stopped_epoch = done
    final = carry.state
    result_params = carry.best_params if track_best else final.params
    return FitResult(
        result_params,
        final.opt_state,
        history,
        int(step),
        best_epoch if early_stopping is not None else None,
        stopped_epoch,
        metric_name(lossf),
    )


def _host(tree):
    """NumPy copies of (replicated) device arrays, also when they span several processes; all
    leaves in one transfer."""
    return jax.tree.map(np.asarray, jax.device_get(jax.tree.map(local, tree)))


def _flags(carry: _Carry):
    return carry.stopped, carry.diverged, carry.bad_epoch, carry.bad_step, carry.state.step


def _save(path, model, carry: _Carry, key, done, history, best_epoch, info=None) -> None:
    if jax.process_index() != 0:
        return
    carry = jax.tree.map(local, carry)
    key = local(key)
    extra = {
        "key": key,
        "best_score": carry.best_score,
        "wait": carry.wait,
        "stopped": carry.stopped,
    }
    if carry.best_params is not None:
        extra["best_params"] = carry.best_params
    meta = {"epoch": done, "history": history, "best_epoch": best_epoch, **(info or {})}
    save_checkpoint(
        path,
        model=model,
        params=carry.state.params,
        opt_state=carry.state.opt_state,
        step=int(carry.state.step),
        metadata=meta,
        extra_arrays=extra,
    )


def _resume(directory, model, optimizer, carry: _Carry, track_best: bool):
    path = latest_checkpoint(directory)
    if path is None:
        return None
    ck = load_checkpoint(path, model=model, opt_state_like=optimizer.init(carry.state.params))
    meta = ck.metadata
    if not isinstance(meta, dict) or not {"epoch", "history"} <= set(meta):
        raise CheckpointError(f"checkpoint {path}: not written by fit (no epoch/history metadata)")
    extra = ck.extra
    state = TrainState(ck.params, ck.opt_state, jnp.asarray(ck.step, jnp.int32))
    best_params = None
    if track_best:
        best_params = extra.get("best_params", jax.tree.map(jnp.copy, ck.params))
    carry = carry._replace(
        state=state,
        best_params=best_params,
        best_score=jnp.asarray(extra["best_score"], carry.best_score.dtype),
        wait=jnp.asarray(extra["wait"], jnp.int32),
        stopped=jnp.asarray(extra["stopped"], bool),
    )
    return carry, extra["key"], int(meta["epoch"]), meta["history"], meta.get("best_epoch")


def _history_upto(history, ran, tl, vl, vm, upto):
    out = {k: list(v) for k, v in history.items()}
    for i in np.flatnonzero(ran[: max(upto, 0)]):
        out["loss"].append(float(tl[i]))
        if "val_loss" in out:
            out["val_loss"].append(float(vl[i]))
            out["val_metric"].append(float(vm[i]))
    return out
