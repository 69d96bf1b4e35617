"""The host driver: runs the compiled multi-epoch program call after call, for fit and ensembles.

The loop is the same for one model and for K members: draw the next call's row orders while the
device runs the current call, queue the next call behind it (unless a callback reads the carry
between calls), read the call's report (one device-to-host copy), hand every epoch's metrics to
the callbacks, stop when every member has finished. What differs (``fit`` replays and
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
    # epochs_per_call chosen by the library: a shuffled run's first call may then be split, its
    # first epochs run alone while the host draws the rest's row orders (see _head_epochs)
    split_first: bool = False


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
    program = epochs_program(spec) if call is None else None
    n = rows_of(data.x) if call is None else run.rows
    dtype = dtype_of(data.x, carry.state.params)
    everyone = [history, *callbacks]
    # Queue each call behind the one running, before reading that one's report, when nothing on
    # the host needs the carry between them: the device never waits on the host's reads,
    # callbacks and next row orders. A call queued behind one that stopped early or diverged runs
    # no epoch and hands the carry on unchanged.
    queue = call is None and not any(_reads_carry(cb) for cb in everyone)

    def orders(start: int, end: int | None = None) -> _Call:
        return plan_call(run, start, n, dtype, end, planned=call is None)

    def launch(carry: Any, c: _Call) -> tuple[Any, Any]:
        if program is not None:
            return program(carry, data.x, data.y, data.sw, c.plan, data.x_val, data.y_val)
        assert call is not None
        return call(carry, c.start, c.perms)

    report = None
    if stopped or done >= run.epochs:
        return carry, done, report
    # The first call's first few epochs run alone, so that the device starts on them while the
    # host draws the rest of that call's row orders (40 orders of 1024 rows: 0.5-0.7 ms on a CPU);
    # the calls after it keep their epochs. The calls never depend on the callbacks: in a
    # multi-process run every process must launch the same calls.
    split = (
        run.split_first and spec.shuffle and call is None and spec.epochs_per_call >= 8
        and _split_pays()
    )  # fmt: skip
    rest = done + spec.epochs_per_call if split else None  # where the split call ends
    current = orders(done, done + _head_epochs(spec.epochs_per_call) if split else None)
    carry, packed = launch(carry, current)
    queued = None
    while True:
        following = orders(current.end, rest) if current.end < run.epochs else None
        rest = None
        if queue and following is not None:
            carry, queued = launch(carry, following)
        # One read per call: the epochs' outputs and the counters the loop needs.
        report = read_report(host(packed), spec.epochs_per_call, dtype, spec.members)
        if on_report is not None:
            carry = on_report(report, carry, current.perms, done)
        slots = report.ran if spec.members is None else report.ran.any(axis=1)
        n_ran = int(np.sum(slots))
        if n_ran == 0:
            break
        metrics_of = _metrics(report, spec, history.records_lr)
        for i in np.flatnonzero(slots):
            metrics = metrics_of(int(i))
            for cb in everyone:
                cb.on_epoch_end(done + int(i) + 1, metrics)
        done += n_ran
        finished = done >= run.epochs or bool(np.all(report.stopped | report.diverged))
        # Queued, the carry is already the next call's (a callback reading it would wait on it).
        state = CallState(
            done, run.epochs, None if queue else carry, key, history.history,
            history.best_epoch, finished,
        )  # fmt: skip
        for cb in everyone:
            cb.on_call_end(state)
        if finished:
            break
        if not queue:
            if following is None or following.start != done:  # a call that ended early
                following = orders(done)
            carry, queued = launch(carry, following)
        # Queued calls rely on it: a call that has not finished the run ran all its epochs.
        assert following is not None and following.start == done
        current, packed = following, queued
    return carry, done, report


class _Call(NamedTuple):
    """One compiled call's epochs ``start .. end-1``, its plan and its row orders."""

    start: int
    end: int
    plan: Any
    perms: np.ndarray | None


def plan_call(
    run: Run, start: int, n: int, dtype: Any, end: int | None = None, planned: bool = True
) -> _Call:
    """The call that begins at epoch ``start`` (and ends by ``end``) on ``n`` rows (the real
    rows, then padding): its row orders and, ``planned``, the in-memory program's plan (a
    streamed call takes the orders alone)."""
    spec = run.spec
    # With checkpoints, a call never runs past the next multiple of checkpoint_every.
    limit = min(run.epochs, start + spec.epochs_per_call if end is None else end)
    if run.checkpoint_every is not None:
        limit = min(limit, (start // run.checkpoint_every + 1) * run.checkpoint_every)
    perms = call_permutations(spec, run.seed, start, limit, run.rows)
    if perms is not None and n > run.rows:  # padding rows read row 0 (and weigh 0)
        perms = np.pad(perms, [(0, 0)] * (perms.ndim - 1) + [(0, n - run.rows)])
    if not planned:
        return _Call(start, limit, None, perms)
    rows = run.rows if spec.padded else -1
    plan = make_plan(start, limit, run.patience, run.min_delta, dtype, perms, rows)
    if spec.mesh is not None:
        plan = put(plan, replicated(spec.mesh))
    return _Call(start, limit, plan, perms)


def _split_pays() -> bool:
    """Whether splitting the first call pays: on an accelerator, where the device would otherwise
    idle while the host draws the call's row orders. On a CPU the host and the device share the
    cores: split or whole, queued or not, S measured the same (1.19-1.23x the bare scan, each
    after a bare scan, 2 x 40 rounds), so the first call stays whole there (one call fewer)."""
    return jax.default_backend() != "cpu"


def _head_epochs(epochs_per_call: int) -> int:
    """Epochs run alone at the start of a split first call: an eighth of it, whose device time
    covers drawing the other seven eighths' row orders on the host (about 12 ns per row and
    epoch on a CPU, against as much or more per row and epoch on the device)."""
    return max(1, epochs_per_call // 8)


def _reads_carry(cb: Callback) -> bool:
    """Whether ``cb``'s ``on_call_end`` may read the carry (it overrides the base class's and
    does not say otherwise with a true ``carry_free`` attribute)."""
    overrides = type(cb).on_call_end is not Callback.on_call_end
    return overrides and not cb.carry_free


def _metrics(r: Report, spec: Spec, records_lr: bool) -> Callable[[int], dict[str, Any]]:
    """Epoch slot ``i``'s metrics, as a function of ``i``: floats for one model; ``(K,)`` arrays
    for an ensemble, NaN for the members that sat the epoch out. The report's columns are
    converted once per call, not once per epoch."""
    pairs = [("loss", r.train_loss)]
    if spec.has_val:
        pairs += [("val_loss", r.val_loss), ("val_metric", r.val_metric)]
    if records_lr:
        pairs.append(("learning_rate", r.learning_rate))
    if spec.members is None:
        columns = [(k, v.tolist()) for k, v in pairs]  # Python floats, in one pass each
        improved = r.improved.tolist()

        def one(i: int) -> dict[str, Any]:
            out: dict[str, Any] = {k: v[i] for k, v in columns}
            out["improved"] = improved[i]
            return out

        return one

    def member(i: int) -> dict[str, Any]:
        ran = r.ran[i]
        out: dict[str, Any] = {k: np.where(ran, v[i].astype(np.float64), np.nan) for k, v in pairs}
        out["improved"] = r.improved[i].copy()
        return out

    return member


def compile_then_stage(spec: Spec, carry: Any, data: Data) -> Data:
    """Large NumPy data (:class:`jaxmlp._train.inputs.Deferred`) staged after the epoch program
    is compiled for their shapes, and the compiler's freed working memory handed back in between,
    so that the two do not add up in the peak. The program's first call then finds it compiled."""
    x = abstract(data.x)
    dtype = dtype_of(x, carry.state.params)
    plan = jax.ShapeDtypeStruct((plan_length(spec, dtype, x.shape[0]),), np.int32)
    program: Any = epochs_program(spec)  # jitted: it has .lower
    program.lower(carry, x, abstract(data.y), data.sw, plan, data.x_val, data.y_val).compile()
    release_free_memory()
    return staged(data)
