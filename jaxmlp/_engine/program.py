"""The one multi-epoch program: whole epochs of minibatch steps in one compiled call.

One compiled call runs up to ``epochs_per_call`` epochs (a while loop that ends with the run, early
stopping or divergence): for each epoch it takes the row order drawn on the host
(:mod:`jaxmlp._engine.orders`), gathers the padded minibatches, scans every step and computes the
epoch's metrics, the early-stopping bookkeeping and the divergence flag, all on the device.

The program has an optional *member axis*. Without it (``Spec.members is None``) it trains one
model: ``fit``. With it (``members=K``) every leaf of the carry has a leading axis of size K and the
per-member epoch is vmapped: ``fit_ensemble``. A member that stops early or diverges keeps its state
while the others go on; the loop ends when every member has finished. Both are the same code
(:func:`member_epoch`), so everything one model gets, each member gets.

One call's run-time arguments travel to the device as one int32 vector (its *plan*) and its results
come back as one vector (its *report*): on a GPU every separate host-device copy costs about
0.1-0.2 ms, as much as an epoch of a small model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxmlp._core.backprop import value_and_grad
from jaxmlp._core.losses import Loss
from jaxmlp._core.metrics import evaluate
from jaxmlp._core.mlp import MLP, Params
from jaxmlp._core.objective import Objective, objective_evaluate, objective_value_and_grad
from jaxmlp._distributed import replicated, sharded
from jaxmlp._engine.step import TRACE_COUNTS, TrainState, apply_update, compiled_init, init_state
from jaxmlp._quick import options_if, quick_options


class Spec(NamedTuple):
    """The static configuration of one compiled program (hashable: programs are cached on it)."""

    model: MLP
    loss: Loss | Objective
    optimizer: Any
    method: str
    l2: float
    batch_size: int
    drop_last: bool
    shuffle: bool
    epochs_per_call: int
    track_best: bool
    has_val: bool
    members: int | None = None
    mesh: Mesh | None = None
    padded: bool = False
    l1: float = 0.0
    quick: bool = False  # compiled with jaxmlp._quick.QUICK_COMPILE (see quick_compile)


class Carry(NamedTuple):
    """What one call hands to the next (every leaf with a leading member axis for ensembles)."""

    state: TrainState
    best_params: Params | None
    best_score: jax.Array
    wait: jax.Array
    stopped: jax.Array
    diverged: jax.Array
    bad_epoch: jax.Array
    bad_step: jax.Array
    # Training mode's root key (dropout), ``None`` for a model that draws nothing: step ``t`` trains
    # with ``fold_in(dropout_key, t)``, so a resumed or continued run draws what one run would.
    dropout_key: Any = None


def _init_carry(params: Params, optimizer, dtype, track_best: bool) -> Carry:
    """A fresh state, no best score yet, nothing stopped or diverged."""
    return Carry(
        init_state(params, optimizer),
        jax.tree.map(jnp.copy, params) if track_best else None,
        jnp.asarray(jnp.inf, dtype),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), bool),
        jnp.zeros((), bool),
        jnp.asarray(-1, jnp.int32),
        jnp.asarray(-1, jnp.int32),
    )


def _init_member_carries(params: Params, optimizer, dtype, track_best: bool) -> Carry:
    return jax.vmap(lambda p: _init_carry(p, optimizer, dtype, track_best))(params)


def fresh_carry(
    params: Params, optimizer: optax.GradientTransformation, dtype, track_best: bool, members=None
) -> Carry:
    """The carry a run starts from (``params`` are copied, never donated); with ``members`` the
    parameters carry a leading member axis and so does every leaf of the carry."""
    init = _init_carry if members is None else _init_member_carries
    return compiled_init(init, params, optimizer, jnp.dtype(dtype), bool(track_best))


# Steps per loop trip of an epoch's step scan: the same arithmetic, less loop overhead. On GPUs and
# TPUs up to 8 (the S config's whole epoch: 9% less time per epoch than 2 on an H100, and faster to
# compile there); on CPUs 2 (no faster unrolled further, and twice as slow to compile fully
# unrolled). benchmarks/probe_fit.py measures the variants.
_STEP_UNROLL = {"cpu": 2, "accelerator": 8}


def _step_unroll(n_batches: int, quick: bool = False) -> int:
    if quick:  # one step's code, not two: the unrolled body is most of a small program's compile
        return 1
    kind = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    return max(1, min(n_batches, _STEP_UNROLL[kind]))


def _tree_where(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _param_total(params: Params) -> jax.Array:
    # One reduction tells whether any parameter is NaN or Inf (one over all of them: a reduction
    # per leaf costs a kernel launch apiece, as much as the small matmuls).
    return jnp.sum(jnp.concatenate([a.ravel() for a in jax.tree.leaves(params)]))


_INJECTED = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def learning_rate(opt_state: Any) -> Any:
    """The learning rate an optimizer state exposes (``optax.inject_hyperparams``), else None."""
    states = jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, _INJECTED))
    for s in states:
        if isinstance(s, _INJECTED) and "learning_rate" in s.hyperparams:
            return s.hyperparams["learning_rate"]
    return None


def rows_of(x: Any) -> int:
    """The number of rows of the training data (an array, or a pytree of rows for an objective)."""
    return jax.tree.leaves(x)[0].shape[0]


def dtype_of(x: Any, params: Any = None) -> Any:
    """The dtype losses and weights are computed in: the inputs' for an array, else the first
    floating leaf's of ``x`` (or of ``params``), else float32."""
    if hasattr(x, "dtype"):
        return x.dtype
    for leaf in jax.tree.leaves((x, params)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return jnp.dtype(jnp.float32)


def _step_fn(spec: Spec) -> Callable:
    if isinstance(spec.loss, Objective):
        vg = objective_value_and_grad(spec.model, spec.loss, spec.method, spec.l2, spec.l1)
        return lambda params, *batch, key=None: vg(params, *batch)
    return value_and_grad(spec.model, spec.loss, method=spec.method, l2=spec.l2, l1=spec.l1)


# Folded into a run's key for its training-mode stream: the row orders use the key's bits on the
# host, the dropout masks this stream on the device.
_DROPOUT_STREAM = 0x64726F70  # "drop"


def dropout_root(model: MLP, key: jax.Array, members: int | None = None) -> jax.Array | None:
    """The run's training-mode root key (:attr:`Carry.dropout_key`) from its key: ``None`` for
    a model without dropout; for ``members``, one per member, ``fold_in(root, k)``."""
    if not model.dropout:
        return None
    root = jax.random.fold_in(key, _DROPOUT_STREAM)
    if members is None:
        return root
    return jax.vmap(lambda k: jax.random.fold_in(root, k))(jnp.arange(members))


def step_key(root: jax.Array | None, step: jax.Array) -> jax.Array | None:
    """The training key of step ``step`` (its 0-based global count): ``fold_in(root, step)``."""
    return None if root is None else jax.random.fold_in(root, step)


def _evaluate(spec: Spec, params, x_val, y_val):
    if isinstance(spec.loss, Objective):
        return objective_evaluate(spec.model, spec.loss, params, x_val)
    return evaluate(spec.model, params, x_val, y_val, spec.loss)


def _make_step(spec: Spec, check_steps: bool) -> Callable:
    """One minibatch step for ``lax.scan``: ``((state, bad, bad_step, i), (x, y, w), key=None) ->
    (carry, (loss value, total weight or None))``, ``key`` the training-mode root key (step ``t``
    draws with ``fold_in(key, t)``); with ``check_steps`` a non-finite step is not applied
    and ``bad_step`` records its 1-based index ``i``."""
    vg = _step_fn(spec)
    # Data parallelism splits each minibatch's rows; an ensemble's mesh splits its members instead.
    mesh = spec.mesh if spec.members is None else None

    def step(c, batch, key=None):
        state, bad, bad_step, i = c
        if mesh is not None:
            # Rows of every minibatch split across the "data" axis; XLA adds the all-reduce.
            batch = lax.with_sharding_constraint(batch, sharded(mesh))
        # ``key``: the run's training-mode root key (dropout), or None
        value, grads = vg(state.params, *batch, key=step_key(key, state.step))
        new = apply_update(spec.optimizer, state, grads)
        # The step's total weight, for the epoch's loss (summed here, alike in every program).
        out = (value, None if batch[2] is None else jnp.sum(batch[2]))
        if not check_steps:
            return (new, bad, bad_step, i + 1), out
        ok = jnp.isfinite(value) & jnp.isfinite(_param_total(new.params)) & ~bad
        bad_step = jnp.where(bad | ok, bad_step, i)
        return (_tree_where(ok, new, state), bad | ~ok, bad_step, i + 1), out

    return step


def _ordered_sum(v: jax.Array) -> jax.Array:
    # One add after another, so that every program (the in-memory epoch, the streamed epoch's
    # end) gets the same bits; a reduction's order depends on how XLA fuses it.
    return lax.scan(lambda c, a: (c + a, None), jnp.zeros((), v.dtype), v, unroll=8)[0]


def epoch_loss(spec: Spec, values: jax.Array, wsum: jax.Array | None) -> jax.Array:
    """The epoch's training loss from its steps' ``values`` and, for weighted steps, each step's
    total weight ``wsum`` (``None``: every row weighs 1)."""
    # The plain reductions give the same bits in both programs (tested), and cost less.
    if spec.loss.reduction != "mean":
        return jnp.sum(values)
    if wsum is None:
        return jnp.mean(values)
    return _ordered_sum(values * wsum) / _ordered_sum(wsum)


def make_epoch(spec: Spec, *, check_steps: bool = True) -> Callable:
    """One training epoch for one model, pure: ``(state, bad, bad_step, x, y, sw, perm, rows,
    key) -> (state, bad, bad_step, train_loss)``; ``key`` is the training-mode root key
    (dropout; step ``t`` uses ``fold_in(key, t)``) or ``None``.

    The epoch visits the rows in the order ``perm`` (see :mod:`jaxmlp._engine.orders`; ``None``
    without shuffling: the stored order), pads the last batch with weight-0 rows, and stops
    applying updates at the first non-finite step (``bad``), whose 1-based index it records in
    ``bad_step``. ``sw`` holds per-row sample weights, or ``None`` when every row weighs 1.

    With ``check_steps=False`` (the fast path of the multi-epoch program) no step is checked:
    the finiteness check runs once, on the epoch's losses and final parameters. A non-finite epoch
    (or one entered with ``bad`` set) returns its *starting* state with ``bad`` set and
    ``bad_step`` unchanged (-1), and ``fit`` replays it with the per-step checks to find the step
    and the last finite state. Once a parameter is NaN or Inf it stays so (``w + u`` is never
    finite again), so a finite end means every step was finite. Per step this saves the check and
    a select per state leaf: on a GPU, where a small model's step is a few dozen kernels of about a
    microsecond each, that is about a quarter of them.
    """
    step = _make_step(spec, check_steps)
    B = spec.batch_size

    def train_epoch(state, bad, bad_step, x, y, sw, perm, rows: Any = None, key=None):
        n = rows_of(x)
        dtype = dtype_of(x, state.params)
        if perm is None:
            perm = jnp.arange(n, dtype=jnp.int32)
            if spec.padded:  # the bucket's padding rows: like the last batch's, they read row 0
                perm = jnp.where(perm < rows, perm, 0)
        nb = n // B if spec.drop_last else -(-n // B)
        pad = 0 if spec.drop_last else nb * B - n
        # Padded rows point at row 0 and weigh 0: fixed shapes, no data dropped.
        idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)])[: nb * B]
        if pad or spec.padded or sw is not None:
            if spec.padded:  # x holds ``rows`` real rows, then padding up to a whole batch
                w = (jnp.arange(nb * B) < rows).astype(dtype)
            else:
                w = jnp.concatenate([jnp.ones((n,), dtype), jnp.zeros((pad,), dtype)])[: nb * B]
            w = w if sw is None else w * sw[idx]
            w = w.reshape(nb, B)
        else:
            w = None  # every row weighs 1: the plain mean, no weights to gather or sum

        # Each step gathers its own rows: the data stay one copy, the epoch holds only indices.
        def gather_step(c, batch):
            ib, wb = batch
            return step(c, (*jax.tree.map(lambda a: a[ib], (x, y)), wb), key)

        init = (state, bad, bad_step, jnp.ones((), jnp.int32))
        batches = (idx.reshape(nb, B), w)
        (new, bad_new, bad_step, _), (values, wsum) = lax.scan(
            gather_step, init, batches, unroll=_step_unroll(nb, spec.quick)
        )
        if check_steps:
            state, bad = new, bad_new
        else:
            fine = jnp.all(jnp.isfinite(values)) & jnp.isfinite(_param_total(new.params)) & ~bad
            state, bad = _tree_where(fine, new, state), ~fine
        train_loss = epoch_loss(spec, values, wsum)
        return state, bad, bad_step, train_loss

    return train_epoch


@functools.lru_cache(maxsize=64)
def replay_program(spec: Spec) -> Callable:
    """The jitted epoch with a check after every step, for ``fit`` to replay a non-finite epoch of
    the fast path (compiled only when a run diverges, quick as the fast path was)."""
    return jax.jit(make_epoch(spec), compiler_options=options_if(spec.quick))


def member_epoch(spec: Spec) -> Callable:
    """One epoch of one member with its bookkeeping, pure: ``(carry, e, perm, x, y, sw, x_val,
    y_val, patience, min_delta) -> (carry, (ran, train_loss, val_loss, val_metric, lr, improved))``;
    ``lr`` is the learning rate the optimizer exposes after the epoch (NaN when it exposes none).

    The epoch (:func:`make_epoch`'s fast path), the validation metrics, and early stopping: the
    monitored score is the validation loss (else the training loss); ``improved`` when it beats the
    best by more than ``min_delta``; stopped after ``patience`` epochs without. In an ensemble a
    member that has stopped or diverged sits the epoch out (its carry is kept; ``ran`` is False):
    one model's program never needs that, since its loop ends at once.
    """
    train_epoch = make_epoch(spec, check_steps=False)
    finish = finish_epoch(spec)

    def run(carry: Carry, e, perm, x, y, sw, x_val, y_val, patience, min_delta, rows):
        state, bad, bad_step, train_loss = train_epoch(
            carry.state, carry.diverged, carry.bad_step, x, y, sw, perm, rows, carry.dropout_key
        )
        dtype = dtype_of(x, state.params)
        return finish(carry, e, state, bad, bad_step, train_loss, x_val, y_val, patience,
                      min_delta, dtype)  # fmt: skip

    return run


def finish_epoch(spec: Spec) -> Callable:
    """An epoch's bookkeeping once its steps have run, pure: ``(carry, e, state, bad, bad_step,
    train_loss, x_val, y_val, patience, min_delta, dtype) -> (carry, outputs)`` (see
    :func:`member_epoch`); shared by the in-memory epoch and the streamed one."""
    masked = spec.members is not None

    def run(carry: Carry, e, state, bad, bad_step, train_loss, x_val, y_val, patience, min_delta,
            dtype):  # fmt: skip
        if spec.has_val:
            val_loss, val_metric = _evaluate(spec, state.params, x_val, y_val)
            score = val_loss
        else:
            val_loss = val_metric = jnp.asarray(jnp.nan, dtype)
            score = train_loss
        improved = score < carry.best_score - min_delta
        best_params = (
            _tree_where(improved, state.params, carry.best_params) if spec.track_best else None
        )
        wait = jnp.where(improved, 0, carry.wait + 1)
        new = Carry(
            state,
            best_params,
            jnp.where(improved, score, carry.best_score),
            wait,
            wait >= patience,
            bad,
            jnp.where(bad & ~carry.diverged, e, carry.bad_epoch),
            bad_step,
            carry.dropout_key,
        )
        ran = jnp.ones((), bool)
        if masked:
            ran = ~carry.stopped & ~carry.diverged
            # the root key is the same in both: selecting it would count as using it twice
            keep = carry._replace(dropout_key=None)
            new = _tree_where(ran, new._replace(dropout_key=None), keep)
            new = new._replace(dropout_key=carry.dropout_key)
            improved = improved & ran  # the host reads the other metrics where ``ran`` only
        lr = learning_rate(new.state.opt_state)
        lr = jnp.asarray(jnp.nan if lr is None else lr, train_loss.dtype)
        return new, (ran, train_loss, val_loss, val_metric, lr, improved)

    return run


class Report(NamedTuple):
    """What the host reads after one call of the multi-epoch program (NumPy values).

    ``ran``, ``train_loss``, ``val_loss``, ``val_metric`` and ``improved`` have one entry per
    epoch slot of the call, ``(epochs_per_call, *members)``; ``ran`` tells which slots ran (for
    each member). The rest are the carry's counters, ``members``-shaped (scalars for one model).
    """

    ran: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_metric: np.ndarray
    learning_rate: np.ndarray
    improved: np.ndarray
    stopped: np.ndarray
    diverged: np.ndarray
    bad_epoch: np.ndarray
    bad_step: np.ndarray
    step: np.ndarray


def _wide(dtype) -> np.dtype:
    """The float type losses and ``min_delta`` travel as: float64 for float64 data, else float32
    (which holds bfloat16 and float16 values exactly)."""
    return np.dtype(np.float64 if np.dtype(dtype).itemsize == 8 else np.float32)


def make_plan(
    offset: int, total: int, patience: int, min_delta, dtype, perms, rows: int = -1
) -> np.ndarray:
    """The int32 plan of one call: first epoch, the run's last epoch (exclusive), patience, the
    number of real rows (-1: all; the rest pad the data to whole batches), ``min_delta``'s bits
    (one or two words), then the row orders (if shuffling)."""
    words = np.asarray(min_delta, _wide(dtype)).reshape(1).view(np.int32)
    head = np.concatenate([np.array([offset, total, patience, rows], np.int32), words])
    return head if perms is None else np.concatenate([head, np.asarray(perms, np.int32).ravel()])


def plan_length(spec: Spec, dtype, n: int) -> int:
    """The length of :func:`make_plan`'s plan for ``n`` rows (the program's input shape)."""
    words = 4 + _wide(dtype).itemsize // 4
    members = 1 if spec.members is None else spec.members
    return words + (spec.epochs_per_call * members * n if spec.shuffle else 0)


def _read_plan(plan: jax.Array, dtype, spec: Spec, n: int):
    wide = _wide(dtype)
    k = wide.itemsize // 4
    bits = plan[4 : 4 + k] if k > 1 else plan[4]
    min_delta = lax.bitcast_convert_type(bits, wide).astype(dtype)
    members = () if spec.members is None else (spec.members,)
    perms = plan[4 + k :].reshape(spec.epochs_per_call, *members, n) if spec.shuffle else None
    return plan[0], plan[1], plan[2], min_delta, perms, plan[3]


def _report(hist, carry: Carry, dtype) -> jax.Array:
    wide = _wide(dtype)
    word = jnp.int64 if wide.itemsize == 8 else jnp.int32
    ran, train_loss, val_loss, val_metric, lr, improved = hist
    losses = jnp.stack([train_loss, val_loss, val_metric, lr]).astype(wide)
    counters = (carry.stopped, carry.diverged, carry.bad_epoch, carry.bad_step, carry.state.step)
    return jnp.concatenate([
        lax.bitcast_convert_type(losses, word).ravel(),
        jnp.stack([ran, improved]).astype(word).ravel(),
        jnp.stack(counters).astype(word).ravel(),
    ])  # fmt: skip


def read_report(report: np.ndarray, epochs: int, dtype, members: int | None = None) -> Report:
    """:class:`Report` of one call's report vector (already on the host)."""
    E, M = epochs, () if members is None else (members,)
    size = int(np.prod(M, dtype=int))
    losses = np.ascontiguousarray(report[: 4 * E * size]).view(_wide(dtype)).reshape(4, E, *M)
    flags = report[4 * E * size : 6 * E * size].reshape(2, E, *M).astype(bool)
    counters = report[6 * E * size :].reshape(5, *M)
    stopped, diverged = counters[:2].astype(bool)
    bad_epoch, bad_step, step = counters[2:]
    train_loss, val_loss, val_metric, lr = losses
    return Report(flags[0], train_loss, val_loss, val_metric, lr, flags[1], stopped, diverged,
                  bad_epoch, bad_step, step)  # fmt: skip


# XLA:CPU's fusion emitters generate faster kernels for a fit's small steps than its older code
# generator, but compile the epoch program 25-45% slower (0.87 s against 0.54-0.62 s for a
# 30-32-2 classifier on the 2-core CPU, whose epochs then run 1.1-1.2x slower). Small tables,
# whose epochs take well under a millisecond, spend more on compiling than on training, so their
# programs compile quick. The choice depends on the data and the model only (not on the number
# of epochs), so a continued or resumed run uses the program the whole run would have: the two
# code generators round some functions (tanh, exp) differently in the last bit.
# ``JAXMLP_QUICK_COMPILE=0`` never compiles quick, ``=1`` always does (on a CPU).
QUICK_EPOCH_FLOPS = (
    1e7  # an epoch's estimated training FLOPs under which the program compiles quick
)


def quick_compile(mesh: Mesh | None, epoch_flops: float) -> bool:
    """Whether a run whose epoch is ``epoch_flops`` estimated training FLOPs compiles its programs
    with :data:`jaxmlp._quick.QUICK_COMPILE` (:attr:`Spec.quick`; on a CPU only, without a mesh)."""
    if mesh is not None or quick_options() is None:  # not on a CPU
        return False
    choice = os.environ.get("JAXMLP_QUICK_COMPILE", "auto").strip().lower()
    if choice in ("0", "false", "no", "off"):
        return False
    if choice in ("1", "true", "yes", "on"):
        return True
    return epoch_flops < QUICK_EPOCH_FLOPS


def epoch_flops(params: Params, rows: int) -> float:
    """An epoch's training FLOPs, roughly: 6 per parameter per row (forward 2, backward 4)."""
    size = sum(int(np.prod(np.shape(a))) for a in jax.tree.leaves(params))
    return 6.0 * size * rows


@functools.lru_cache(maxsize=64)
def epochs_program(spec: Spec) -> Callable:
    """The jitted multi-epoch program for one static configuration (cached):
    ``(carry, x, y, sw, plan, x_val, y_val) -> (carry, report)`` (see :func:`make_plan`,
    :func:`read_report`). ``sw`` is ``(n,)`` for one model, ``(members, n)`` for an ensemble, or
    ``None`` when every row weighs 1. ``spec.quick``: compiled with
    :data:`jaxmlp._quick.QUICK_COMPILE` (see :func:`quick_compile`)."""
    one_epoch = member_epoch(spec)
    if spec.members is not None:
        # perm: (K, n) per epoch slot; the data and the run's settings are shared.
        one_epoch = jax.vmap(
            one_epoch, in_axes=(0, None, 0, None, None, 0, None, None, None, None, None)
        )

    def run(carry, x, y, sw, plan, x_val, y_val):
        TRACE_COUNTS["epochs" if spec.members is None else "ensemble"] += 1
        E = spec.epochs_per_call
        dtype = dtype_of(x, carry.state.params)
        offset, total, patience, min_delta, perms, rows = _read_plan(plan, dtype, spec, rows_of(x))

        # A while loop, not a scan with a skip branch: it stops at the run's last epoch, early
        # stopping or divergence (of every member), so a call spends nothing on the epoch slots it
        # doesn't use (on a GPU each skipped slot of a scan still cost a loop trip and a
        # conditional).
        def more(c):
            i, carry, _ = c
            going = jnp.any(~carry.stopped & ~carry.diverged)
            return (i < E) & (offset + i < total) & going

        def epoch(c):
            i, carry, hist = c
            perm = None if perms is None else perms[i]
            carry, out = one_epoch(
                carry, offset + i, perm, x, y, sw, x_val, y_val, patience, min_delta, rows
            )
            hist = tuple(h.at[i].set(v) for h, v in zip(hist, out, strict=True))
            return i + 1, carry, hist

        shape = (E,) if spec.members is None else (E, spec.members)
        nan = jnp.full(shape, jnp.nan, dtype)
        no = jnp.zeros(shape, bool)
        hist = (no, nan, nan, nan, nan, no)  # ran, train/val loss, val metric, lr, improved
        _, carry, hist = lax.while_loop(more, epoch, (jnp.zeros((), jnp.int32), carry, hist))
        return carry, _report(hist, carry, dtype)

    if spec.mesh is None:
        return jax.jit(run, donate_argnums=0, compiler_options=options_if(spec.quick))
    if spec.members is None:
        return jax.jit(run, donate_argnums=0, out_shardings=replicated(spec.mesh))
    # Members split across the "data" axis: carry leaves (K, ...); the report is replicated.
    out = (sharded(spec.mesh, 0), replicated(spec.mesh))
    return jax.jit(run, donate_argnums=0, out_shardings=out)
