"""Training on the host side: ``fit``, early stopping, checkpoints and resume.

``fit`` checks its inputs eagerly, then calls the fused multi-epoch program of
``jaxmlp._engine.program`` until the epochs are done; the host syncs only between calls (progress bar,
divergence and early-stopping checks, checkpoints). The input checks live in ``_fit_inputs``, the
checkpoint contents and resuming in ``_fit_checkpoint``.

What triggers a compile: a new model description, loss, optimizer *object*, method, ``l2``,
batch size, ``drop_last``/``shuffle``/``epochs_per_call``/early stopping on or off, a mesh, a new
number of rows or features, or validation data of a new size. Everything else (the data's
values, the key, ``epochs``, ``patience``, ``min_delta``) is a run-time argument.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxmlp._checkpoint.files import (
    checkpoint_path,
    prune_checkpoints,
)
from jaxmlp._checks import check_choice, check_int, check_key, check_nonnegative, check_optimizer
from jaxmlp._core.backprop import METHODS, check_model_loss
from jaxmlp._core.losses import Loss
from jaxmlp._core.metrics import metric_name
from jaxmlp._core.mlp import MLP, Params, as_array, check_params, nonfinite
from jaxmlp._distributed import check_mesh, local, put, replicated
from jaxmlp._engine.orders import order_seed, seed_from_words
from jaxmlp._engine.program import (
    DEFAULT_OPTIMIZER,
    _epochs_program,
    _Spec,
    call_permutations,
    fresh_carry,
    make_plan,
    read_report,
    replay_program,
)
from jaxmlp._train.inputs import (
    _auto_epochs_per_call,
    clip_batch_size,
    prepare_data,
    prepare_validation,
)
from jaxmlp._train.resume import _history_upto, _resume, _save
from jaxmlp.errors import DivergenceError


class EarlyStopping(NamedTuple):
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs.

    The monitored loss is the validation loss when validation data is given, else the
    training loss. With ``restore_best`` the result holds the best epoch's parameters.
    """

    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
        params, opt_state: the final (or, with early stopping, best) state.
        history: per-epoch lists: ``loss`` (training objective, l2 included), and with
            validation data ``val_loss`` (data loss) and ``val_metric`` (accuracy or R^2).
        step: optimizer steps taken.
        best_epoch: 1-based epoch of the best monitored loss (early stopping), else None.
        stopped_epoch: 1-based epoch at which early stopping ended the run, else None.
        metric: the name of ``val_metric`` (``"accuracy"`` or ``"r2"``).
    """

    params: Params
    opt_state: Any
    history: dict[str, list[float]]
    step: int
    best_epoch: int | None
    stopped_epoch: int | None
    metric: str


def fit(
    model: MLP,
    params: Params,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    loss: str | Loss,
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
    sample_weight: jax.typing.ArrayLike | None = None,
    drop_last: bool = False,
    epochs_per_call: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    keep: int = 3,
    resume: bool = False,
    mesh: Mesh | None = None,
) -> FitResult:
    """Trains ``params`` with minibatch gradient steps, whole epochs fused on the device.

    Args:
        model, params: the network and its starting parameters (left untouched: donation
            only ever consumes copies).
        x: ``(n, sizes[0])``; y: targets as ``loss`` expects (``(n,)`` labels, ``(n, k)``).
        loss: a loss name or ``jaxmlp.Loss``.
        key: PRNG key; epoch ``e``'s row order depends only on ``(key, e)``
            (:func:`jaxmlp._engine.program.epoch_permutations`).
        optimizer: any optax ``GradientTransformation``; default ``optax.sgd(0.01)`` (eq. 17).
        epochs: total epochs; batch_size: rows per step (clipped to ``n`` with a warning).
        method: ``"manual"`` or ``"autodiff"`` gradients.
        shuffle: reshuffle every epoch; drop_last: drop the last partial batch instead of
            padding it (padded rows carry ``sample_weight`` 0, so no data is lost).
        validation_data: ``(x_val, y_val)``, evaluated after every epoch on the device.
        early_stopping: an :class:`EarlyStopping`, monitoring ``val_loss`` (else ``loss``).
        progress: show a tqdm progress bar.
        l2: weight decay term ``(l2/2) sum ||w||^2`` in the objective.
        sample_weight: ``(n,)`` non-negative weights per row.
        epochs_per_call: epochs per compiled call (host syncs between calls); default: about
            16 GFLOP of work per call, at most 64 epochs (a divisor of ``checkpoint_every``).
        checkpoint_dir: write ``ckpt_{epoch:06d}.npz`` there every ``checkpoint_every``
            epochs and at the end, keeping the newest ``keep``; on divergence the last finite
            state goes to ``diverged.npz`` there.
        resume: continue from the newest checkpoint in ``checkpoint_dir`` (if any), with
            ``epochs`` counting the total. Parameters, optimizer state, history, early-stopping
            state and the shuffling key (the stored one) resume exactly.
        mesh: data parallelism: a ``jax.sharding.Mesh`` with a ``"data"`` axis (see
            ``data_parallel_mesh``); each minibatch's rows are split across it (``batch_size``
            must divide evenly), parameters and optimizer state are replicated. In a
            multi-process run every process passes the same data and key; process 0 writes
            the checkpoints.

    Raises:
        ValueError/TypeError: bad arguments, checked before anything compiles.
        DivergenceError: the loss became NaN/Inf; it carries the last finite state.
    """
    lossf = check_model_loss(model, loss)
    check_choice(method, "method", METHODS)
    l2 = check_nonnegative(l2, "l2")
    optimizer = check_optimizer(optimizer, DEFAULT_OPTIMIZER)
    key = check_key(key)
    epochs = check_int(epochs, "epochs", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    check_params(model, params)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint_dir: expected a str or os.PathLike, got {type(checkpoint_dir).__name__}"
        )
    # The key's bits come back with the value checks' read: one device-to-host copy for both.
    xb, yb, key_words = prepare_data(model, lossf, params, x, y, finite_params=True, key=key)
    n = xb.shape[0]
    batch_size = clip_batch_size(batch_size, n)
    sw = None  # every row weighs 1
    if sample_weight is not None:
        sw = as_array(sample_weight, "sample_weight")
        if jnp.issubdtype(sw.dtype, jnp.complexfloating):
            raise TypeError(f"sample_weight: dtype {sw.dtype}, expected a real array")
        sw = jnp.asarray(sw, xb.dtype)
        if sw.shape != (n,):
            raise ValueError(f"sample_weight: expected shape ({n},), got {tuple(sw.shape)}")
        if nonfinite(sw)[0] or bool(jnp.any(sw < 0)):
            raise ValueError("sample_weight: must be finite and non-negative")
    xv, yv, _ = prepare_validation(model, lossf, params, validation_data)
    n_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 1)
    keep = check_int(keep, "keep", 1)
    if resume and checkpoint_dir is None:
        raise ValueError("resume: needs checkpoint_dir")
    if epochs_per_call is None:
        epochs_per_call = _auto_epochs_per_call(model, n_batches, batch_size)
        if checkpoint_dir is not None:
            epochs_per_call = max(
                d for d in range(1, epochs_per_call + 1) if checkpoint_every % d == 0
            )
    epochs_per_call = check_int(epochs_per_call, "epochs_per_call", 1)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping: expected a jaxmlp.EarlyStopping, got {type(early_stopping).__name__}"
        )
    track_best = early_stopping is not None and early_stopping.restore_best
    patience = early_stopping.patience if early_stopping is not None else np.iinfo(np.int32).max
    min_delta = early_stopping.min_delta if early_stopping is not None else 0.0
    patience = np.int32(check_int(patience, "early_stopping.patience", 1))
    real = isinstance(min_delta, (int, float, np.integer, np.floating))
    if isinstance(min_delta, bool) or not (real and math.isfinite(min_delta) and min_delta >= 0):
        raise ValueError(
            f"early_stopping.min_delta: expected a finite number >= 0, got {min_delta!r}"
        )
    if mesh is not None:
        check_mesh(mesh, batch_size)
    spec = _Spec(
        model, lossf, optimizer, method, l2, batch_size, bool(drop_last), bool(shuffle),
        epochs_per_call, track_best, validation_data is not None, mesh,
    )  # fmt: skip
    program = _epochs_program(spec)

    # The row orders' seed, from the bits read before the initialisation below was dispatched (a
    # read after it would wait for it on the device).
    seed = seed_from_words(key_words)
    dtype = xb.dtype
    carry = fresh_carry(params, optimizer, dtype, track_best)
    has_val = validation_data is not None
    history: dict[str, list[float]] = {"loss": []}
    if has_val:
        history.update(val_loss=[], val_metric=[])
    best_epoch = stopped_epoch = None
    done, stopped, step = 0, False, 0
    if resume:
        restored = _resume(checkpoint_dir, model, optimizer, carry, track_best)
        if restored is not None:
            carry, key, done, history, best_epoch = restored
            stopped, step = bool(carry.stopped), int(carry.state.step)
            seed = order_seed(key)  # the stored key's
    if mesh is not None:
        # Global, replicated inputs: every process holds the same data and key.
        carry, xb, yb, sw, key, xv, yv = put((carry, xb, yb, sw, key, xv, yv), replicated(mesh))

    from tqdm.auto import tqdm

    with tqdm(
        total=epochs, initial=min(done, epochs), disable=not progress, unit="epoch", desc="fit"
    ) as bar:

        def orders(start: int):
            """``(start, limit, row orders)`` of the call that begins at epoch ``start``."""
            # With checkpoints, a call never runs past the next multiple of checkpoint_every.
            limit = epochs
            if checkpoint_dir is not None:
                limit = min(epochs, (start // checkpoint_every + 1) * checkpoint_every)
            perms = call_permutations(spec, seed, start, limit, n)
            plan = make_plan(start, limit, patience, min_delta, dtype, perms)
            if mesh is not None:
                plan = put(plan, replicated(mesh))
            return start, plan, perms

        upcoming = orders(done) if done < epochs else None
        while done < epochs and not stopped:
            if upcoming[0] != done:  # the last call ended early (a checkpoint boundary)
                upcoming = orders(done)
            _, plan, perms = upcoming
            carry, report = program(carry, xb, yb, sw, plan, xv, yv)
            # The call runs asynchronously: draw the next call's row orders meanwhile.
            nxt = done + spec.epochs_per_call
            upcoming = orders(nxt) if nxt < epochs else upcoming
            # One read per call: the epochs' outputs and the counters the loop needs.
            r = read_report(_host(report), spec.epochs_per_call, dtype)
            ran, tl, vl, vm, improved = r.ran, r.train_loss, r.val_loss, r.val_metric, r.improved
            stopped, step = r.stopped, r.step
            if r.diverged:
                carry, bad_step = _locate_divergence(spec, carry, r, done, perms, xb, yb, sw)
                bad_epoch = r.bad_epoch + 1
                if checkpoint_dir is not None:
                    _save(Path(checkpoint_dir) / "diverged.npz", model, carry, key, done, history,
                          best_epoch, {"diverged_epoch": bad_epoch, "diverged_step": bad_step})  # fmt: skip
                where = "step unknown" if bad_step is None else f"step {bad_step}"
                raise DivergenceError(
                    f"loss became non-finite in epoch {bad_epoch}, {where}; "
                    f".params and .opt_state hold the last finite state",
                    epoch=bad_epoch,
                    step=bad_step,
                    params=carry.state.params,
                    opt_state=carry.state.opt_state,
                    history=_history_upto(history, ran, tl, vl, vm, bad_epoch - 1 - done),
                )
            for i in np.flatnonzero(ran):
                history["loss"].append(float(tl[i]))
                if has_val:
                    history["val_loss"].append(float(vl[i]))
                    history["val_metric"].append(float(vm[i]))
                if improved[i]:
                    best_epoch = done + int(i) + 1
            n_ran = int(np.sum(ran))
            if n_ran == 0:
                break
            done += n_ran
            finished = done >= epochs or stopped
            if checkpoint_dir is not None and (finished or done % checkpoint_every == 0):
                _save(
                    checkpoint_path(checkpoint_dir, done),
                    model,
                    carry,
                    key,
                    done,
                    history,
                    best_epoch,
                )
                prune_checkpoints(checkpoint_dir, keep)
            bar.update(n_ran)
            post = {"loss": f"{history['loss'][-1]:.4g}"}
            if has_val:
                post.update(
                    val_loss=f"{history['val_loss'][-1]:.4g}",
                    val=f"{history['val_metric'][-1]:.4g}",
                )
            bar.set_postfix(post)
            if stopped:
                stopped_epoch = done
    final = carry.state
    result_params = carry.best_params if track_best else final.params
    return FitResult(
        result_params,
        final.opt_state,
        history,
        int(step),
        best_epoch if early_stopping is not None else None,
        stopped_epoch,
        metric_name(lossf),
    )


def _locate_divergence(spec, carry, r, done: int, perms, xb, yb, sw):
    """The fast path found the non-finite epoch and kept the state it started from: replay that
    epoch with a check after every step (:func:`jaxmlp._engine.program.replay_program`) for the last finite
    state and the first non-finite step. Returns the carry holding that state, and the step:
    ``None`` if the replay stayed finite (it is another compiled program, which may round
    differently near a blow-up; on a GPU the two sum some reductions in another order), and the
    carry then keeps the epoch's starting state."""
    perm = None if perms is None else perms[r.bad_epoch - done]
    if spec.mesh is not None and perm is not None:
        perm = put(perm, replicated(spec.mesh))
    replay = replay_program(spec)
    state, bad, bad_step, _ = replay(carry.state, False, np.int32(-1), xb, yb, sw, perm)
    bad, bad_step = _host((bad, bad_step))
    if not bad:
        return carry, None
    return carry._replace(state=state), int(bad_step)


def _host(tree):
    """NumPy copies of (replicated) device arrays, also when they span several processes; all
    leaves in one transfer."""
    return jax.tree.map(np.asarray, jax.device_get(jax.tree.map(local, tree)))
