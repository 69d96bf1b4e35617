"""The checkpoint file format behind :mod:`jaxmlp._checkpoint.files`: encoding, integrity, atomic I/O.

A checkpoint is a plain zip of ``.npy`` members (``np.load(path, allow_pickle=False)`` opens it):

- one member per array, named by its pytree key path: ``params[0].w``, ``params[1].scale`` (a
  layer norm's entry), ``opt_state[0].mu[1].b``, ``extra['key']``. Typed PRNG keys are stored as ``jax.random.key_data`` plus their impl name,
  bfloat16 (and the other ml_dtypes types) as unsigned-int views of the same width, so both
  reload bit-exactly;
- ``__jaxmlp__``: UTF-8 JSON (as a uint8 array): format name and version, ``model.to_dict()``,
  library versions, each array's dtype and shape, the SHA-256 of the array data, step, metadata.

A save writes ``.{name}.tmp-{pid}-{random}`` next to the target, fsyncs it, ``os.replace``s it onto
the target and fsyncs the directory: a reader sees the old file or the new one, never a mix.

This module knows arrays, pytrees and bytes only; the public API (argument checks, params rebuilt
in the model's parameter structure, the model check and the ``Checkpoint`` result) stays in
:mod:`jaxmlp._checkpoint.files`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib.version
import numpy as np

from jaxmlp.errors import CheckpointError

FORMAT = "jaxmlp-checkpoint"
# 2: parameter tuples hold any layer's entry (Dense, Norm, a layer of your own's pytree), rebuilt
# from their key paths in the model's parameter structure; the model description may carry norm,
# dropout, residual and features. 1: a tuple of Dense only; still read (its member names are
# what version 2 writes for the same plain model).
FORMAT_VERSION = 2
_META = "__jaxmlp__"
_META_KEYS = ("model", "versions", "arrays", "trees", "step", "metadata", "sha256")
# A temp file whose writer is alive is left alone unless untouched this long: a live writer
# refreshes its mtime with every chunk, so only a hung one (or one on another host) gets this old.
_STALE_SECONDS = 60.0


def flatten_into(
    arrays: dict[str, np.ndarray], infos: dict[str, dict[str, Any]], prefix: str, tree: Any
) -> list[str]:
    """Encodes ``tree``'s leaves into ``arrays`` and ``infos`` under ``prefix`` plus their key
    path; returns the member names in flattening order, from which :func:`restore_like`
    rebuilds the tree."""
    names = []
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names.append(prefix + jax.tree_util.keystr(keypath))
        if names[-1] in arrays:  # a custom pytree node whose keys repeat
            raise ValueError(f"{prefix}: two leaves share the key path {names[-1]!r}")
        arrays[names[-1]], infos[names[-1]] = encode(leaf, names[-1])
    return names


def encode(leaf: Any, name: str) -> tuple[np.ndarray, dict[str, Any]]:
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


def decode(path: Path, name: str, arr: np.ndarray, info: dict[str, Any]) -> Any:
    """Undoes :func:`encode`: the stored array back as its saved dtype (or typed key), checked
    against the shape ``info`` records."""
    try:
        if "key_impl" in info:
            out = jax.random.wrap_key_data(jnp.asarray(arr), impl=info["key_impl"])
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


def restore_like(path: Path, names: list[str] | None, leaves: dict[str, Any], like: Any) -> Any:
    """The decoded leaves ``names`` rebuilt in the structure of ``like`` (e.g. an optax state),
    once their count, shapes and dtypes match its leaves."""
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


def _hash(h: Any, name: str, a: np.ndarray) -> None:
    """Adds one array's name, stored dtype, shape and bytes to the SHA-256 ``h``."""
    h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
    h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def write_atomic(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Writes ``arrays`` and ``meta`` (plus their SHA-256) to ``path`` through a synced temp file
    and a rename, so that ``path`` always holds a whole checkpoint."""
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


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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


def clean_stale(path: Path) -> None:
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


def library_versions() -> dict[str, str]:
    """The library versions recorded in each checkpoint's metadata."""
    import jaxmlp  # at call time: jaxmlp/__init__ imports this module (via jaxmlp._checkpoint.files)

    found = {"jaxmlp": getattr(jaxmlp, "__version__", "unknown"), "jax": jax.__version__}
    return found | {"jaxlib": jaxlib.version.__version__, "numpy": np.__version__}
