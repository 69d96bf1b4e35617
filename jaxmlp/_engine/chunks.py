"""The streamed epoch: chunks of minibatch steps whose rows arrive from the host, then the epoch's end.

When the data do not live on the device, the host gathers each chunk's minibatches in the epoch's
row order (the in-memory program's order for the same key) and :func:`chunk_program` runs their
steps: the very step of the in-memory epoch (:func:`jaxmlp._engine.program.make_epoch`), scanned
over rows that are already gathered. :func:`epoch_end_program` then does what the in-memory epoch
does after its steps (one finiteness check, the training loss, validation, early stopping) and
returns the same report, for one epoch. The same key gives the same parameters, bit for bit on a
CPU, as the in-memory program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxmlp._distributed import replicated
from jaxmlp._engine.program import (
    Spec,
    _make_step,
    _param_total,
    _report,
    _step_unroll,
    _tree_where,
    epoch_loss,
    finish_epoch,
)
from jaxmlp._quick import options_if


@functools.lru_cache(maxsize=64)
def chunk_program(spec: Spec, check_steps: bool = False) -> Callable:
    """``(state, bad, bad_step, i, xs, ys, ws, key=None) -> (state, bad, bad_step, i, values,
    wsum)``, jitted (``key``: the run's training-mode root key, as in the in-memory epoch): the steps of one chunk, ``xs`` ``(steps, batch, in)``, ``ys`` ``(steps, batch, ...)``
    and ``ws`` ``(steps, batch)`` weights (``None``: every row weighs 1). ``i`` is the 1-based
    index of the chunk's first step in its epoch; ``values`` are the steps' losses and ``wsum``
    their total weights (``None`` without weights). With ``check_steps`` a non-finite step stops
    the updates and ``bad_step`` records it (the replay of a diverged epoch). Compiled quick as
    the in-memory program would be (:attr:`jaxmlp._engine.program.Spec.quick`)."""
    step = _make_step(spec, check_steps)

    def run(state, bad, bad_step, i, xs, ys, ws, key=None):
        steps = jax.tree.leaves(xs)[0].shape[0]
        (state, bad, bad_step, i), (values, wsum) = lax.scan(
            lambda c, b: step(c, b, key), (state, bad, bad_step, i), (xs, ys, ws),
            unroll=_step_unroll(steps, spec.quick),
        )  # fmt: skip
        return state, bad, bad_step, i, values, wsum

    if spec.mesh is None:
        return jax.jit(run, compiler_options=options_if(spec.quick))
    return jax.jit(run, out_shardings=replicated(spec.mesh))


@functools.lru_cache(maxsize=64)
def epoch_end_program(spec: Spec) -> Callable:
    """``(carry, e, state, values, wsum, x_val, y_val, patience, min_delta) -> (carry, report)``,
    jitted: epoch ``e``'s end once its chunks have run ``carry.state`` to ``state``. ``values``
    and ``wsum`` are every step's loss and total weight; the report is
    :func:`jaxmlp._engine.program.read_report`'s for one epoch. Like the in-memory fast path, a
    non-finite epoch keeps the state it started from and sets ``diverged``."""
    finish = finish_epoch(spec)

    def run(carry, e, state, values, wsum, x_val, y_val, patience, min_delta):
        dtype = jax.tree.leaves(state.params)[0].dtype
        fine = (
            jnp.all(jnp.isfinite(values)) & jnp.isfinite(_param_total(state.params))
            & ~carry.diverged
        )  # fmt: skip
        state = _tree_where(fine, state, carry.state)
        train_loss = epoch_loss(spec, values, wsum)
        carry, out = finish(carry, e, state, ~fine, carry.bad_step, train_loss, x_val, y_val,
                            patience, min_delta, dtype)  # fmt: skip
        hist = tuple(jnp.asarray(v)[None] for v in out)
        return carry, _report(hist, carry, dtype)

    # Nothing donated: the carry's state and the chunks' state share one output, so half of any
    # donation would go unused (a model's state is small next to the chunks).
    if spec.mesh is None:
        return jax.jit(run, compiler_options=options_if(spec.quick))
    return jax.jit(run, out_shardings=replicated(spec.mesh))
