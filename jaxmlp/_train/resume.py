"""``fit``'s checkpoints: what a training checkpoint holds beyond the state, and resuming from one.

A checkpoint written by ``fit`` carries, besides parameters, optimizer state and step, the
shuffling key, the early-stopping bookkeeping (best score, patience counter, stopped flag, best
parameters) and the history, so that a resumed run continues bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp._checkpoint.files import latest_checkpoint, load_checkpoint, save_checkpoint
from jaxmlp._distributed import local
from jaxmlp._engine.program import TrainState, _Carry
from jaxmlp.errors import CheckpointError


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
