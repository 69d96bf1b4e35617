"""Ensembles and sweeps: K independent models trained by the engine's program with a member axis.

Every member has its own initialisation key and, by default, its own data order; optionally
a bootstrap resample of the rows (as integer sample weights, so shapes stay fixed) and its own
learning rate (a sweep, through ``optax.inject_hyperparams``). The per-member epoch is the very
function ``fit`` runs (:func:`jaxmlp._engine.program.member_epoch`), vmapped over the member axis,
and the host loop is ``fit``'s (:func:`jaxmlp._train.driver.drive`): early stopping, sample weights,
checkpoints and callbacks work per member.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
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
from jaxmlp._core.mlp import MLP, Params, as_batch, check_finite_params, check_params
from jaxmlp._core.objective import Objective, as_objective
from jaxmlp._distributed import check_mesh, put, replicated, sharded
from jaxmlp._engine.orders import order_seed, seed_from_words
from jaxmlp._engine.program import (
    Spec,
    dropout_root,
    dtype_of,
    epoch_flops,
    fresh_carry,
    learning_rate,
    quick_compile,
)
from jaxmlp._engine.step import DEFAULT_OPTIMIZER, check_state_params
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
from jaxmlp.errors import JaxmlpWarning


class EnsembleResult(NamedTuple):
    """What ``fit_ensemble`` returns.

    Attributes:
        params: the members' parameters stacked on a leading axis of size K (with early
            stopping and ``restore_best``, each member's best).
        opt_state: the members' optimizer states, stacked likewise.
        history: ``loss`` (and ``val_loss``, ``val_metric`` with validation data) as
            ``(epochs, K)`` NumPy arrays; NaN where a member had stopped or diverged.
        diverged: ``(K,)`` bool; a diverged member keeps its parameters (and optimizer state) from
            the end of its last finite epoch: steps run unchecked, one finiteness check per epoch.
        learning_rates: the sweep's ``(K,)`` learning rates, or None.
        metric: the name of ``val_metric``.
        best_epoch: ``(K,)`` 1-based epoch of each member's best monitored loss (0: none) with
            early stopping, else None.
        stopped_epoch: ``(K,)`` the epoch at which early stopping ended each member (0: it ran
            to the end).
        diverged_epoch: ``(K,)`` the 1-based epoch in which each member diverged (0: never).
        step: ``(K,)`` optimizer steps each member took.
    """

    params: Params
    opt_state: Any
    history: dict[str, np.ndarray]
    diverged: np.ndarray
    learning_rates: np.ndarray | None
    metric: str
    best_epoch: np.ndarray | None = None
    stopped_epoch: np.ndarray | None = None
    diverged_epoch: np.ndarray | None = None
    step: np.ndarray | None = None


def fit_ensemble(
    model: MLP,
    x: Any,
    y: jax.typing.ArrayLike | None = None,
    *,
    num_models: int,
    loss: str | Loss | Objective | Callable[..., jax.Array],
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    learning_rates: Sequence[float] | None = None,
    optimizer_fn: Callable[..., optax.GradientTransformation] = optax.sgd,
    epochs: int = 10,
    batch_size: int = 32,
    method: str = "manual",
    l2: float = 0.0,
    l1: float = 0.0,
    shuffle: bool = True,
    same_order: bool = False,
    bootstrap: bool = False,
    validation_data: tuple[Any, Any] | None = None,
    params: Params | None = None,
    epochs_per_call: int | None = None,
    progress: bool = True,
    mesh: Mesh | None = None,
    early_stopping: EarlyStopping | None = None,
    sample_weight: jax.typing.ArrayLike | None = None,
    drop_last: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    callbacks: Sequence[Callback | Callable[[int, Mapping[str, Any]], Any]] | None = None,
) -> EnsembleResult:
    """Trains ``num_models`` independent members at once: the engine's program with a member axis.

    Member ``k`` trains exactly as ``fit`` would train it alone, with the starting parameters
    ``jax.vmap(model.init)(jax.random.split(k_init, K))[k]`` and the key
    ``jax.random.split(k_order, K)[k]``, where ``k_init, k_order, k_boot =
    jax.random.split(key, 3)``: early stopping, sample weights and checkpoints included.

    Args:
        model: the shared architecture.
        x: the training inputs, shared by all members (an objective's rows: any pytree).
        y: the training targets, shared by all members (``None`` for an objective).
        num_models: K, the number of members.
        loss: as in ``fit``.
        key: the ensemble's PRNG key (see above).
        optimizer: the members' optimizer (default ``optax.sgd(0.01)``); not with a sweep.
        learning_rates: K learning rates for a sweep; the optimizer is then
            ``optax.inject_hyperparams(optimizer_fn)(learning_rate=...)``.
        optimizer_fn: the optax factory of a sweep.
        epochs: as in ``fit``.
        batch_size: as in ``fit``.
        method: as in ``fit``.
        l2: as in ``fit``.
        l1: as in ``fit``.
        shuffle: as in ``fit``.
        same_order: every member sees the same data order (default: its own).
        bootstrap: each member trains on a bootstrap resample (n rows drawn with replacement,
            as integer sample weights, multiplied by ``sample_weight``).
        validation_data: as in ``fit``.
        params: starting parameters stacked on a leading K axis (default: ``model.init``
            with K different keys).
        epochs_per_call: as in ``fit``.
        progress: show a tqdm progress bar.
        mesh: shard the member axis across the mesh's ``"data"`` axis (one group of members
            per device; ``num_models`` must divide evenly). The data are replicated.
        early_stopping: as in ``fit``, per member: each member stops, and restores its own
            best, on its own; the call ends when every member has stopped.
        sample_weight: ``(n,)`` non-negative weights per row, shared by the members.
        drop_last: as in ``fit``.
        checkpoint_dir: as in ``fit``; a checkpoint holds every member.
        checkpoint_every: as in ``fit``.
        keep: as in ``fit``.
        resume: as in ``fit``.
        callbacks: as in ``fit``; every metric is a ``(K,)`` array.

    Returns:
        An :class:`EnsembleResult`. A member whose loss became NaN or Inf is reported in
        ``diverged`` (with a ``JaxmlpWarning``) and keeps its last finite state; the others go on.
    """
    objective = as_objective(loss)
    lossf = None if objective is not None else check_model_loss(model, cast("str | Loss", loss))
    check_training_mode(model, objective)
    check_choice(method, "method", METHODS)
    l2 = check_nonnegative(l2, "l2")
    l1 = check_nonnegative(l1, "l1")
    key = check_key(key)
    K = check_int(num_models, "num_models", 1)
    epochs = check_int(epochs, "epochs", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    ckpt = check_checkpointing(checkpoint_dir, checkpoint_every, keep, resume)
    users = as_callbacks(callbacks)
    stopping = check_early_stopping(early_stopping)
    k_init, k_order, k_boot = jax.random.split(key, 3)
    if params is None:
        params = _init_members(model, jax.random.split(k_init, K))
        member0 = jax.tree.map(lambda a: a[0], params)
    else:
        member0 = _member0(model, params, K)
        check_finite_params(params)
    # The members' order seeds come back with the data checks' read (one device-to-host copy),
    # before the states are built: a read after that compiled call would wait for it.
    order_keys = jax.random.split(k_order, K)
    member_keys = order_keys[np.zeros(K, np.int32)] if same_order else order_keys
    drop = bool(drop_last)
    xb, yb, xv, yv, words, n = prepare_training(
        model, lossf, member0, x, y, validation_data, member_keys,
        rows_to=lambda rows: whole_batches(rows, min(batch_size, rows), drop),
        defer=mesh is None,
    )  # fmt: skip
    seeds = seed_from_words(words)
    dtype = dtype_of(xb, member0)
    batch_size = clip_batch_size(batch_size, n)
    if lossf is not None:
        check_custom_loss(model, lossf, member0, xb, yb, batch_size)

    lrs = None
    if learning_rates is not None:
        if optimizer is not None:
            raise ValueError(
                "optimizer: give either optimizer or learning_rates (with optimizer_fn), not both"
            )
        try:
            lrs = np.asarray(learning_rates, np.float64)
        except (TypeError, ValueError):
            lrs = None
        if lrs is None or lrs.shape != (K,) or not np.all(np.isfinite(lrs)) or np.any(lrs <= 0):
            raise ValueError(
                f"learning_rates: expected {K} positive finite values, got {learning_rates!r}"
            )
        _check_optimizer_fn(optimizer_fn)
        optimizer = _sweep_optimizer(optimizer_fn)
    optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
    check_state_params(params)
    assert params is not None
    sw = check_sample_weight(sample_weight, n, dtype)
    carry = fresh_carry(params, optimizer, dtype, stopping.track_best, members=K)
    if lrs is not None:
        opt_state = carry.state.opt_state
        hyper = {**opt_state.hyperparams, "learning_rate": jnp.asarray(lrs, dtype)}
        state = carry.state._replace(opt_state=opt_state._replace(hyperparams=hyper))
        carry = carry._replace(state=state)

    has_val = validation_data is not None
    n_batches = n // batch_size if drop_last else -(-n // batch_size)
    every = None if ckpt.directory is None else ckpt.every
    auto_calls = epochs_per_call is None
    epochs_per_call = choose_epochs_per_call(
        epochs_per_call, model, n_batches, batch_size, K, checkpoint_every=every
    )
    if mesh is not None:
        size = check_mesh(mesh)
        if K % size:
            raise ValueError(
                f"num_models: {K} members do not divide across the {size} devices of the mesh"
            )
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
        has_val=has_val,
        members=K,
        mesh=mesh,
        padded=whole_batches(n, batch_size, bool(drop_last)) > n,
        l1=l1,
        quick=quick_compile(mesh, epoch_flops(carry.state.params, n)),
    )
    lr = learning_rate(carry.state.opt_state) is not None  # the history records it
    done, history = 0, History(has_val, members=K, records_lr=lr)
    if ckpt.resume:
        restored = _resume.resume(ckpt.directory, model, carry, stopping.track_best, members=K)
        if restored is not None:
            carry, stored, done, past, best = restored
            history = History(has_val, past, best, members=K, records_lr=lr)
            # The stored key wins, as in fit: its members' orders and bootstrap draws.
            key = check_key(stored)
            _, k_order, k_boot = jax.random.split(key, 3)
            order_keys = jax.random.split(k_order, K)
            seeds = order_seed(order_keys[np.zeros(K, np.int32)] if same_order else order_keys)
    if bootstrap:
        draws = jax.random.randint(k_boot, (K, n), 0, n)
        boot = jax.vmap(lambda d: jnp.bincount(d, length=n))(draws).astype(dtype)
        sw = boot if sw is None else boot * sw[None]
    elif sw is not None:
        sw = jnp.broadcast_to(sw, (K, n))
    stopped = bool(np.all(np.asarray(carry.stopped) | np.asarray(carry.diverged))) and done > 0
    total = whole_batches(n, batch_size, bool(drop_last))
    if total > n:  # whole batches: sizes less than a batch apart share one program
        xb, yb, sw_t = pad_rows((xb, yb, None if sw is None else sw.T), total)
        sw = None if sw_t is None else sw_t.T
    # Each member's dropout masks: its own stream from the run's key (member k, step t).
    carry = carry._replace(dropout_key=dropout_root(model, key, members=K))
    data = Data(xb, yb, sw, xv, yv)
    if any_deferred(data):
        data = compile_then_stage(spec, carry, data)
    if mesh is not None:
        carry, sw = put((carry, sw), sharded(mesh, 0))
        data = put(data._replace(sw=None), replicated(mesh))._replace(sw=sw)
    run = Run(spec, epochs, stopping.patience, stopping.min_delta, every, seeds, n, auto_calls)

    def save(path: Path, state: CallState) -> None:
        _resume.save(path, model, state.carry, key, state.epoch, state.history,
                     state.best_epoch, members=K)  # fmt: skip

    bar = ProgressBar(epochs, done, f"fit_ensemble K={K}", progress)
    internal: list[Callback] = [bar]
    if ckpt.directory is not None:
        internal.append(Checkpoints(ckpt.directory, ckpt.every, ckpt.keep, save))
    try:
        carry, done, _ = drive(run, carry, data, key, history, [*internal, *users],
                               done=done, stopped=stopped)  # fmt: skip
    finally:
        bar.on_train_end(None)
    stopped_flags, diverged, bad_epoch, steps = host(
        (carry.stopped, carry.diverged, carry.bad_epoch, carry.state.step)
    )
    diverged = np.asarray(diverged, bool)
    if diverged.any():
        warnings.warn(
            f"fit_ensemble: members {np.flatnonzero(diverged).tolist()} diverged (non-finite loss); "
            "they keep their parameters from the end of their last finite epoch",
            JaxmlpWarning,
            stacklevel=2,
        )
    hist = {
        k: np.asarray(history.history[k], np.dtype(dtype)).reshape(-1, K) for k in history.history
    }
    stopped_at = np.zeros(K, np.int64)
    if early_stopping is not None:
        # A member stopped in the epoch after which its patience ran out: the last it trained.
        trained = np.isfinite(hist["loss"])
        last = trained.shape[0] - np.argmax(trained[::-1], axis=0)
        stopped_at = np.where(np.asarray(stopped_flags, bool), last, 0)
    result = EnsembleResult(
        carry.best_params if stopping.track_best else carry.state.params,
        carry.state.opt_state,
        hist,
        diverged,
        lrs,
        "none" if lossf is None else metric_name(lossf),
        np.asarray(history.best_epoch) if early_stopping is not None else None,
        stopped_at,
        np.where(diverged, np.asarray(bad_epoch) + 1, 0),
        np.asarray(steps),
    )
    for cb in users:
        cb.on_train_end(result)
    return result


def _check_optimizer_fn(optimizer_fn: Any) -> None:
    if not callable(optimizer_fn):
        raise TypeError(
            "optimizer_fn: expected an optax factory such as optax.sgd, "
            f"got {type(optimizer_fn).__name__}"
        )
    try:
        params = inspect.signature(optimizer_fn).parameters
    except (TypeError, ValueError):  # no introspectable signature: let optax try it
        return
    if "learning_rate" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"optimizer_fn: {optimizer_fn!r} takes no learning_rate argument")


def _member0(model: MLP, params: Any, num_models: int | None = None) -> Params:
    """Checks ``params`` stacked on a leading member axis; returns the first member's."""
    leaves = jax.tree.leaves(params)
    if not leaves or not all(isinstance(a, (jax.Array, np.ndarray)) and a.ndim for a in leaves):
        raise TypeError(
            "params: expected a tuple of Dense whose arrays carry a leading member axis, "
            f"got {type(params).__name__}"
        )
    lead = sorted({a.shape[0] for a in leaves})
    if len(lead) != 1 or lead[0] == 0 or num_models not in (None, lead[0]):
        want = "" if num_models is None else f" of size num_models={num_models}"
        raise ValueError(
            f"params: every leaf needs the same leading member axis{want}, got sizes {lead}"
        )
    member0 = jax.tree.map(lambda a: a[0], params)
    check_params(model, member0)
    return member0


@functools.partial(jax.jit, static_argnums=0)
def _init_members(model: MLP, keys: jax.Array) -> Params:
    """``model.init`` with each of ``keys``, stacked (one compiled call, not an eager vmap)."""
    return jax.vmap(model.init)(keys)


@functools.lru_cache(maxsize=16)
def _sweep_optimizer(optimizer_fn):
    # Cached so that repeated sweeps reuse one optimizer object, hence one compiled program.
    return optax.inject_hyperparams(optimizer_fn)(learning_rate=1.0)


def ensemble_apply(model: MLP, params: Params, x: jax.typing.ArrayLike) -> jax.Array:
    """Every member's output: ``(K, batch, sizes[-1])`` for stacked ``params``."""
    member0 = _member0(model, params)
    xb, single = as_batch(model, x, member0)
    out = jax.vmap(model.apply, in_axes=(0, None))(params, xb)
    return out[:, 0] if single else out


def predict_ensemble(
    model: MLP, params: Params, x: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """The mean and the variance of the members' outputs, each ``(batch, sizes[-1])``."""
    out = ensemble_apply(model, params, x)
    return jnp.mean(out, axis=0), jnp.var(out, axis=0)
