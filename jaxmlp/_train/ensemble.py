"""Ensembles and sweeps: K independent models trained in one compiled program with ``jax.vmap``.

Every member has its own initialisation key and, by default, its own data order; optionally
a bootstrap resample of the rows (as integer sample weights, so shapes stay fixed) and its own
learning rate (a sweep, through ``optax.inject_hyperparams``). The per-member epoch is the very
function ``fit`` scans (``engine.make_epoch``), vmapped over the member axis.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from jaxmlp._checks import check_choice, check_int, check_key, check_nonnegative, check_optimizer
from jaxmlp._core.backprop import METHODS, check_model_loss
from jaxmlp._core.losses import Loss
from jaxmlp._core.metrics import evaluate, metric_name
from jaxmlp._core.mlp import MLP, Params, as_batch, check_finite_params, check_params
from jaxmlp._distributed import check_mesh, put, replicated, sharded
from jaxmlp._engine.orders import seed_from_words
from jaxmlp._engine.program import (
    DEFAULT_OPTIMIZER,
    TRACE_COUNTS,
    _check_state_params,
    _Spec,
    call_permutations,
    make_epoch,
    member_states,
)
from jaxmlp._train.inputs import (
    _auto_epochs_per_call,
    clip_batch_size,
    prepare_data,
    prepare_validation,
)
from jaxmlp.errors import JaxmlpWarning


class EnsembleResult(NamedTuple):
    """What ``fit_ensemble`` returns.

    Attributes:
        params: the members' parameters stacked on a leading axis of size K.
        opt_state: the members' optimizer states, stacked likewise.
        history: ``loss`` (and ``val_loss``, ``val_metric`` with validation data) as
            ``(epochs, K)`` NumPy arrays.
        diverged: ``(K,)`` bool; a diverged member keeps its parameters (and optimizer state) from
            the end of its last finite epoch: steps run unchecked, one finiteness check per epoch.
        learning_rates: the sweep's ``(K,)`` learning rates, or None.
        metric: the name of ``val_metric``.
    """

    params: Params
    opt_state: Any
    history: dict[str, np.ndarray]
    diverged: np.ndarray
    learning_rates: np.ndarray | None
    metric: str


@functools.lru_cache(maxsize=32)
def _ensemble_program(spec: _Spec):
    # Unchecked steps, one finiteness check per member and epoch (engine.make_epoch): under vmap
    # the per-step check's selects ran for every member at every step.
    train_epoch = jax.vmap(make_epoch(spec, check_steps=False), in_axes=(0, 0, 0, None, None, 0, 0))
    member_eval = jax.vmap(
        functools.partial(evaluate, spec.model, spec.loss), in_axes=(0, None, None)
    )

    def run(carry, x, y, sw, perms, x_val, y_val, offset, total):
        TRACE_COUNTS["ensemble"] += 1
        E, K = spec.epochs_per_call, carry[1].shape[0]

        def epoch(c):
            i, carry, hist = c
            # perms: (epochs, K, n), every member's row order for every epoch of this call.
            perm = None if perms is None else perms[i]
            state, bad, bad_step, train_loss = train_epoch(*carry, x, y, sw, perm)
            if spec.has_val:
                val_loss, val_metric = member_eval(state.params, x_val, y_val)
            else:
                val_loss = val_metric = jnp.full_like(train_loss, jnp.nan)
            out = (train_loss, val_loss, val_metric)
            hist = tuple(h.at[i].set(v) for h, v in zip(hist, out, strict=True))
            return i + 1, (state, bad, bad_step), hist

        # As in fit's program: a while loop that stops at the run's last epoch (a scan over every
        # slot of the call would still spend a loop trip and a conditional on each unused one).
        def more(c):
            return (c[0] < E) & (offset + c[0] < total)

        nan = jnp.full((E, K), jnp.nan, x.dtype)
        _, carry, hist = lax.while_loop(more, epoch, (jnp.zeros((), jnp.int32), carry, (nan,) * 3))
        return carry, hist

    if spec.mesh is None:
        return jax.jit(run, donate_argnums=0)
    # Members split across the "data" axis: carry leaves (K, ...), metrics (epochs, K).
    return jax.jit(
        run, donate_argnums=0, out_shardings=(sharded(spec.mesh, 0), sharded(spec.mesh, 1))
    )


def _member_permutations(spec: _Spec, seeds, done: int, limit: int, n: int):
    """``(epochs_per_call, K, n)`` row orders for one call (``None`` without shuffling); members
    sharing a seed (``same_order``) share one draw."""
    if not spec.shuffle:
        return None
    drawn: dict[bytes, np.ndarray] = {}
    for seed in seeds:
        if seed.tobytes() not in drawn:
            drawn[seed.tobytes()] = call_permutations(spec, seed, done, limit, n)
    return np.stack([drawn[seed.tobytes()] for seed in seeds], axis=1)


def fit_ensemble(
    model: MLP,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    num_models: int,
    loss: str | Loss,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    learning_rates: Sequence[float] | None = None,
    optimizer_fn: Callable[..., optax.GradientTransformation] = optax.sgd,
    epochs: int = 10,
    batch_size: int = 32,
    method: str = "manual",
    l2: float = 0.0,
    shuffle: bool = True,
    same_order: bool = False,
    bootstrap: bool = False,
    validation_data: tuple[Any, Any] | None = None,
    params: Params | None = None,
    epochs_per_call: int | None = None,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> EnsembleResult:
    """Trains ``num_models`` independent members at once (one vmapped, fused program).

    Args:
        model: the shared architecture.
        x, y: the training data, shared by all members.
        num_models: K, the number of members.
        loss, key, epochs, batch_size, method, l2, shuffle, validation_data: as in ``fit``.
        optimizer: the members' optimizer (default ``optax.sgd(0.01)``); not with a sweep.
        learning_rates: K learning rates for a sweep; the optimizer is then
            ``optax.inject_hyperparams(optimizer_fn)(learning_rate=...)``.
        same_order: every member sees the same data order (default: its own).
        bootstrap: each member trains on a bootstrap resample (n rows drawn with replacement).
        params: starting parameters stacked on a leading K axis (default: ``model.init``
            with K different keys).
        mesh: shard the member axis across the mesh's ``"data"`` axis (one group of members
            per device; ``num_models`` must divide evenly). The data are replicated.
    """
    lossf = check_model_loss(model, loss)
    check_choice(method, "method", METHODS)
    l2 = check_nonnegative(l2, "l2")
    key = check_key(key)
    K = check_int(num_models, "num_models", 1)
    epochs = check_int(epochs, "epochs", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
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
    xb, yb, words = prepare_data(
        model,
        lossf,
        member0,
        x,
        y,
        key=order_keys[np.zeros(K, np.int32)] if same_order else order_keys,
    )
    seeds = seed_from_words(words)
    n = xb.shape[0]
    batch_size = clip_batch_size(batch_size, n)

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
    _check_state_params(params)
    states = member_states(params, optimizer)
    if lrs is not None:
        hyper = {**states.opt_state.hyperparams, "learning_rate": jnp.asarray(lrs, xb.dtype)}
        states = states._replace(opt_state=states.opt_state._replace(hyperparams=hyper))

    if bootstrap:
        draws = jax.random.randint(k_boot, (K, n), 0, n)
        sw = jax.vmap(lambda d: jnp.bincount(d, length=n))(draws).astype(xb.dtype)
    else:
        sw = None  # every row weighs 1 for every member
    has_val = validation_data is not None
    xv, yv, _ = prepare_validation(model, lossf, member0, validation_data)
    n_batches = -(-n // batch_size)
    if epochs_per_call is None:
        epochs_per_call = _auto_epochs_per_call(model, n_batches, batch_size, K)
    if mesh is not None:
        size = check_mesh(mesh)
        if K % size:
            raise ValueError(
                f"num_models: {K} members do not divide across the {size} devices of the mesh"
            )
    spec = _Spec(model, lossf, optimizer, method, l2, batch_size, False, bool(shuffle),
                 check_int(epochs_per_call, "epochs_per_call", 1), False, has_val, mesh)  # fmt: skip
    program = _ensemble_program(spec)

    carry = (states, jnp.zeros((K,), bool), jnp.full((K,), -1, jnp.int32))
    if mesh is not None:
        carry, sw = put((carry, sw), sharded(mesh, 0))
        xb, yb, xv, yv = put((xb, yb, xv, yv), replicated(mesh))

    def orders(start: int):
        perms = _member_permutations(spec, seeds, start, epochs, n)
        return perms if mesh is None or perms is None else put(perms, sharded(mesh, 1))

    chunks = []
    from tqdm.auto import tqdm

    with tqdm(total=epochs, disable=not progress, unit="epoch", desc=f"fit_ensemble K={K}") as bar:
        done, perms = 0, orders(0)
        while done < epochs:
            carry, out = program(carry, xb, yb, sw, perms, xv, yv, done, epochs)
            ran = min(spec.epochs_per_call, epochs - done)
            # The call runs asynchronously (every call runs its whole length: no early stopping
            # here): draw the next call's row orders meanwhile, as fit does.
            if done + ran < epochs:
                perms = orders(done + ran)
            chunks.append([np.asarray(o)[:ran] for o in jax.device_get(out)])
            done += ran
            bar.update(ran)
            bar.set_postfix(loss=f"{np.nanmean(chunks[-1][0][-1]):.4g}")
    names = ("loss", "val_loss", "val_metric") if has_val else ("loss",)
    history = {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)}
    states, bad, _ = carry
    diverged = np.asarray(bad)
    if diverged.any():
        warnings.warn(
            f"fit_ensemble: members {np.flatnonzero(diverged).tolist()} diverged (non-finite loss); "
            "they keep their parameters from the end of their last finite epoch",
            JaxmlpWarning,
            stacklevel=2,
        )
    return EnsembleResult(
        states.params, states.opt_state, history, diverged, lrs, metric_name(lossf)
    )


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
