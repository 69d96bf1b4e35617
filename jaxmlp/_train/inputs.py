"""``fit``'s and ``fit_ensemble``'s eager input checks and how much work one compiled call holds.

Everything here runs on the host before anything compiles, so that a bad argument fails at once
with a message naming it; the checks that need the data's values run as one compiled call.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp._checks import (
    check_int,
    check_nonnegative,
    check_path,
    host_nonfinite,
    on_host,
    row_slices,
)
from jaxmlp._core.backprop import check_targets, forward
from jaxmlp._core.losses import Loss, check_loss_grad, is_builtin
from jaxmlp._core.mlp import (
    MLP,
    Params,
    as_array,
    as_batch,
    check_finite_params,
    nonfinite,
    nonfinite_and_key,
    params_dtype,
)
from jaxmlp._quick import quick_options, setup_jit
from jaxmlp._train.callbacks import EarlyStopping
from jaxmlp._train.sources import aligned_empty
from jaxmlp.errors import JaxmlpWarning

# Rows copied per slice when staging: bounds the temporaries of a cast or a memmap read.
_STAGE_BYTES = 64 << 20


def _row_slices(a: np.ndarray, row_bytes: int) -> list[slice]:
    """``a``'s rows in slices of at most :data:`_STAGE_BYTES` (rows of ``row_bytes`` each)."""
    return row_slices(a.shape[0], row_bytes, _STAGE_BYTES)


def stage_rows(a: np.ndarray, dtype: Any, total: int) -> jax.Array:
    """Host rows ``a`` as one device array of ``total`` rows in ``dtype``: ``a`` copied (and cast)
    slice by slice into one host buffer, zero rows after it, then placed on the device. On a CPU
    the device array is that very buffer, so the data exist once more, not twice or three times
    (``jnp.asarray`` then a padding copy); on an accelerator the host buffer is the staging copy."""
    out = aligned_empty((total, *a.shape[1:]), dtype)
    for rows in _row_slices(a, out[:1].nbytes):
        out[rows] = a[rows]
    out[a.shape[0] :] = 0
    return jax.device_put(out)


# NumPy training data at least this large are staged only once the training program is compiled
# (``fit`` with ``defer=True``, see :class:`Deferred`).
DEFER_BYTES = 32 << 20


class Deferred:
    """Host rows that ``fit`` stages on the device (:func:`stage_rows`) only after its training
    program is compiled, when it knows the shapes and dtypes they will have (:meth:`abstract`).

    Compiling the epoch program takes XLA on a CPU about 80-100 MiB of working memory, which the
    C heap keeps after the compile unless it is trimmed: compiled while the data's staged copy is
    already resident, it adds to the data's peak (1.36x the data at 1M rows of 100 features);
    compiled first and trimmed (:func:`release_free_memory`), it does not (about 1.1x)."""

    def __init__(self, host: np.ndarray, dtype: Any, total: int):
        self.host = host
        self.dtype = np.dtype(dtype)
        self.shape = (total, *host.shape[1:])
        self.ndim = host.ndim

    def __getitem__(self, index: Any) -> jax.Array:
        # A few leading rows, staged on their own (a user loss's gradient check reads them).
        return jnp.asarray(np.asarray(self.host[index]), self.dtype)

    def abstract(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(self.shape, self.dtype)

    def stage(self) -> jax.Array:
        return stage_rows(self.host, self.dtype, self.shape[0])


def staged(tree: Any) -> Any:
    """``tree`` with its :class:`Deferred` leaves staged on the device."""
    return jax.tree.map(lambda a: a.stage() if isinstance(a, Deferred) else a, tree)


def abstract(tree: Any) -> Any:
    """``tree`` with its :class:`Deferred` leaves replaced by their shapes and dtypes."""
    return jax.tree.map(lambda a: a.abstract() if isinstance(a, Deferred) else a, tree)


def any_deferred(tree: Any) -> bool:
    return any(isinstance(a, Deferred) for a in jax.tree.leaves(tree))


def release_free_memory() -> None:
    """Hands the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere): XLA's compiler frees its working memory, but glibc keeps it mapped."""
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


@setup_jit
def _probe(arrays: list[Any]) -> list[Any]:
    # sum(a * 0) is NaN exactly when ``a`` holds a NaN or an Inf, and XLA fuses it into one pass;
    # ``all(isfinite(a))`` materialises a bool copy of ``a`` on a CPU, and a max drops NaNs.
    return [jnp.sum(a * jnp.zeros((), a.dtype)).reshape(1) for a in arrays]


def finite_probes(arrays: list[Any]) -> list[Any]:
    """Each floating device array replaced by a one-element array that is finite exactly when the
    whole array is (other arrays, and those NumPy reads in place, kept), for the NaN/Inf checks:
    no temporary the size of the data."""
    floats = [
        i for i, a in enumerate(arrays) if jnp.issubdtype(a.dtype, jnp.inexact) and not on_host(a)
    ]
    if not floats:
        return list(arrays)
    out = list(arrays)
    for i, p in zip(floats, _probe([arrays[i] for i in floats]), strict=True):
        out[i] = p
    return out


@setup_jit
def _outside_unit_program(y: jax.Array) -> jax.Array:
    # One compiled program (three comparisons and reductions dispatched one by one compile three).
    return jnp.any((y < 0) | (y > 1))


def _outside_unit(y: Any) -> bool:
    """Whether any target lies outside [0, 1] (host rows read slice by slice)."""
    if on_host(y):  # on a CPU, NumPy reads the buffer in place
        y = np.asarray(y)
        return bool(np.any(y < 0) or np.any(y > 1))
    if not isinstance(y, Deferred):
        return bool(_outside_unit_program(y))
    parts = (y.host[rows] for rows in _row_slices(y.host, y.host[:1].nbytes))
    return any(bool(np.any(part < 0) or np.any(part > 1)) for part in parts)


def _host_probe(a: Deferred) -> np.ndarray:
    # A one-element stand-in for finite_probes: NaN exactly when the host rows hold a NaN or Inf.
    return np.full((1,), np.nan if host_nonfinite(a.host, a.dtype) else 0.0, np.float32)


def _stageable(a: Any) -> bool:
    return isinstance(a, np.ndarray) and (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    )


def prepare_data(
    model: MLP,
    loss: Loss,
    params: Params,
    x: Any,
    y: Any,
    names=("x", "y"),
    finite_params=False,
    key: Any = None,
    rows_to: Any = None,
    defer: bool = False,
):
    """Eager checks of a data set (shape, dtype, NaN/Inf, label range); returns it prepared.

    Returns ``(x, y, key_words, n)``: ``x`` as ``(n, sizes[0])`` in the parameters' dtype, ``y``
    in the form the loss reads, ``key``'s raw bits (``None`` without a key) and the real rows. Raises
    ``ValueError``/``TypeError`` naming the argument. With ``finite_params`` the parameters'
    NaN/Inf check runs in the same compiled call, and ``key``'s bits come back in the same read.

    ``rows_to(n)``, if given, is the number of rows the training program holds (whole batches):
    NumPy inputs ``x`` (and float targets ``y``) are then staged on the device once, already
    padded with zero rows to that many (:func:`stage_rows`); other inputs come back with their
    ``n`` rows (pad them with :func:`pad_rows`). With ``defer``, NumPy rows of at least
    :data:`DEFER_BYTES` come back as :class:`Deferred` instead (their NaN/Inf check made on the
    host), for the caller to stage after compiling.
    """
    xn, yn = names
    x_arr = as_array(x, xn)
    if x_arr.ndim != 2:
        raise ValueError(f"{xn}: expected shape (n, {model.sizes[0]}), got {tuple(x_arr.shape)}")
    n = x_arr.shape[0]
    if n == 0:
        raise ValueError(f"{xn}: empty data (0 rows)")
    total = n if rows_to is None else rows_to(n)
    y_arr = as_array(y, yn)
    if y_arr.ndim >= 1 and y_arr.shape[0] != n:
        raise ValueError(f"{yn}: {y_arr.shape[0]} rows, but {xn} has {n} rows")
    stage = rows_to is not None and _stageable(x_arr) and x_arr.shape[1] == model.sizes[0]
    dtype = params_dtype(params)
    if stage and defer and x_arr.shape[0] * x_arr[:1].nbytes >= DEFER_BYTES:
        xb: Any = Deferred(x_arr, dtype, total)
    else:
        if stage:
            x_arr = stage_rows(x_arr, dtype, total)
        xb, _ = as_batch(model, x_arr, params, xn)
    yb = check_targets(model, loss, y_arr, n, xb.dtype, yn)
    if rows_to is not None and isinstance(yb, np.ndarray) and np.issubdtype(yb.dtype, np.floating):
        # Float targets, already in the dtype they train in.
        yb = (
            Deferred(yb, yb.dtype, total)
            if isinstance(xb, Deferred)
            else stage_rows(yb, yb.dtype, total)
        )
    probes = finite_probes([_host_probe(a) if isinstance(a, Deferred) else a for a in (xb, yb)])
    if finite_params:
        (bad_x, bad_y), words = check_finite_params(params, "params", *probes, key=key)
    else:
        (bad_x, bad_y), words = nonfinite_and_key(probes, key)
    if bad_x:
        raise ValueError(f"{xn}: contains NaN or Inf")
    if bad_y:
        raise ValueError(f"{yn}: contains NaN or Inf")
    k = model.sizes[-1]
    if loss.targets == "classes" and yb.ndim == 1:
        # On the host: jnp would first narrow int64 labels to int32, wrapping 2**32 to 0.
        labels = np.asarray(yb)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= k:
            raise ValueError(f"{yn}: class labels must lie in [0, {k}), got labels in [{lo}, {hi}]")
    elif loss.targets in ("classes", "binary") and _outside_unit(yb):
        raise ValueError(f"{yn}: {loss.name} targets must lie in [0, 1]")
    return xb, yb, words, n


def prepare_validation(model: MLP, loss: Loss, params: Params, validation_data: Any):
    """Checks ``validation_data`` like the training data: ``(x_val, y_val, None)``, or
    ``(None, None, None)`` without it."""
    if validation_data is None:
        return None, None, None
    if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
        raise TypeError("validation_data: expected a pair (x_val, y_val)")
    xv, yv, _, _ = prepare_data(
        model, loss, params, *validation_data, names=("validation_data[0]", "validation_data[1]")
    )
    return xv, yv, None


def clip_batch_size(batch_size: int, n: int) -> int:
    """``batch_size`` clipped to the ``n`` rows, with a warning (as scikit-learn does)."""
    if batch_size > n:
        msg = f"batch_size={batch_size} exceeds the {n} rows; using {n}"
        warnings.warn(msg, JaxmlpWarning, stacklevel=3)  # points at the caller of fit
        return n
    return batch_size


# Work between two host syncs of fit: enough that the per-call overhead (argument checks,
# transfers, reading the epoch outputs: a few ms) stays small next to the compiled work.
_FLOPS_PER_CALL = 16e9
_MAX_EPOCHS_PER_CALL = 64
_PERM_BYTES_PER_CALL = 64 << 20


def _auto_epochs_per_call(model: MLP, n_batches: int, batch_size: int, members: int = 1) -> int:
    """Epochs per compiled call: about 16 GFLOP of training work, at most 64 epochs and 64 MiB
    of row orders, rounded down to a power of two (so that few programs are ever compiled).

    It does not depend on ``epochs``: a call stops at the run's last epoch on the device, so
    fits of any length share one compiled program.
    """
    flops = 6 * batch_size * n_batches * members * sum(i * o for i, o in model.layer_shapes())
    perm_bytes = 4 * batch_size * n_batches * members
    e = min(
        _MAX_EPOCHS_PER_CALL,
        int(_FLOPS_PER_CALL // max(flops, 1)),
        _PERM_BYTES_PER_CALL // max(perm_bytes, 1),
    )
    return 1 << (max(e, 1).bit_length() - 1)


def check_sample_weight(sample_weight: Any, n: int, dtype) -> jax.Array | None:
    """``sample_weight`` as ``(n,)`` non-negative finite weights in ``dtype`` (``None``: all 1)."""
    if sample_weight is None:
        return None
    sw = as_array(sample_weight, "sample_weight")
    if jnp.issubdtype(sw.dtype, jnp.complexfloating):
        raise TypeError(f"sample_weight: dtype {sw.dtype}, expected a real array")
    sw = jnp.asarray(sw, dtype)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight: expected shape ({n},), got {tuple(sw.shape)}")
    if nonfinite(sw)[0] or bool(jnp.any(sw < 0)):
        raise ValueError("sample_weight: must be finite and non-negative")
    return sw


class Stopping(NamedTuple):
    """Early stopping, checked: what the program needs."""

    track_best: bool
    patience: int
    min_delta: float


def check_early_stopping(early_stopping: Any) -> Stopping:
    """``early_stopping`` (``None`` or an ``EarlyStopping``) as run-time settings."""
    if early_stopping is None:
        return Stopping(False, int(np.iinfo(np.int32).max), 0.0)
    if not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping: expected a jaxmlp.EarlyStopping, got {type(early_stopping).__name__}"
        )
    patience = check_int(early_stopping.patience, "early_stopping.patience", 1)
    min_delta = check_nonnegative(early_stopping.min_delta, "early_stopping.min_delta")
    return Stopping(bool(early_stopping.restore_best), patience, min_delta)


class Checkpointing(NamedTuple):
    """Checkpoint settings, checked (``directory`` ``None``: no checkpoints)."""

    directory: Path | None
    every: int
    keep: int
    resume: bool


def check_checkpointing(directory: Any, every: Any, keep: Any, resume: Any) -> Checkpointing:
    """The ``checkpoint_dir``, ``checkpoint_every``, ``keep`` and ``resume`` arguments."""
    path = None if directory is None else check_path(directory, "checkpoint_dir")
    every = check_int(every, "checkpoint_every", 1)
    keep = check_int(keep, "keep", 1)
    if resume and path is None:
        raise ValueError("resume: needs checkpoint_dir")
    return Checkpointing(path, every, keep, bool(resume))


def choose_epochs_per_call(
    epochs_per_call: Any,
    model: MLP,
    n_batches: int,
    batch_size: int,
    members: int = 1,
    checkpoint_every: int | None = None,
) -> int:
    """``epochs_per_call`` as given, or the automatic choice (a divisor of ``checkpoint_every``
    when checkpointing, so that calls end on checkpoint epochs)."""
    if epochs_per_call is None:
        epochs_per_call = _auto_epochs_per_call(model, n_batches, batch_size, members)
        if checkpoint_every is not None:
            epochs_per_call = max(
                d for d in range(1, epochs_per_call + 1) if checkpoint_every % d == 0
            )
    return check_int(epochs_per_call, "epochs_per_call", 1)


def prepare_rows(
    params: Params,
    rows: Any,
    argname: str = "x",
    finite_params: bool = False,
    key: Any = None,
    rows_to: Any = None,
) -> tuple[Any, np.ndarray | None]:
    """An objective's rows checked eagerly: a pytree of arrays sharing a leading row axis (at
    least one row), no NaN/Inf. Returns ``(rows as JAX arrays, key's raw bits or None)``; with
    ``rows_to`` NumPy leaves are staged padded to ``rows_to(n)`` rows (see :func:`prepare_data`)."""
    leaves, treedef = jax.tree.flatten(rows)
    if not leaves:
        raise ValueError(
            f"{argname}: an objective needs rows: a pytree of arrays, got {rows!r:.80}"
        )
    arrays = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(rows)[0]:
        name = argname + jax.tree_util.keystr(path)
        a = as_array(leaf, name)
        if a.ndim == 0:
            raise ValueError(f"{name}: expected a leading row axis, got a scalar")
        arrays.append(a)
    counts = {a.shape[0] for a in arrays}
    if len(counts) != 1:
        raise ValueError(
            f"{argname}: every leaf needs the same number of rows, got {sorted(counts)}"
        )
    if 0 in counts:
        raise ValueError(f"{argname}: empty data (0 rows)")
    if rows_to is not None:
        total = rows_to(counts.pop())
        arrays = [
            stage_rows(a, jax.dtypes.canonicalize_dtype(a.dtype), total) if _stageable(a) else a
            for a in arrays
        ]
    if finite_params:
        bad, words = check_finite_params(params, "params", *finite_probes(arrays), key=key)
    else:
        bad, words = nonfinite_and_key(finite_probes(arrays), key)
    for (path, _), flag in zip(jax.tree_util.tree_flatten_with_path(rows)[0], bad, strict=True):
        if flag:
            raise ValueError(f"{argname}{jax.tree_util.keystr(path)}: contains NaN or Inf")
    return jax.tree.unflatten(treedef, arrays), words


def check_custom_loss(model: MLP, loss: Loss, params: Params, x: Any, y: Any, rows: int) -> None:
    """A user loss's hand-written gradient against JAX's, once, on the first ``rows`` rows."""
    if loss.per_example_grad is None or is_builtin(loss):
        return
    trace = forward(model, params, x[:rows])
    check_loss_grad(loss, trace.z[-1] if loss.logits else trace.a[-1], y[:rows])


def whole_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """The rows the compiled program holds for ``n`` real rows: ``n`` padded up to whole batches
    (``n`` itself with ``drop_last``), so that data sets whose sizes differ by less than a batch
    (cross-validation folds, refits) share one program. Padding rows weigh 0 and are never
    drawn: the results are those of the ``n`` rows alone."""
    return n if drop_last else -(-n // batch_size) * batch_size


def _pad_leaf(a: jax.Array, total: int) -> jax.Array:
    return jnp.pad(a, [(0, total - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


@functools.lru_cache(maxsize=64)
def _pad_program(total: int):
    return jax.jit(
        lambda leaves: [_pad_leaf(a, total) for a in leaves], compiler_options=quick_options()
    )


def pad_rows(tree: Any, total: int) -> Any:
    """Every leaf of ``tree`` (``None`` leaves kept) padded with zero rows to ``total`` rows
    along its leading axis (the last axis' rows for an ensemble's ``(K, n)`` weights: pass them
    transposed), in one compiled call. Leaves that already hold ``total`` rows (staged by
    :func:`prepare_data`) are kept as they are, not copied."""
    leaves, treedef = jax.tree.flatten(tree)
    short = [i for i, a in enumerate(leaves) if a.shape[0] < total]
    if short:
        padded = _pad_program(total)([leaves[i] for i in short])
        for i, a in zip(short, padded, strict=True):
            leaves[i] = a
    return jax.tree.unflatten(treedef, leaves)


def prepare_training(
    model: MLP,
    loss: Loss | None,
    params: Params,
    x: Any,
    y: Any,
    validation_data: Any,
    key: Any,
    finite_params: bool = False,
    rows_to: Any = None,
    defer: bool = False,
) -> tuple[Any, Any, Any, Any, np.ndarray, int]:
    """``fit``'s and ``fit_ensemble``'s data, checked: ``(x, y, x_val, y_val, key_words, n)``. With a
    ``loss`` the data are inputs and targets (:func:`prepare_data`); with ``loss=None`` (an
    objective) they are rows (:func:`prepare_rows`) and ``y``/``y_val`` are ``None``. With
    ``rows_to`` NumPy training rows are staged already padded to ``rows_to(n)`` rows; ``n`` is
    the number of real rows."""
    if loss is not None:
        if y is None:
            raise TypeError(
                "y: a loss needs targets (or pass an objective as loss= to train on rows)"
            )
        xb, yb, words, n = prepare_data(
            model, loss, params, x, y, finite_params=finite_params, key=key, rows_to=rows_to,
            defer=defer,
        )  # fmt: skip
        xv, yv, _ = prepare_validation(model, loss, params, validation_data)
    else:
        if y is not None:
            raise ValueError("y: an objective reads everything from its rows (x); leave y=None")
        xb, words = prepare_rows(params, x, finite_params=finite_params, key=key, rows_to=rows_to)
        n = jax.tree.leaves(x)[0].shape[0]  # the rows as passed, before staging
        yb = yv = xv = None
        if validation_data is not None:
            xv, _ = prepare_rows(params, validation_data, "validation_data")
    assert words is not None  # a key was passed
    return xb, yb, xv, yv, words, n


def check_training_mode(model: MLP, objective: Any) -> None:
    """Dropout trains through a loss, whose step draws the masks; an objective's ``apply``
    evaluates the network in inference mode, so the pair is refused rather than silently
    trained without dropout."""
    if model.dropout and objective is not None:
        raise ValueError(
            "loss: an objective evaluates the model without dropout; train a model with "
            f"dropout={model.dropout} through a loss, or set dropout=0"
        )
