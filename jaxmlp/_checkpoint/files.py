"""Checkpoints: one ``.npz`` file per save, written atomically, read without pickle.

:func:`save_checkpoint` stores a model description, its params, an optional optimizer state,
step, JSON metadata and extra arrays; :func:`load_checkpoint` reads and verifies them back.
The directory helpers name per-epoch files ``ckpt_{epoch:06d}.npz`` and find or prune them.
The file layout, encoding, SHA-256 check and atomic write live in
:mod:`jaxmlp._checkpoint.format`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp._checkpoint.format import (
    FORMAT,
    FORMAT_VERSION,
    clean_stale,
    decode,
    flatten_into,
    library_versions,
    read,
    restore_like,
    write_atomic,
)
from jaxmlp._checks import check_int, check_path
from jaxmlp._core.mlp import MLP, Params, check_params
from jaxmlp.errors import CheckpointError

_CKPT_NAME = re.compile(r"ckpt_(\d{6,})\.npz")
PathLike = str | os.PathLike


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes:
        model: the stored :class:`MLP` description.
        params: the parameter tuple (JAX arrays) in the model's structure
            (``model.param_shapes()``): a ``Dense`` per affine layer, a ``Norm`` per layer
            norm, a layer of your own's pytree; a plain model's is a tuple of ``Dense``.
        opt_state: the optimizer state in ``opt_state_like``'s structure; without
            ``opt_state_like``, a dict from each leaf's key path (e.g. ``"[0].mu[1].w"``) to its
            array; ``None`` when none was saved.
        step: the saved step, or ``None``.
        metadata: the saved metadata as ``json.loads`` returns it (tuples become lists).
        extra: the saved ``extra_arrays`` as JAX arrays (so 64-bit ones follow JAX's x64 setting);
            a params-like entry (one with the params' structure) comes back in that structure.
        members: for an ensemble's checkpoint, the number of members K (every parameter array
            then has a leading member axis of size K); ``None`` for one model.
    """

    model: MLP
    params: Params
    opt_state: Any
    step: int | None
    metadata: Any
    extra: dict[str, Any]
    members: int | None = None


def checkpoint_path(directory: PathLike, epoch: int) -> Path:
    """The file for ``epoch`` in ``directory``: ``directory/ckpt_{epoch:06d}.npz``."""
    epoch = check_int(epoch, "epoch", 0)
    return check_path(directory, "directory") / f"ckpt_{epoch:06d}.npz"


def list_checkpoints(directory: PathLike) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``ckpt_*.npz`` in ``directory``, oldest first ([] if none)."""
    directory = check_path(directory, "directory")
    if not directory.is_dir():
        return []
    matches = ((_CKPT_NAME.fullmatch(e.name), e) for e in os.scandir(directory))
    return sorted((int(m[1]), directory / e.name) for m, e in matches if m and e.is_file())


def latest_checkpoint(directory: PathLike) -> Path | None:
    """The newest epoch's checkpoint in ``directory``, or ``None`` when there is none."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: PathLike, keep: int) -> list[Path]:
    """Deletes all but the newest ``keep`` (>= 1) checkpoints; returns the deleted paths."""
    keep = check_int(keep, "keep", 1)
    doomed = [p for _, p in list_checkpoints(directory)[:-keep]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def save_checkpoint(
    path: PathLike,
    *,
    model: MLP,
    params: Params,
    opt_state: Any = None,
    step: int | None = None,
    metadata: Any = None,
    extra_arrays: dict[str, Any] | None = None,
    members: int | None = None,
) -> Path:
    """Writes one checkpoint file atomically (temp file, fsync, rename, directory fsync).

    Args:
        path: the target file (conventionally ``.npz``); missing parent directories are created.
        model: the description ``params`` belong to.
        params: the parameter tuple, in ``model.param_shapes()``'s structure.
        opt_state: any optax state (any pytree of arrays), or ``None``.
        step: a non-negative int, or ``None``.
        metadata: anything ``json.dumps`` accepts.
        extra_arrays: name -> array (typed PRNG keys included) or a params-like tuple (the
            params' structure, e.g. early stopping's best params); returned as
            ``Checkpoint.extra``.
        members: an ensemble's checkpoint: ``params`` carry a leading member axis of this size.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError, ValueError: naming the argument that cannot be stored.
    """
    path = check_path(path, "path")
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected an MLP, got {type(model).__name__}")
    if members is not None:
        members = check_int(members, "members", 1)
    _check_members_params(model, params, members)
    if step is not None:
        step = check_int(step, "step", 0)
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        raise TypeError(f"metadata: must be JSON-serialisable ({err})") from err
    if extra_arrays is not None and not isinstance(extra_arrays, dict):
        raise TypeError(f"extra_arrays: expected a dict, got {type(extra_arrays).__name__}")
    extra_arrays = dict(extra_arrays or {})
    if any(not isinstance(k, str) for k in extra_arrays):
        raise TypeError(f"extra_arrays: keys must be str, got {list(extra_arrays)}")
    arrays: dict[str, np.ndarray] = {}
    infos: dict[str, dict[str, Any]] = {}
    add = functools.partial(flatten_into, arrays, infos)  # (prefix, tree) -> member names

    trees = {
        "params": add("params", tuple(params)),
        "opt_state": None if opt_state is None else add("opt_state", opt_state),
        "extra": {k: add(f"extra[{k!r}]", v) for k, v in extra_arrays.items()},
        "extra_params": [k for k, v in extra_arrays.items() if _is_params_like(model, v)],
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.to_dict(),
        "versions": library_versions(),
        "arrays": infos,
        "trees": trees,
        "step": step,
        "metadata": metadata,
        "members": members,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    write_atomic(path, arrays, meta)
    return path


def load_checkpoint(
    path: PathLike, *, model: MLP | None = None, opt_state_like: Any = None
) -> Checkpoint:
    """Reads and verifies a checkpoint written by :func:`save_checkpoint`; never unpickles.

    Args:
        path: the checkpoint file.
        model: when given, the stored description must equal it. Needed for a model the
            description cannot rebuild: one with a callable initializer or a layer of your own
            (``norm=`` or ``features=`` a :class:`jaxmlp.layers.Layer` object). The params come
            back in the model's parameter structure (``model.param_shapes()``), whichever
            entries it holds; format version 1 files (a tuple of ``Dense``) load too.
        opt_state_like: a pytree with the optimizer state's structure, e.g.
            ``optimizer.init(params)``; its leaves' count, shapes and dtypes must match.

    Returns:
        A :class:`Checkpoint`.

    Raises:
        FileNotFoundError: ``path`` is not an existing file (not a ``CheckpointError``, so
            "nothing to resume from" stays distinguishable from "a bad checkpoint").
        CheckpointError: the file is truncated, corrupted (zip CRC or SHA-256 mismatch), not a
            jaxmlp checkpoint, of a newer format version, or does not fit ``model`` /
            ``opt_state_like``. The message names ``path`` and what is wrong.
    """
    if model is not None and not isinstance(model, MLP):
        raise TypeError(f"model: expected an MLP or None, got {type(model).__name__}")
    path = check_path(path, "path")
    clean_stale(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    arrays, meta = read(path)
    try:
        return _assemble(path, arrays, meta, model, opt_state_like)
    except (KeyError, TypeError, AttributeError, IndexError) as err:  # hand-edited metadata
        msg = f"checkpoint {path}: malformed metadata ({type(err).__name__}: {err})"
        raise CheckpointError(msg) from err


def _assemble(
    path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], model: Any, like: Any
) -> Checkpoint:
    try:
        # The given model stands in for its own description: from_dict cannot rebuild a
        # callable initializer.
        if model is not None and meta["model"] == model.to_dict():
            stored = model
        else:
            stored = MLP.from_dict(meta["model"])
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: invalid model description ({err})") from err
    if model is not None:
        _check_same_model(path, model, stored)
    leaves = {n: decode(path, n, a, meta["arrays"][n]) for n, a in arrays.items()}
    trees = meta["trees"]
    params = _as_params(path, "params", trees["params"], leaves, stored)
    members = meta.get("members")
    try:
        _check_members_params(stored, params, members)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its model: {err}") from err
    opt_state = None
    if like is not None:
        opt_state = restore_like(path, trees["opt_state"], leaves, like)
    elif trees["opt_state"] is not None:
        opt_state = {n[len("opt_state") :]: jnp.asarray(leaves[n]) for n in trees["opt_state"]}
    extra = {}
    for k, names in trees["extra"].items():
        if k in trees["extra_params"]:
            extra[k] = _as_params(path, f"extra[{k!r}]", names, leaves, stored)
        else:
            extra[k] = jnp.asarray(leaves[names[0]])
    return Checkpoint(stored, params, opt_state, meta["step"], meta["metadata"], extra, members)


def _check_members_params(model: MLP, params: Any, members: int | None) -> None:
    """``check_params``, member by member for an ensemble's stacked parameters."""
    if members is None:
        check_params(model, params)
        return
    leaves = jax.tree.leaves(params)
    if not leaves or any(np.ndim(a) == 0 or np.shape(a)[0] != members for a in leaves):
        raise ValueError(f"params: every array needs a leading member axis of size {members}")
    check_params(model, jax.tree.map(lambda a: a[0], params))


def _is_params_like(model: MLP, v: Any) -> bool:
    """Whether ``v`` has the model's parameter structure (a tuple with one entry per layer with
    parameters: ``Dense``, ``Norm``, a layer of your own's pytree); shapes are not compared, so
    an ensemble's stacked parameters count too."""
    if not isinstance(v, (tuple, list)) or not v:
        return False
    try:
        return jax.tree.structure(tuple(v)) == jax.tree.structure(model.param_shapes())
    except (TypeError, ValueError):
        return False


def _as_params(
    path: Path, what: str, names: list[str], leaves: dict[str, Any], model: MLP
) -> Params:
    """The stored arrays ``names`` (the key paths of a params-like tree under the prefix
    ``what``) rebuilt in ``model``'s parameter structure: any entry type restores, as long as
    the key paths are the ones the model's structure has. A version-1 file (a tuple of
    ``Dense``) names its arrays as version 2 does for the same plain model."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(model.param_shapes())
    expected = [what + jax.tree_util.keystr(kp) for kp, _ in flat]
    if list(names) != expected:
        stored = [n[len(what) :] if n.startswith(what) else n for n in names]
        wanted = [e[len(what) :] for e in expected]
        first = next(
            (
                f"stored {a!r}, the model has {b!r}"
                for a, b in zip(stored, wanted, strict=False)
                if a != b
            ),
            f"stored {len(stored)} arrays, the model has {len(wanted)}",
        )
        raise CheckpointError(
            f"checkpoint {path}: {what} does not have the model's parameter structure "
            f"({first}; model sizes {model.sizes})"
        )
    got = [leaves[n] for n in names]
    wide = {str(a.dtype) for a in got if jax.dtypes.canonicalize_dtype(a.dtype) != a.dtype}
    if wide:  # JAX would silently narrow them: refuse rather than lose precision
        raise CheckpointError(
            f"checkpoint {path}: {what} are {sorted(wide)}; enable JAX's x64 mode "
            "(jax.enable_x64 or the jax_enable_x64 flag) to load them"
        )
    return tuple(jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in got]))


def _check_same_model(path: Path, model: MLP, stored: MLP) -> None:
    if model == stored:
        return
    given, saved = model.to_dict(), stored.to_dict()
    # to_dict leaves out the pieces a model does not use (norm, dropout, ...): show their values
    keys = [f.name for f in dataclasses.fields(MLP)]
    given = {k: given.get(k, getattr(model, k)) for k in keys}
    saved = {k: saved.get(k, getattr(stored, k)) for k in keys}
    diffs = [f"{k}: stored {saved[k]!r}, given {given[k]!r}" for k in keys if given[k] != saved[k]]
    if model.sizes != stored.sizes:
        diffs.append(f"layer shapes: stored {stored.layer_shapes()}, given {model.layer_shapes()}")
    raise CheckpointError(f"checkpoint {path} was saved for a different model: {'; '.join(diffs)}")
