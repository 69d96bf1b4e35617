"""Checkpoints: one ``.npz`` file per save, written atomically, read without pickle.

The file is a plain zip of ``.npy`` members (``np.load(path, allow_pickle=False)`` opens it):

- one member per array, named by its pytree key path: ``params[0].w``, ``opt_state[0].mu[1].b``,
  ``extra['key']``. Typed PRNG keys are stored as ``jax.random.key_data`` plus their impl name,
  bfloat16 (and the other ml_dtypes types) as unsigned-int views of the same width, so both
  reload bit-exactly;
- ``__jaxmlp__``: UTF-8 JSON (as a uint8 array): format name and version, ``model.to_dict()``,
  library versions, each array's dtype and shape, the SHA-256 of the array data, step, metadata.

A save writes ``.{name}.tmp-{pid}-{random}`` next to the target, fsyncs it, ``os.replace``s it onto
the target and fsyncs the directory: a reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import secrets
import time
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from jaxmlp.errors import CheckpointError
from jaxmlp.mlp import MLP, Dense, Params, check_params

FORMAT = "jaxmlp-checkpoint"
FORMAT_VERSION = 1
_META = "__jaxmlp__"
_META_KEYS = ("model", "versions", "arrays", "trees", "step", "metadata", "sha256")
# A temp file whose writer is alive is left alone unless untouched this long: a live writer
# refreshes its mtime with every chunk, so only a hung one (or one on another host) gets this old.
_STALE_SECONDS = 60.0
_CKPT_NAME = re.compile(r"ckpt_(\d{6,})\.npz")
PathLike = str | os.PathLike


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes:
        model: the stored :class:`MLP` description.
        params: a tuple of :class:`Dense` (JAX arrays); ``w`` is ``(sizes[l], sizes[l+1])``.
        opt_state: the optimizer state in ``opt_state_like``'s structure; without
            ``opt_state_like``, a dict from each leaf's key path (e.g. ``"[0].mu[1].w"``) to its
            array; ``None`` when none was saved.
        step: the saved step, or ``None``.
        metadata: the saved metadata as ``json.loads`` returns it (tuples become lists).
        extra: the saved ``extra_arrays`` as JAX arrays (so 64-bit ones follow JAX's x64 setting);
            a params-like entry comes back as a tuple of ``Dense``.
    """

    model: MLP
    params: Params
    opt_state: Any
    step: int | None
    metadata: Any
    extra: dict[str, Any]


def _path(value: Any, argname: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argname}: expected a str or os.PathLike, got {type(value).__name__}")
    return Path(value)


def _index(value: Any, argname: str, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError as err:
        raise TypeError(f"{argname}: expected an int, got {type(value).__name__}") from err
    if value < minimum:
        raise ValueError(f"{argname}: must be >= {minimum}, got {value}")
    return value


def checkpoint_path(directory: PathLike, epoch: int) -> Path:
    """The file for ``epoch`` in ``directory``: ``directory/ckpt_{epoch:06d}.npz``."""
    epoch = _index(epoch, "epoch", 0)
    return _path(directory, "directory") / f"ckpt_{epoch:06d}.npz"


def list_checkpoints(directory: PathLike) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``ckpt_*.npz`` in ``directory``, oldest first ([] if none)."""
    directory = _path(directory, "directory")
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
    keep = _index(keep, "keep", 1)
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
) -> Path:
    """Writes one checkpoint file atomically (temp file, fsync, rename, directory fsync).

    Args:
        path: the target file (conventionally ``.npz``); missing parent directories are created.
        model: the description ``params`` belong to.
        params: a tuple of ``Dense``; layer ``l`` has ``w`` ``(sizes[l], sizes[l+1])``.
        opt_state: any optax state (any pytree of arrays), or ``None``.
        step: a non-negative int, or ``None``.
        metadata: anything ``json.dumps`` accepts.
        extra_arrays: name -> array (typed PRNG keys included) or params-like tuple of ``Dense``
            (e.g. early stopping's best params); returned as ``Checkpoint.extra``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError, ValueError: naming the argument that cannot be stored.
    """
    path = _path(path, "path")
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected an MLP, got {type(model).__name__}")
    check_params(model, params)
    if step is not None:
        step = _index(step, "step", 0)
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

    def add(prefix: str, tree: Any) -> list[str]:
        names = []
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names.append(prefix + jax.tree_util.keystr(keypath))
            if names[-1] in arrays:  # a custom pytree node whose keys repeat
                raise ValueError(f"{prefix}: two leaves share the key path {names[-1]!r}")
            arrays[names[-1]], infos[names[-1]] = _encode(leaf, names[-1])
        return names

    trees = {
        "params": add("params", tuple(params)),
        "opt_state": None if opt_state is None else add("opt_state", opt_state),
        "extra": {k: add(f"extra[{k!r}]", v) for k, v in extra_arrays.items()},
        "extra_params": [k for k, v in extra_arrays.items() if _is_params(v)],
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.to_dict(),
        "versions": _versions(),
        "arrays": infos,
        "trees": trees,
        "step": step,
        "metadata": metadata,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    _write_atomic(path, arrays, meta)
    return path


def load_checkpoint(
    path: PathLike, *, model: MLP | None = None, opt_state_like: Any = None
) -> Checkpoint:
    """Reads and verifies a checkpoint written by :func:`save_checkpoint`; never unpickles.

    Args:
        path: the checkpoint file.
        model: when given, the stored description must equal it.
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
    path = _path(path, "path")
    _clean_stale(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    arrays, meta = _read(path)
    try:
        return _assemble(path, arrays, meta, model, opt_state_like)
    except (KeyError, TypeError, AttributeError, IndexError) as err:  # hand-edited metadata
        msg = f"checkpoint {path}: malformed metadata ({type(err).__name__}: {err})"
        raise CheckpointError(msg) from err


def _assemble(
    path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], model: Any, like: Any
) -> Checkpoint:
    try:
        stored = MLP.from_dict(meta["model"])
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: invalid model description ({err})") from err
    if model is not None:
        _check_same_model(path, model, stored)
    leaves = {n: _decode(path, n, a, meta["arrays"][n]) for n, a in arrays.items()}
    trees = meta["trees"]
    params = _as_params(path, "params", [leaves[n] for n in trees["params"]])
    try:
        check_params(stored, params)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its model: {err}") from err
    opt_state = None
    if like is not None:
        opt_state = _restore_like(path, trees["opt_state"], leaves, like)
    elif trees["opt_state"] is not None:
        opt_state = {n[len("opt_state") :]: jnp.asarray(leaves[n]) for n in trees["opt_state"]}
    extra = {}
    for k, names in trees["extra"].items():
        got = [leaves[n] for n in names]
        extra[k] = _as_params(path, k, got) if k in trees["extra_params"] else jnp.asarray(got[0])
    return Checkpoint(stored, params, opt_state, meta["step"], meta["metadata"], extra)


def _is_params(v: Any) -> bool:
    return isinstance(v, (tuple, list)) and len(v) > 0 and all(isinstance(d, Dense) for d in v)


def _encode(leaf: Any, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The array as stored (keys as key data, ml_dtypes as uint views) and its description."""
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        info = {"dtype": str(leaf.dtype), "shape": list(leaf.shape)}
        info["key_impl"] = str(jax.random.key_impl(leaf))
        return np.asarray(jax.random.key_data(leaf), order="C"), info
    arr = np.asarray(leaf, order="C")
    info = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
    if arr.dtype.kind in "biufc":
        return arr, info
    if arr.dtype.type.__module__.startswith("ml_dtypes"):
        return arr.view(f"uint{8 * arr.dtype.itemsize}"), info
    raise TypeError(f"{name}: cannot store an array of dtype {arr.dtype}")


def _decode(path: Path, name: str, arr: np.ndarray, info: dict[str, Any]) -> Any:
    try:
        if "key_impl" in info:
            out = jax.random.wrap_key_data(arr, impl=info["key_impl"])
        else:
            dtype = jnp.dtype(info["dtype"])
            out = arr if arr.dtype == dtype else arr.view(dtype)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: cannot decode {name!r} ({err})") from err
    if list(out.shape) != list(info["shape"]):
        raise CheckpointError(
            f"checkpoint {path}: {name!r} has shape {out.shape}, its metadata says {info['shape']}"
        )
    return out


def _as_params(path: Path, what: str, leaves: list[Any]) -> Params:
    if len(leaves) % 2:
        raise CheckpointError(f"checkpoint {path}: {what} has an odd number of arrays")
    wide = {str(a.dtype) for a in leaves if jax.dtypes.canonicalize_dtype(a.dtype) != a.dtype}
    if wide:  # JAX would silently narrow them: refuse rather than lose precision
        raise CheckpointError(
            f"checkpoint {path}: {what} are {sorted(wide)}; enable JAX's x64 mode "
            "(jax.enable_x64 or the jax_enable_x64 flag) to load them"
        )
    pairs = zip(leaves[::2], leaves[1::2], strict=True)
    return tuple(Dense(jnp.asarray(w), jnp.asarray(b)) for w, b in pairs)


def _restore_like(path: Path, names: list[str] | None, leaves: dict[str, Any], like: Any) -> Any:
    if names is None:
        raise CheckpointError(f"checkpoint {path}: holds no optimizer state to restore")
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    if len(flat) != len(names):
        raise CheckpointError(
            f"checkpoint {path}: opt_state_like has {len(flat)} leaves, "
            f"the stored optimizer state has {len(names)}"
        )
    for (keypath, want), name in zip(flat, names, strict=True):
        got, want = leaves[name], want if hasattr(want, "dtype") else np.asarray(want)
        if tuple(got.shape) != tuple(want.shape) or str(got.dtype) != str(want.dtype):
            raise CheckpointError(
                f"checkpoint {path}: opt_state_like leaf {jax.tree_util.keystr(keypath)} is "
                f"{want.dtype}{list(want.shape)}, the stored {name!r} is "
                f"{got.dtype}{list(got.shape)}"
            )
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(leaves[n]) for n in names])


def _check_same_model(path: Path, model: MLP, stored: MLP) -> None:
    if model == stored:
        return
    given, saved = model.to_dict(), stored.to_dict()
    diffs = [f"{k}: stored {saved[k]!r}, given {given[k]!r}" for k in given if given[k] != saved[k]]
    if model.sizes != stored.sizes:
        diffs.append(f"layer shapes: stored {stored.layer_shapes()}, given {model.layer_shapes()}")
    raise CheckpointError(f"checkpoint {path} was saved for a different model: {'; '.join(diffs)}")


def _hash(h: Any, name: str, a: np.ndarray) -> None:
    """Adds one array's name, stored dtype, shape and bytes to the SHA-256 ``h``."""
    h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
    h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _write_atomic(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "xb") as f:
            # ZIP_STORED: weights barely compress, and the zip CRC still catches bit flips.
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                h = hashlib.sha256()  # one pass over the data: hash each array as it is written
                for name, arr in sorted(arrays.items()):
                    _hash(h, name, arr)
                    _write_member(zf, name, arr)
                meta = {**meta, "sha256": h.hexdigest()}
                _write_member(zf, _META, np.frombuffer(json.dumps(meta).encode(), np.uint8))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # makes the rename itself durable; Windows cannot open directories
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_member(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with zf.open(name + ".npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, arr, allow_pickle=False)


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every member as a numpy array plus the metadata, checked against the SHA-256."""
    fail = f"checkpoint {path}:"
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with npz:
            arrays = {name: npz[name] for name in npz.files}
    except (PermissionError, IsADirectoryError):
        raise
    except Exception as err:  # whatever breaks while parsing an untrusted file means "unreadable"
        msg = f"{fail} unreadable or corrupted, not a valid .npz ({type(err).__name__}: {err})"
        raise CheckpointError(msg) from err
    if any(not isinstance(a, np.ndarray) for a in arrays.values()):
        raise CheckpointError(f"{fail} holds a member that is not a .npy array")
    if _META not in arrays:
        raise CheckpointError(f"{fail} not a jaxmlp checkpoint (no {_META!r} entry)")
    raw = arrays.pop(_META)
    try:
        meta = json.loads(raw.tobytes().decode()) if raw.dtype == np.uint8 else None
    except ValueError as err:
        raise CheckpointError(f"{fail} its metadata is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{fail} not a jaxmlp checkpoint (format is not {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{fail} format version {version!r} is not supported (this jaxmlp reads versions "
            f"1 to {FORMAT_VERSION}); a newer jaxmlp wrote it, upgrade to read it"
        )
    if missing := [k for k in _META_KEYS if k not in meta]:
        raise CheckpointError(f"{fail} its metadata lacks {missing}")
    if odd := sorted(set(arrays) ^ set(meta["arrays"])):
        raise CheckpointError(f"{fail} entries {odd} are in the file or its metadata, not both")
    h = hashlib.sha256()
    for name in sorted(arrays):
        _hash(h, name, arrays[name])
    if h.hexdigest() != meta["sha256"]:
        raise CheckpointError(
            f"{fail} corrupted: the SHA-256 of its array data does not match the one saved"
        )
    return arrays, meta


def _clean_stale(path: Path) -> None:
    """Deletes temp files for ``path`` left by killed writers; a live writer's file stays."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(\d+)-[0-9a-f]{{8}}")
    try:
        entries = list(os.scandir(path.parent))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if not (m := pattern.fullmatch(entry.name)):
            continue
        with contextlib.suppress(FileNotFoundError):  # another cleaner got there first
            age = time.time() - entry.stat().st_mtime
            if age > _STALE_SECONDS or not _pid_alive(int(m[1])):
                os.unlink(entry.path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # our own threads may be writing; no cheap probe
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: the process exists but belongs to another user
        return True
    return True


def _versions() -> dict[str, str]:
    import jaxmlp  # at call time: jaxmlp/__init__ imports this module

    versions = {"jaxmlp": getattr(jaxmlp, "__version__", "unknown"), "jax": jax.__version__}
    return versions | {"jaxlib": jaxlib.__version__, "numpy": np.__version__}
