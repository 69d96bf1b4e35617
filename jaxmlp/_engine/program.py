"""The compiled programs: the jitted training step and the fused multi-epoch program.

One compiled program runs up to ``epochs_per_call`` whole epochs (a while loop that ends with the
run, early stopping or divergence): for each epoch it takes the row
order drawn on the host (:func:`epoch_permutations`), gathers the padded minibatches, runs every
step with ``lax.scan`` and computes the epoch's metrics, early-stopping bookkeeping and
divergence flag, all on the device. ``training.fit`` drives it from the host;
``ensemble.fit_ensemble`` vmaps :func:`make_epoch` over members.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxmlp._checks import check_choice, check_nonnegative, check_optimizer
from jaxmlp._core.backprop import METHODS, check_model_loss, value_and_grad
from jaxmlp._core.losses import Loss
from jaxmlp._core.metrics import evaluate
from jaxmlp._core.mlp import MLP, Dense, Params
from jaxmlp._distributed import check_mesh, put, replicated, sharded
from jaxmlp._engine.orders import call_permutations, epoch_permutations, order_seed  # noqa: F401

DEFAULT_LEARNING_RATE = 0.01
# Plain gradient descent, the lecture's eq. 17: w <- w - eta dL/dw. One shared object, so that
# repeated calls without an optimizer reuse the compiled programs.
DEFAULT_OPTIMIZER = optax.sgd(DEFAULT_LEARNING_RATE)

# Python-level trace counts per compiled function kind (tests assert nothing retraces).
TRACE_COUNTS: dict[str, int] = {"step": 0, "epochs": 0, "ensemble": 0}


class TrainState(NamedTuple):
    """The training state pytree: parameters, optimizer state and the step counter."""

    params: Params
    opt_state: Any
    step: jax.Array

    @classmethod
    def create(
        cls,
        params: Params,
        optimizer: optax.GradientTransformation | None = None,
        *,
        mesh: Mesh | None = None,
    ) -> TrainState:
        """A fresh state; copies ``params`` so that donating the state never invalidates them.

        With ``mesh`` the state is replicated on every device of the mesh.
        """
        optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
        _check_state_params(params)
        state = _compiled_init(_init_state, params, optimizer)
        return state if mesh is None else put(state, replicated(mesh))


def _init_state(params: Params, optimizer) -> TrainState:
    # Inside jit the outputs are new buffers: the copies that donation may consume.
    params = jax.tree.map(jnp.copy, params)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def _init_carry(params: Params, optimizer, dtype, track_best: bool) -> _Carry:
    """``fit``'s starting carry: a fresh state, no best score yet, nothing stopped or diverged."""
    return _Carry(
        _init_state(params, optimizer),
        jax.tree.map(jnp.copy, params) if track_best else None,
        jnp.asarray(jnp.inf, dtype),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), bool),
        jnp.zeros((), bool),
        jnp.asarray(-1, jnp.int32),
        jnp.asarray(-1, jnp.int32),
    )


def _init_member_states(params: Params, optimizer) -> TrainState:
    """Fresh states for members stacked on a leading axis (``fit_ensemble``)."""
    return jax.vmap(lambda p: _init_state(p, optimizer))(params)


@functools.lru_cache(maxsize=64)
def _init_program(init: Callable, static: tuple) -> Callable:
    # The static arguments closed over: the compiled call takes the parameters alone, which keeps
    # it on JAX's fast C++ dispatch path.
    return jax.jit(lambda params: init(params, *static))


def _compiled_init(init: Callable, params: Params, *static) -> Any:
    """``init(params, *static)`` as one compiled call (a dispatch per leaf costs more than the
    work), or eagerly when ``static`` cannot be cached on (an unhashable optimizer)."""
    try:
        program = _init_program(init, static)
    except TypeError:
        return init(params, *static)
    return program(params)


def member_states(params: Params, optimizer) -> TrainState:
    """``TrainState.create`` for every member of stacked ``params``, in one compiled call."""
    return _compiled_init(_init_member_states, params, optimizer)


def fresh_carry(params: Params, optimizer, dtype, track_best: bool) -> _Carry:
    """The carry ``fit`` starts from (``params`` are copied, never donated)."""
    return _compiled_init(_init_carry, params, optimizer, jnp.dtype(dtype), bool(track_best))


def _check_state_params(params: Any) -> None:
    """Model-free structure check: a tuple of ``Dense`` holding float arrays."""
    if not (isinstance(params, (tuple, list)) and all(isinstance(p, Dense) for p in params)):
        raise TypeError(f"params: expected a tuple of Dense, got {type(params).__name__}")
    for l, layer in enumerate(params):
        for name in ("w", "b"):
            a = getattr(layer, name)
            if not (hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)):
                got = getattr(a, "dtype", type(a).__name__)
                raise TypeError(f"params[{l}].{name}: expected a float array, got {got}")


def _apply_update(optimizer, state: TrainState, grads: Params) -> TrainState:
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1)


def make_train_step(
    model: MLP,
    loss: str | Loss,
    optimizer: optax.GradientTransformation | None = None,
    *,
    method: str = "manual",
    l2: float = 0.0,
    mesh: Mesh | None = None,
) -> Callable:
    """Builds ``step(state, x, y, sample_weight=None) -> (state, loss_value)``, jitted.

    The state argument is donated: pass a ``TrainState`` from ``TrainState.create`` (which
    copies the parameters) and use only the returned state afterwards. With ``mesh`` (see
    ``data_parallel_mesh``) the batch rows are split across its ``"data"`` axis (the batch
    must divide evenly) and the state is replicated: create it with ``TrainState.create(...,
    mesh=mesh)``.
    """
    loss = check_model_loss(model, loss)
    check_choice(method, "method", METHODS)
    if mesh is not None:
        check_mesh(mesh)
    return _train_step(
        model,
        loss,
        check_optimizer(optimizer, DEFAULT_OPTIMIZER),
        method,
        check_nonnegative(l2, "l2"),
        mesh,
    )


@functools.lru_cache(maxsize=64)
def _train_step(model, loss, optimizer, method, l2, mesh):
    vg = value_and_grad(model, loss, method=method, l2=l2)

    def step(state, x, y, sample_weight=None):
        TRACE_COUNTS["step"] += 1
        if not isinstance(state, TrainState):
            raise TypeError(
                f"state: expected a jaxmlp.TrainState (TrainState.create), got {type(state).__name__}"
            )
        if mesh is not None:
            check_mesh(mesh, jnp.shape(x)[0] if jnp.ndim(x) == 2 else None, "mesh")
            x, y, sample_weight = lax.with_sharding_constraint(
                (x, y, sample_weight),
                (sharded(mesh), sharded(mesh), None if sample_weight is None else sharded(mesh)),
            )
        value, grads = vg(state.params, x, y, sample_weight)
        return _apply_update(optimizer, state, grads), value

    out = None if mesh is None else replicated(mesh)
    return jax.jit(step, donate_argnums=0, out_shardings=out)


class _Carry(NamedTuple):
    state: TrainState
    best_params: Params | None
    best_score: jax.Array
    wait: jax.Array
    stopped: jax.Array
    diverged: jax.Array
    bad_epoch: jax.Array
    bad_step: jax.Array


class _Spec(NamedTuple):
    model: MLP
    loss: Loss
    optimizer: Any
    method: str
    l2: float
    batch_size: int
    drop_last: bool
    shuffle: bool
    epochs_per_call: int
    track_best: bool
    has_val: bool
    mesh: Mesh | None = None


# Steps per loop trip of an epoch's step scan: the same arithmetic, less loop overhead. On GPUs and
# TPUs up to 8 (the S config's whole epoch: 9% less time per epoch than 2 on an H100, and faster to
# compile there); on CPUs 2 (no faster unrolled further, and twice as slow to compile fully
# unrolled). benchmarks/probe_fit.py measures the variants.
_STEP_UNROLL = {"cpu": 2, "accelerator": 8}


def _step_unroll(n_batches: int) -> int:
    kind = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    return max(1, min(n_batches, _STEP_UNROLL[kind]))


def _tree_where(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def _param_total(params: Params) -> jax.Array:
    # One reduction tells whether any parameter is NaN or Inf (one over all of them: a reduction
    # per leaf costs a kernel launch apiece, as much as the small matmuls).
    return jnp.sum(jnp.concatenate([a.ravel() for a in jax.tree.leaves(params)]))


def make_epoch(spec: _Spec, *, check_steps: bool = True) -> Callable:
    """One training epoch for one model, pure: ``(state, bad, bad_step, x, y, sw, perm)
    -> (state, bad, bad_step, train_loss)``. ``fit`` runs it in a loop; ``fit_ensemble`` vmaps it.

    The epoch visits the rows in the order ``perm`` (see :func:`epoch_permutations`; ``None``
    without shuffling: the stored order), pads the last batch with weight-0 rows, and stops
    applying updates at the first non-finite step (``bad``), whose 1-based index it records in
    ``bad_step``. ``sw`` holds per-row sample weights, or ``None`` when every row weighs 1.

    With ``check_steps=False`` (the fast path of ``fit`` and ``fit_ensemble``) no step is checked:
    the finiteness check runs once, on the epoch's losses and final parameters. A non-finite epoch
    (or one entered with ``bad`` set) returns its *starting* state with ``bad`` set and
    ``bad_step`` unchanged (-1), and ``fit`` replays it with the per-step checks to find the step
    and the last finite state. Once a parameter is NaN or Inf it stays so (``w + u`` is never
    finite again), so a finite end means every step was finite. Per step this saves the check and
    a select per state leaf: on a GPU, where a small model's step is a few dozen kernels of about a
    microsecond each, that is about a quarter of them.
    """
    vg = value_and_grad(spec.model, spec.loss, method=spec.method, l2=spec.l2)
    B = spec.batch_size

    def step(c, batch):
        state, bad, bad_step, i = c
        value, grads = vg(state.params, *batch)
        new = _apply_update(spec.optimizer, state, grads)
        if not check_steps:
            return (new, bad, bad_step, i + 1), value
        ok = jnp.isfinite(value) & jnp.isfinite(_param_total(new.params)) & ~bad
        bad_step = jnp.where(bad | ok, bad_step, i)
        return (_tree_where(ok, new, state), bad | ~ok, bad_step, i + 1), value

    def train_epoch(state, bad, bad_step, x, y, sw, perm):
        n = x.shape[0]
        if perm is None:
            perm = jnp.arange(n, dtype=jnp.int32)
        nb = n // B if spec.drop_last else -(-n // B)
        pad = 0 if spec.drop_last else nb * B - n
        # Padded rows point at row 0 and weigh 0: fixed shapes, no data dropped.
        idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)])[: nb * B]
        if pad or sw is not None:
            w = jnp.concatenate([jnp.ones((n,), x.dtype), jnp.zeros((pad,), x.dtype)])[: nb * B]
            w = w if sw is None else w * sw[idx]
            w = w.reshape(nb, B)
        else:
            w = None  # every row weighs 1: the plain mean, no weights to gather or sum
        batches = (x[idx].reshape(nb, B, x.shape[1]), y[idx].reshape(nb, B, *y.shape[1:]), w)
        if spec.mesh is not None:
            # Rows of every minibatch split across the "data" axis; XLA adds the all-reduce.
            batches = lax.with_sharding_constraint(batches, sharded(spec.mesh, axis=1))

        init = (state, bad, bad_step, jnp.ones((), jnp.int32))
        (new, bad_new, bad_step, _), values = lax.scan(step, init, batches, unroll=_step_unroll(nb))
        if check_steps:
            state, bad = new, bad_new
        else:
            fine = jnp.all(jnp.isfinite(values)) & jnp.isfinite(_param_total(new.params)) & ~bad
            state, bad = _tree_where(fine, new, state), ~fine
        if spec.loss.reduction != "mean":
            train_loss = jnp.sum(values)
        elif w is None:
            train_loss = jnp.mean(values)
        else:
            wsum = jnp.sum(w, axis=1)
            train_loss = jnp.sum(values * wsum) / jnp.sum(wsum)
        return state, bad, bad_step, train_loss

    return train_epoch


@functools.lru_cache(maxsize=64)
def replay_program(spec: _Spec) -> Callable:
    """The jitted epoch with a check after every step, for ``fit`` to replay a non-finite epoch of
    its fast path (compiled only when a run diverges)."""
    return jax.jit(make_epoch(spec))


# One call's run-time arguments travel to the device as one int32 vector (its plan) and its results
# come back as one vector (its report): on a GPU every separate host-device copy costs about
# 0.1-0.2 ms, as much as an epoch of a small model.


class Report(NamedTuple):
    """What the host reads after one call of the multi-epoch program (NumPy values).

    ``ran``, ``train_loss``, ``val_loss``, ``val_metric`` and ``improved`` have one entry per
    epoch slot of the call (``ran`` tells which slots ran); the rest are the carry's counters.
    """

    ran: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_metric: np.ndarray
    improved: np.ndarray
    stopped: bool
    diverged: bool
    bad_epoch: int
    bad_step: int
    step: int


def _wide(dtype) -> np.dtype:
    """The float type losses and ``min_delta`` travel as: float64 for float64 data, else float32
    (which holds bfloat16 and float16 values exactly)."""
    return np.dtype(np.float64 if np.dtype(dtype).itemsize == 8 else np.float32)


def make_plan(offset: int, total: int, patience: int, min_delta, dtype, perms) -> np.ndarray:
    """The int32 plan of one call: first epoch, the run's last epoch (exclusive), patience,
    ``min_delta``'s bits (one or two words), then the row orders (if shuffling)."""
    words = np.asarray(min_delta, _wide(dtype)).reshape(1).view(np.int32)
    head = np.concatenate([np.array([offset, total, patience], np.int32), words])
    return head if perms is None else np.concatenate([head, np.asarray(perms, np.int32).ravel()])


def _read_plan(plan: jax.Array, dtype, epochs: int, n: int, shuffle: bool):
    wide = _wide(dtype)
    k = wide.itemsize // 4
    bits = plan[3 : 3 + k] if k > 1 else plan[3]
    min_delta = lax.bitcast_convert_type(bits, wide).astype(dtype)
    perms = plan[3 + k :].reshape(epochs, n) if shuffle else None
    return plan[0], plan[1], plan[2], min_delta, perms


def _report(hist, carry: _Carry, dtype) -> jax.Array:
    wide = _wide(dtype)
    word = jnp.int64 if wide.itemsize == 8 else jnp.int32
    ran, train_loss, val_loss, val_metric, improved = hist
    losses = jnp.stack([train_loss, val_loss, val_metric]).astype(wide)
    counters = (carry.stopped, carry.diverged, carry.bad_epoch, carry.bad_step, carry.state.step)
    return jnp.concatenate([
        lax.bitcast_convert_type(losses, word).ravel(),
        jnp.stack([ran, improved]).astype(word).ravel(),
        jnp.stack(counters).astype(word),
    ])  # fmt: skip


def read_report(report: np.ndarray, epochs: int, dtype) -> Report:
    """:class:`Report` of one call's report vector (already on the host)."""
    E = epochs
    losses = np.ascontiguousarray(report[: 3 * E]).view(_wide(dtype)).reshape(3, E)
    ran, improved = report[3 * E : 5 * E].reshape(2, E).astype(bool)
    stopped, diverged, bad_epoch, bad_step, step = (int(v) for v in report[5 * E :])
    return Report(ran, *losses, improved, bool(stopped), bool(diverged), bad_epoch, bad_step, step)


@functools.lru_cache(maxsize=64)
def _epochs_program(spec: _Spec):
    """The jitted multi-epoch program for one static configuration (cached):
    ``(carry, x, y, sw, plan, x_val, y_val) -> (carry, report)`` (see :func:`make_plan`,
    :func:`read_report`)."""
    train_epoch = make_epoch(spec, check_steps=False)

    def run(carry, x, y, sw, plan, x_val, y_val):
        TRACE_COUNTS["epochs"] += 1
        E = spec.epochs_per_call
        offset, total, patience, min_delta, perms = _read_plan(
            plan, x.dtype, E, x.shape[0], spec.shuffle
        )

        def one_epoch(carry: _Carry, e, perm):
            state, bad, bad_step, train_loss = train_epoch(
                carry.state, carry.diverged, carry.bad_step, x, y, sw, perm
            )
            if spec.has_val:
                val_loss, val_metric = evaluate(spec.model, spec.loss, state.params, x_val, y_val)
                score = val_loss
            else:
                val_loss = val_metric = jnp.asarray(jnp.nan, x.dtype)
                score = train_loss
            improved = score < carry.best_score - min_delta
            best_params = (
                _tree_where(improved, state.params, carry.best_params) if spec.track_best else None
            )
            wait = jnp.where(improved, 0, carry.wait + 1)
            new_carry = _Carry(
                state,
                best_params,
                jnp.where(improved, score, carry.best_score),
                wait,
                wait >= patience,
                bad,
                jnp.where(bad & ~carry.diverged, e, carry.bad_epoch),
                bad_step,
            )
            return new_carry, (train_loss, val_loss, val_metric, improved)

        # A while loop, not a scan with a skip branch: it stops at the run's last epoch, early
        # stopping or divergence, so a call spends nothing on the epoch slots it doesn't use (on a
        # GPU each skipped slot of a scan still cost a loop trip and a conditional).

        def more(c):
            i, carry, _ = c
            return (i < E) & (offset + i < total) & ~carry.stopped & ~carry.diverged

        def epoch(c):
            i, carry, hist = c
            carry, out = one_epoch(carry, offset + i, None if perms is None else perms[i])
            hist = tuple(h.at[i].set(v) for h, v in zip(hist, (True, *out), strict=True))
            return i + 1, carry, hist

        nan = jnp.full((E,), jnp.nan, x.dtype)
        no = jnp.zeros((E,), bool)
        hist = (no, nan, nan, nan, no)  # ran, train loss, val loss, val metric, improved
        _, carry, hist = lax.while_loop(more, epoch, (jnp.zeros((), jnp.int32), carry, hist))
        return carry, _report(hist, carry, x.dtype)

    out = None if spec.mesh is None else replicated(spec.mesh)
    return jax.jit(run, donate_argnums=0, out_shardings=out)
