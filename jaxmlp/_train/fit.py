"""``fit``: one model trained by the engine's multi-epoch program, driven from the host.

``fit`` checks its inputs eagerly (:mod:`jaxmlp._train.inputs`), builds the program's static
configuration, and hands the call loop to :func:`jaxmlp._train.driver.drive`; the history, the
progress bar and checkpoints are callbacks of that loop, beside the user's own. A non-finite epoch
is replayed step by step to find the step and the last finite state, then raised.

What triggers a compile: a new model description, loss, optimizer *object*, method, ``l2``,
batch size, ``drop_last``/``shuffle``/``epochs_per_call``/early stopping on or off, a mesh, a new
number of rows or features, or validation data of a new size. Everything else (the data's
values, the key, ``epochs``, ``patience``, ``min_delta``) is a run-time argument.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxmlp._checks import check_choice, check_int, check_key, check_nonnegative, check_optimizer
from jaxmlp._core.backprop import METHODS, check_model_loss
from jaxmlp._core.losses import Loss
from jaxmlp._core.metrics import metric_name
from jaxmlp._core.mlp import MLP, Params, check_params
from jaxmlp._core.objective import Objective, as_objective
from jaxmlp._distributed import check_mesh, put, replicated
from jaxmlp._engine.orders import order_seed, seed_from_words
from jaxmlp._engine.program import (
    Carry,
    Report,
    Spec,
    dropout_root,
    dtype_of,
    epoch_flops,
    fresh_carry,
    learning_rate,
    quick_compile,
    replay_program,
)
from jaxmlp._engine.step import DEFAULT_OPTIMIZER, compiled_init
from jaxmlp._train import resume as _resume
from jaxmlp._train.callbacks import (
    Callback,
    CallState,
    Checkpoints,
    EarlyStopping,
    History,
    ProgressBar,
    as_callbacks,
)
from jaxmlp._train.driver import Data, Run, compile_then_stage, drive, host
from jaxmlp._train.inputs import (
    any_deferred,
    check_checkpointing,
    check_custom_loss,
    check_early_stopping,
    check_sample_weight,
    check_training_mode,
    choose_epochs_per_call,
    clip_batch_size,
    pad_rows,
    prepare_training,
    whole_batches,
)
from jaxmlp._train.stream import (
    Feed,
    choose_chunk_steps,
    prepare_stream,
    row_format,
    use_stream,
)
from jaxmlp.errors import DivergenceError


class FitState(NamedTuple):
    """Where a run ended, for ``fit`` to go on from (``FitResult.state``).

    Attributes:
        model: the model trained.
        carry: the engine's state: the final ``TrainState`` (parameters, optimizer state and
            step count, also when the result holds the best parameters) and the
            early-stopping bookkeeping.
        key: the run's key (its row orders go on from it).
        seed: the row orders' seed, read from ``key``.
        epoch: epochs done.
    """

    model: MLP
    carry: Any
    key: jax.Array
    seed: np.ndarray
    epoch: int


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Pass it back as ``params`` to continue training: ``fit(model, result, x, y, ...,
    epochs=total)`` goes on exactly as one longer run would (same row orders, optimizer state,
    schedule count, early-stopping state and history); ``epochs`` counts the total, as with
    ``resume``.

    Attributes:
        params: the final (or, with early stopping, best) parameters.
        opt_state: the final optimizer state.
        history: per-epoch lists: ``loss`` (training objective, l2 included), and with
            validation data ``val_loss`` (data loss) and ``val_metric`` (accuracy or R^2).
        step: optimizer steps taken.
        best_epoch: 1-based epoch of the best monitored loss (early stopping), else None.
        stopped_epoch: 1-based epoch at which early stopping ended the run, else None.
        metric: the name of ``val_metric`` (``"accuracy"`` or ``"r2"``; ``"none"`` for an
            objective).
        state: where the run ended (:class:`FitState`), to continue from.
    """

    params: Params
    opt_state: Any
    history: dict[str, list[float]]
    step: int
    best_epoch: int | None
    stopped_epoch: int | None
    metric: str
    state: FitState | None = None


def fit(
    model: MLP,
    params: Params | FitResult,
    x: Any,
    y: jax.typing.ArrayLike | None = None,
    *,
    loss: str | Loss | Objective | Callable[..., jax.Array],
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
    l1: float = 0.0,
    sample_weight: jax.typing.ArrayLike | None = None,
    drop_last: bool = False,
    epochs_per_call: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    mesh: Mesh | None = None,
    callbacks: Sequence[Callback | Callable[[int, Mapping[str, Any]], Any]] | None = None,
    stream: bool | str = "auto",
    chunk_steps: int | None = None,
) -> FitResult:
    """Trains ``params`` with minibatch gradient steps, whole epochs fused on the device.

    Args:
        model: the network.
        params: its starting parameters (left untouched: donation only ever consumes copies),
            or a previous ``FitResult`` to continue that run (see :class:`FitResult`).
        x: ``(n, sizes[0])`` inputs; for an objective, its rows: any pytree of arrays with a
            leading axis of ``n`` rows; or a row source (:class:`RowSource`, e.g.
            :class:`ArraySource`), streamed (then ``y=None``).
        y: targets as ``loss`` expects (``(n,)`` labels, ``(n, k)``); ``None`` for an objective
            or a row source.
        loss: a loss name, a ``jaxmlp.Loss``, or an objective: a ``jaxmlp.Objective`` or a
            function ``f(apply, params, rows) -> (batch,)`` (see :class:`Objective`).
        key: PRNG key; epoch ``e``'s row order depends only on ``(key, e)``, and with dropout
            step ``t``'s masks only on ``(key, t)`` (a continued or resumed run draws what one
            uninterrupted run would, and no key is used twice).
        optimizer: any optax ``GradientTransformation``; default ``optax.sgd(0.01)`` (eq. 17).
        epochs: total epochs.
        batch_size: rows per step (clipped to ``n`` with a warning).
        method: ``"manual"``, ``"autodiff"`` or ``"fused"`` (:mod:`jaxmlp.fused`) gradients.
        shuffle: reshuffle every epoch.
        validation_data: ``(x_val, y_val)`` (an objective: its validation rows), evaluated
            after every epoch on the device.
        early_stopping: an :class:`EarlyStopping`, monitoring ``val_loss`` (else ``loss``).
        progress: show a tqdm progress bar.
        l2: weight decay term ``(l2/2) sum ||w||^2`` in the objective.
        l1: the term ``l1 sum |w|`` in the objective (its derivative at ``w = 0`` taken as 0).
        sample_weight: ``(n,)`` non-negative weights per row.
        drop_last: drop the last partial batch instead of padding it (padded rows carry
            ``sample_weight`` 0, so no data is lost).
        epochs_per_call: epochs per compiled call (host syncs between calls); default: about
            16 GFLOP of work per call, at most 64 epochs (a divisor of ``checkpoint_every``).
        checkpoint_dir: write ``ckpt_{epoch:06d}.npz`` there every ``checkpoint_every``
            epochs and at the end, keeping the newest ``keep``; on divergence the last finite
            state goes to ``diverged.npz`` there.
        checkpoint_every: epochs between checkpoints.
        keep: checkpoints kept.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (if any), with
            ``epochs`` counting the total. Parameters, optimizer state, history, early-stopping
            state and the shuffling key (the stored one) resume exactly.
        mesh: data parallelism: a ``jax.sharding.Mesh`` with a ``"data"`` axis (see
            ``data_parallel_mesh``); each minibatch's rows are split across it (``batch_size``
            must divide evenly), parameters and optimizer state are replicated. In a
            multi-process run every process passes the same data and key (or, streaming, a
            source holding only its own rows: see :class:`RowSource`); process 0 writes the
            checkpoints.
        callbacks: functions ``f(epoch, metrics)`` or :class:`Callback` objects, called after
            every epoch (see :class:`Callback`).
        stream: ``True`` gathers every minibatch's rows on the host and sends them to the
            device in chunks of ``chunk_steps`` steps, prepared while the device runs the
            previous chunk; ``False`` places all rows on the device once; ``"auto"`` streams
            row sources, NumPy memmaps and arrays larger than half the device's free memory.
            Both give the same parameters for the same key. Streaming runs one epoch per call
            (``epochs_per_call`` is ignored) and keeps validation data on the device.
        chunk_steps: minibatch steps per streamed chunk; default: as many as fit in a
            sixteenth of the device's free memory (at most 16 MiB of rows).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: a bad argument value, checked before anything compiles.
        TypeError: an argument of the wrong type, checked before anything compiles.
        DivergenceError: the loss became NaN/Inf; it carries the last finite state.
    """
    previous = params if isinstance(params, FitResult) else None
    if previous is not None:
        if previous.state is None:
            raise ValueError("params: this FitResult holds no state to continue from")
        params = previous.params
    params = cast(Params, params)
    objective = as_objective(loss)
    lossf = None if objective is not None else check_model_loss(model, cast("str | Loss", loss))
    check_choice(method, "method", METHODS)
    l2 = check_nonnegative(l2, "l2")
    l1 = check_nonnegative(l1, "l1")
    optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
    key = check_key(key)
    check_training_mode(model, objective)
    epochs = check_int(epochs, "epochs", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    check_params(model, params)
    ckpt = check_checkpointing(checkpoint_dir, checkpoint_every, keep, resume)
    users = as_callbacks(callbacks)
    # The key's bits come back with the value checks' read: one device-to-host copy for both.
    drop = bool(drop_last)
    streaming = use_stream(stream, x)
    streamed = None
    if streaming:
        streamed = prepare_stream(model, lossf, params, x, y, validation_data, key, batch_size,
                                  mesh)  # fmt: skip
        xb, yb = streamed.probe  # the first rows, checked; the rest are checked as they stream
        xv, yv, key_words, n = streamed.x_val, streamed.y_val, streamed.key_words, streamed.rows
    else:
        # NumPy rows are staged on the device once, already padded to whole batches.
        xb, yb, xv, yv, key_words, n = prepare_training(
            model, lossf, params, x, y, validation_data, key, finite_params=True,
            rows_to=lambda rows: whole_batches(rows, min(batch_size, rows), drop),
            defer=mesh is None,
        )  # fmt: skip
    dtype = dtype_of(xb, params)
    batch_size = clip_batch_size(batch_size, n)
    if lossf is not None:
        check_custom_loss(model, lossf, params, xb, yb, batch_size)
    sw = check_sample_weight(sample_weight, n, dtype)
    total = whole_batches(n, batch_size, drop)
    if (
        total > n and not streaming
    ):  # whole batches: sizes less than a batch apart share one program
        xb, yb, sw = pad_rows((xb, yb, sw), total)
    n_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    every = None if ckpt.directory is None else ckpt.every
    auto_calls = epochs_per_call is None
    epochs_per_call = choose_epochs_per_call(
        epochs_per_call, model, n_batches, batch_size, checkpoint_every=every
    )
    if streaming:
        epochs_per_call = 1  # a call is one streamed epoch
    stopping = check_early_stopping(early_stopping)
    if mesh is not None:
        check_mesh(mesh, batch_size)
    spec = Spec(
        model=model,
        loss=lossf if lossf is not None else cast(Objective, objective),
        optimizer=optimizer,
        method=method,
        l2=l2,
        batch_size=batch_size,
        drop_last=bool(drop_last),
        shuffle=bool(shuffle),
        epochs_per_call=epochs_per_call,
        track_best=stopping.track_best,
        has_val=validation_data is not None,
        mesh=mesh,
        padded=total > n,
        l1=l1,
        quick=quick_compile(mesh, epoch_flops(params, n)),
    )

    # The row orders' seed, from the bits read before the initialisation below was dispatched (a
    # read after it would wait for it on the device).
    seed = seed_from_words(key_words)
    carry = fresh_carry(params, optimizer, dtype, stopping.track_best)
    lr = learning_rate(carry.state.opt_state) is not None  # the history records it
    done, stopped, history = 0, False, History(spec.has_val, records_lr=lr)
    if previous is not None:
        assert previous.state is not None
        carry, key, seed, done, stopped = _continue(previous.state, carry, model, optimizer)
        history = History(spec.has_val, previous.history, previous.best_epoch, records_lr=lr)
    if ckpt.resume:
        restored = _resume.resume(ckpt.directory, model, carry, stopping.track_best)
        if restored is not None:
            carry, key, done, past, best = restored
            history = History(spec.has_val, past, best, records_lr=lr)
            stopped = bool(carry.stopped)
            seed = order_seed(key)  # the stored key's
    carry = carry._replace(dropout_key=dropout_root(model, key))
    data = Data(None, None, None, xv, yv) if streaming else Data(xb, yb, sw, xv, yv)
    if any_deferred(data):
        data = compile_then_stage(spec, carry, data)
    if mesh is not None:
        # Global, replicated inputs: every process holds the same data and key.
        carry, data, key = put((carry, data, key), replicated(mesh))
    run = Run(spec, epochs, stopping.patience, stopping.min_delta, every, seed, n, auto_calls)
    feed = call = None
    if streamed is not None:
        fmt = row_format(model, cast(Loss, lossf), dtype)
        step_bytes = batch_size * (xb[:1].nbytes + yb[:1].nbytes + np.dtype(dtype).itemsize)
        steps = choose_chunk_steps(chunk_steps, step_bytes, n_batches)
        host_sw = None if sw is None else np.asarray(sw)
        feed = Feed(spec, streamed.source, fmt, n, host_sw, steps, streamed.shard)
        call = feed.call(stopping.patience, stopping.min_delta, data.x_val, data.y_val)

    def save(path: Path, state: CallState, info: dict[str, Any] | None = None) -> None:
        _resume.save(path, model, state.carry, key, state.epoch, state.history,
                     state.best_epoch, info=info)  # fmt: skip

    def on_report(r: Report, carry: Carry, perms, start: int) -> Carry:
        if not r.diverged:
            return carry
        carry, bad_step = _locate_divergence(spec, carry, r, start, perms, data, n, feed)
        bad_epoch = int(r.bad_epoch) + 1
        past = history.upto(len(history.history["loss"]))
        for i in range(bad_epoch - 1 - start):  # the finite epochs of this call
            if r.ran[i]:
                past["loss"].append(float(r.train_loss[i]))
                if spec.has_val:
                    past["val_loss"].append(float(r.val_loss[i]))
                    past["val_metric"].append(float(r.val_metric[i]))
                if lr:
                    past["learning_rate"].append(float(r.learning_rate[i]))
        if ckpt.directory is not None:
            info = {"diverged_epoch": bad_epoch, "diverged_step": bad_step}
            state = CallState(start, epochs, carry, key, history.history, history.best_epoch, True)
            save(ckpt.directory / "diverged.npz", state, info)
        where = "step unknown" if bad_step is None else f"step {bad_step}"
        raise DivergenceError(
            f"loss became non-finite in epoch {bad_epoch}, {where}; "
            f".params and .opt_state hold the last finite state",
            epoch=bad_epoch,
            step=bad_step,
            params=carry.state.params,
            opt_state=carry.state.opt_state,
            history=past,
        )

    bar = ProgressBar(epochs, done, "fit", progress)
    internal: list[Callback] = [bar]
    if ckpt.directory is not None:
        internal.append(Checkpoints(ckpt.directory, ckpt.every, ckpt.keep, save))
    try:
        carry, done, report = drive(run, carry, data, key, history, [*internal, *users],
                                    done=done, stopped=stopped, on_report=on_report,
                                    call=call)  # fmt: skip
    finally:
        bar.on_train_end(None)
        if feed is not None:
            feed.close()
    step = int(carry.state.step) if report is None else int(report.step)
    stopped_epoch = done if report is not None and bool(report.stopped) else None
    if previous is not None and stopped_epoch is None and report is None:
        stopped_epoch = previous.stopped_epoch
    result = FitResult(
        carry.best_params if stopping.track_best else carry.state.params,
        carry.state.opt_state,
        history.history,
        step,
        history.best_epoch if early_stopping is not None else None,
        stopped_epoch,
        "none" if lossf is None else metric_name(lossf),
        FitState(model, carry, key, seed, done),
    )
    for cb in users:
        cb.on_train_end(result)
    return result


def _locate_divergence(
    spec: Spec, carry: Carry, r: Report, done: int, perms, data: Data, rows: int, feed=None
):
    """The fast path found the non-finite epoch and kept the state it started from: replay that
    epoch with a check after every step (:func:`jaxmlp._engine.program.replay_program`) for the
    last finite state and the first non-finite step. Returns the carry holding that state, and
    the step: ``None`` if the replay stayed finite (it is another compiled program, which may
    round differently near a blow-up; on a GPU the two sum some reductions in another order),
    and the carry then keeps the epoch's starting state."""
    perm = None if perms is None else perms[int(r.bad_epoch) - done]
    if feed is not None:  # streamed: the epoch's chunks again, checked step by step
        order = np.arange(rows) if perm is None else perm
        state, bad, bad_step = feed.replay(carry.state, order, carry.dropout_key)
        bad, bad_step = host((bad, bad_step))
        return (carry._replace(state=state), int(bad_step)) if bad else (carry, None)
    if spec.mesh is not None and perm is not None:
        perm = put(perm, replicated(spec.mesh))
    replay = replay_program(spec)
    state, bad, bad_step, _ = replay(
        carry.state, False, np.int32(-1), data.x, data.y, data.sw, perm, np.int32(rows),
        carry.dropout_key,
    )  # fmt: skip
    bad, bad_step = host((bad, bad_step))
    if not bad:
        return carry, None
    return carry._replace(state=state), int(bad_step)


def _copy(tree: Any) -> Any:
    return jax.tree.map(jnp.copy, tree)


def _continue(state: FitState, fresh: Carry, model: MLP, optimizer) -> tuple:
    """The carry, key, seed, epochs done and stopped flag to go on from ``state``; a copy (the
    next call donates its carry, which would invalidate the previous result's arrays)."""
    if state.model != model:
        raise ValueError("params: the FitResult was trained for another model")
    old = state.carry
    if jax.tree.structure(old.state.opt_state) != jax.tree.structure(fresh.state.opt_state):
        raise ValueError("optimizer: its state does not match the FitResult's optimizer state")
    carry = compiled_init(_copy, old)
    if fresh.best_params is None:  # early stopping now off: nothing to track
        carry = carry._replace(best_params=None)
    elif carry.best_params is None:  # now on: the best so far is where the run ended
        carry = carry._replace(best_params=_copy(carry.state.params))
    return carry, state.key, state.seed, state.epoch, bool(carry.stopped)
