"""The host driver: runs the compiled multi-epoch program call after call, for fit and ensembles.

The loop is the same for one model and for K members: draw the next call's row orders while the
device runs the current call, read the call's report (one device-to-host copy), hand every epoch's
metrics to the callbacks, stop when every member has finished. What differs (``fit`` replays and
raises on divergence; an ensemble lets a diverged member rest) is the ``on_report`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxmlp._distributed import local, put, replicated
from jaxmlp._engine.orders import call_permutations
from jaxmlp._engine.program import (
    Report,
    Spec,
    dtype_of,
    epochs_program,
    make_plan,
    plan_length,
    read_report,
    rows_of,
)
from jaxmlp._train.callbacks import Callback, CallState, History
from jaxmlp._train.inputs import abstract, release_free_memory, staged


class Data(NamedTuple):
    """The device arrays of one run: training rows, per-row weights (``None``: all 1;
    ``(members, n)`` in an ensemble) and validation rows (``None`` without)."""

    x: Any
    y: Any
    sw: Any
    x_val: Any
    y_val: Any


class Run(NamedTuple):
    """One run's host-side settings, checked."""

    spec: Spec
    epochs: int
    patience: int
    min_delta: float
    checkpoint_every: int | None
    seed: np.ndarray  # the row orders' seed(s): (2,), or (members, 2)
    rows: int  # the real rows (the data may be padded to whole batches beyond them)
    quick: bool = False  # the epoch program compiled quick (see program.quick_compile)


def host(tree: Any) -> Any:
    """NumPy copies of (replicated) device arrays, also when they span several processes; all
    leaves in one transfer."""
    return jax.tree.map(np.asarray, jax.device_get(jax.tree.map(local, tree)))


def drive(
    run: Run,
    carry: Any,
    data: Data,
    key: jax.Array,
    history: History,
    callbacks: Sequence[Callback],
    *,
    done: int = 0,
    stopped: bool = False,
    on_report: Callable[[Report, Any, np.ndarray | None, int], Any] | None = None,
    call: Callable[[Any, int, Any], tuple[Any, Any]] | None = None,
) -> tuple[Any, int, Report | None]:
    """Runs epochs ``done+1 .. run.epochs``; returns ``(carry, epochs done, last report)``.

    ``stopped``: every member had already finished (a resumed run that had stopped early).
    ``on_report(report, carry, perms, done)`` sees every call's report before the callbacks and
    returns the carry to go on with (``fit`` raises there on divergence). ``call(carry, start,
    perms) -> (carry, report vector)`` runs the epochs from ``start`` instead of the in-memory
    program (streaming: ``data`` then holds no training rows and the orders cover ``run.rows``).
    """
    spec = run.spec
    program = epochs_program(spec, run.quick) if call is None else None
    n = rows_of(data.x) if call is None else run.rows
    dtype = dtype_of(data.x, carry.state.params)
    mesh = spec.mesh

    def orders(start: int):
        """``(start, plan, row orders)`` of the call that begins at epoch ``start``."""
        # With checkpoints, a call never runs past the next multiple of checkpoint_every.
        limit = run.epochs
        if run.checkpoint_every is not None:
            limit = min(run.epochs, (start // run.checkpoint_every + 1) * run.checkpoint_every)
        perms = call_permutations(spec, run.seed, start, limit, run.rows)
        if perms is not None and n > run.rows:  # padding rows read row 0 (and weigh 0)
            perms = np.pad(perms, [(0, 0)] * (perms.ndim - 1) + [(0, n - run.rows)])
        if call is not None:
            return start, None, perms
        rows = run.rows if spec.padded else -1
        plan = make_plan(start, limit, run.patience, run.min_delta, dtype, perms, rows)
        if mesh is not None:
            plan = put(plan, replicated(mesh))
        return start, plan, perms

    everyone = [history, *callbacks]
    report = None
    finished = stopped or done >= run.epochs
    upcoming = orders(done)
    while not finished:
        if upcoming[0] != done:  # the last call ended early (a checkpoint boundary)
            upcoming = orders(done)
        _, plan, perms = upcoming
        if program is not None:
            carry, packed = program(carry, data.x, data.y, data.sw, plan, data.x_val, data.y_val)
        else:
            assert call is not None
            carry, packed = call(carry, done, perms)
        # The call runs asynchronously: draw the next call's row orders meanwhile.
        nxt = done + spec.epochs_per_call
        upcoming = orders(nxt) if nxt < run.epochs else upcoming
        # One read per call: the epochs' outputs and the counters the loop needs.
        report = read_report(host(packed), spec.epochs_per_call, dtype, spec.members)
        if on_report is not None:
            carry = on_report(report, carry, perms, done)
        slots = report.ran if spec.members is None else report.ran.any(axis=1)
        n_ran = int(np.sum(slots))
        if n_ran == 0:
            break
        for i in np.flatnonzero(slots):
            metrics = _metrics(report, int(i), spec, history.records_lr)
            for cb in everyone:
                cb.on_epoch_end(done + int(i) + 1, metrics)
        done += n_ran
        finished = done >= run.epochs or bool(np.all(report.stopped | report.diverged))
        state = CallState(
            done, run.epochs, carry, key, history.history, history.best_epoch, finished
        )
        for cb in everyone:
            cb.on_call_end(state)
    return carry, done, report


def _metrics(r: Report, i: int, spec: Spec, records_lr: bool) -> dict[str, Any]:
    """Epoch slot ``i``'s metrics: floats for one model; ``(K,)`` arrays for an ensemble, NaN for
    the members that sat the epoch out."""
    pairs = [("loss", r.train_loss[i])]
    if spec.has_val:
        pairs += [("val_loss", r.val_loss[i]), ("val_metric", r.val_metric[i])]
    if records_lr:
        pairs.append(("learning_rate", r.learning_rate[i]))
    out: dict[str, Any]
    if spec.members is None:
        out = {k: float(v) for k, v in pairs}
        out["improved"] = bool(r.improved[i])
        return out
    ran = r.ran[i]
    out = {k: np.where(ran, v.astype(np.float64), np.nan) for k, v in pairs}
    out["improved"] = r.improved[i].copy()
    return out


def compile_then_stage(spec: Spec, carry: Any, data: Data, quick: bool = False) -> Data:
    """Large NumPy data (:class:`jaxmlp._train.inputs.Deferred`) staged after the epoch program
    is compiled for their shapes, and the compiler's freed working memory handed back in between,
    so that the two do not add up in the peak. The program's first call then finds it compiled."""
    x = abstract(data.x)
    dtype = dtype_of(x, carry.state.params)
    plan = jax.ShapeDtypeStruct((plan_length(spec, dtype, x.shape[0]),), np.int32)
    program: Any = epochs_program(spec, quick)  # jitted: it has .lower
    program.lower(carry, x, abstract(data.y), data.sw, plan, data.x_val, data.y_val).compile()
    release_free_memory()
    return staged(data)
