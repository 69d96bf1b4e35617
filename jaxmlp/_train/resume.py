"""Training checkpoints: what one holds beyond the state, and resuming from one.

A checkpoint written by ``fit`` or ``fit_ensemble`` carries, besides parameters, optimizer state and
step, the run's key, the early-stopping bookkeeping (best score, patience counter, stopped flag,
best parameters) and the history, so that a resumed run continues bit for bit. An ensemble's
checkpoint holds every member (a leading member axis on every array) and its divergence flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp._checkpoint.files import latest_checkpoint, load_checkpoint, save_checkpoint
from jaxmlp._core.mlp import MLP
from jaxmlp._distributed import local
from jaxmlp._engine.program import Carry
from jaxmlp._engine.step import TrainState
from jaxmlp.errors import CheckpointError


def _jsonable(history: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {k: [np.asarray(v).tolist() for v in vs] for k, vs in history.items()}


def save(
    path: Path,
    model: MLP,
    carry: Carry,
    key: jax.Array,
    done: int,
    history: dict[str, list[Any]],
    best_epoch: Any,
    members: int | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Writes the run's state after ``done`` epochs (process 0 only)."""
    if jax.process_index() != 0:
        return
    carry = jax.tree.map(local, carry)
    extra = {
        "key": local(key),
        "best_score": carry.best_score,
        "wait": carry.wait,
        "stopped": carry.stopped,
    }
    if members is not None:
        extra.update(diverged=carry.diverged, bad_epoch=carry.bad_epoch, step=carry.state.step)
    if carry.best_params is not None:
        extra["best_params"] = carry.best_params
    if best_epoch is not None:
        best_epoch = np.asarray(best_epoch).tolist()
    meta = {"epoch": done, "history": _jsonable(history), "best_epoch": best_epoch, **(info or {})}
    step = np.asarray(carry.state.step)
    save_checkpoint(
        path,
        model=model,
        params=carry.state.params,
        opt_state=carry.state.opt_state,
        step=int(step.max()),
        metadata=meta,
        extra_arrays=extra,
        members=members,
    )


def resume(directory: Any, model: MLP, carry: Carry, track_best: bool, members: int | None = None):
    """``(carry, key, done, history, best_epoch)`` from the newest checkpoint in ``directory``, or
    ``None`` when there is none."""
    path = latest_checkpoint(directory)
    if path is None:
        return None
    try:
        ck = load_checkpoint(path, model=model, opt_state_like=carry.state.opt_state)
    except CheckpointError:
        _check_members(path, load_checkpoint(path, model=model).members, members)
        raise
    _check_members(path, ck.members, members)
    meta = ck.metadata
    if not isinstance(meta, dict) or not {"epoch", "history"} <= set(meta):
        raise CheckpointError(f"checkpoint {path}: not written by fit (no epoch/history metadata)")
    extra = ck.extra
    if members is None:
        step = jnp.asarray(ck.step or 0, jnp.int32)
    else:  # the members' own counts (one that stopped early took fewer steps)
        step = jnp.asarray(extra["step"], jnp.int32)
    state = TrainState(ck.params, ck.opt_state, step)
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
    if members is not None:
        carry = carry._replace(
            diverged=jnp.asarray(extra["diverged"], bool),
            bad_epoch=jnp.asarray(extra["bad_epoch"], jnp.int32),
        )
    return carry, extra["key"], int(meta["epoch"]), meta["history"], meta.get("best_epoch")


def _check_members(path: Path, stored: int | None, members: int | None) -> None:
    """A one-model checkpoint never resumes an ensemble, nor one ensemble another's size."""
    if stored == members:
        return

    def what(m: int | None) -> str:
        return "one model" if m is None else f"an ensemble of {m}"

    raise CheckpointError(
        f"checkpoint {path}: holds {what(stored)}, this run trains {what(members)}"
    )
