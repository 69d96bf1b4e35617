"""JAX's persistent compilation cache for jaxmlp: compile once, reuse in every later process.

A fresh process compiles every program it runs, and for small data compiling is most of the wait.
With the cache on, JAX writes each compiled program to a folder and a later process with the same
program (same model, configuration, shapes, jax version and machine) reads it back instead of
compiling it again.

The entry points that own their process turn the cache on by themselves: the ``jaxmlp`` command
(all but ``jaxmlp bench``, which measures compile times) and the :mod:`jaxmlp.sklearn` estimators
at their first ``fit``, each through :func:`enable_by_default`, which leaves JAX alone when the
user has configured its cache already. A plain library call (``jaxmlp.fit``) never changes JAX's
configuration; library users opt in with one call, :func:`enable_compilation_cache`.

The folder is ``$XDG_CACHE_HOME/jaxmlp/jax`` (``~/.cache/jaxmlp/jax`` by default); it holds at most
:data:`MAX_SIZE_BYTES` (JAX deletes the least recently used programs beyond that), and deleting it
is always safe. ``JAXMLP_NO_COMPILATION_CACHE=1`` turns all of this off.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import jax

ENV_OPT_OUT = "JAXMLP_NO_COMPILATION_CACHE"
# JAX evicts the least recently used programs beyond this; one of our training programs takes
# tens to hundreds of kilobytes, so this holds thousands of them.
MAX_SIZE_BYTES = 512 * 2**20
# JAX's default (1 s) skips every program that compiles faster, which is all of ours on a CPU;
# a small program is read back faster than it compiles.
MIN_COMPILE_TIME_SECS = 0.0


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxmlp/jax``, or ``~/.cache/jaxmlp/jax`` when that is unset or relative."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "jaxmlp" / "jax"


def opted_out() -> bool:
    """Whether ``JAXMLP_NO_COMPILATION_CACHE`` is set to anything but ``""``, ``0`` or ``false``."""
    return os.environ.get(ENV_OPT_OUT, "").strip().lower() not in ("", "0", "false", "no")


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache, so later processes skip compiling.

    Sets JAX's options for the rest of the process: the cache folder
    (``jax_compilation_cache_dir``), no minimum compile time (JAX's default of one second would
    skip every jaxmlp program on a CPU) and a size bound of :data:`MAX_SIZE_BYTES` (512 MiB;
    ``jax_compilation_cache_max_size``: JAX then deletes the least recently used programs).
    Call it before the programs you want cached compile; a folder may be shared by processes
    running at the same time. Deleting the folder is always safe (the next run compiles again).
    Only point it at a folder no one else can write to: JAX runs what it finds there.

    The ``jaxmlp`` command and the :mod:`jaxmlp.sklearn` estimators call this themselves unless
    JAX's cache is configured already; ``jaxmlp.fit`` and the rest of the library never do.

    Args:
        path: the cache folder, created if missing; default ``$XDG_CACHE_HOME/jaxmlp/jax``
            (``~/.cache/jaxmlp/jax``).

    Returns:
        The folder in use, or ``None`` when the environment variable
        ``JAXMLP_NO_COMPILATION_CACHE`` is set (to anything but ``0``, ``false`` or ``no``):
        then nothing changes.

    Example:
        ```python
        import jaxmlp

        jaxmlp.enable_compilation_cache()  # before the first fit of the process
        ```
    """
    if opted_out():
        return None
    folder = (default_cache_dir() if path is None else Path(path).expanduser()).absolute()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    previous = jax.config.values["jax_compilation_cache_dir"]
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
    # JAX's eviction locks the folder with filelock (a dependency of jaxmlp); without it setting
    # a bound would make every cache access fail with a warning.
    if importlib.util.find_spec("filelock") is not None:
        jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
    if previous is not None and previous != str(folder):
        # JAX opens its cache once per process: a new folder needs a fresh start.
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()
    return folder


def enable_by_default() -> Path | None:
    """The cache as the entry points that own their process turn it on (the CLI, the estimators).

    Calls :func:`enable_compilation_cache` unless the user configured JAX's cache themselves (a
    folder set through ``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``, or the cache switched
    off with ``jax_enable_compilation_cache``). Returns the folder it turned on, else ``None``.
    """
    if jax.config.values["jax_compilation_cache_dir"] is not None:
        return None
    if not jax.config.values["jax_enable_compilation_cache"]:
        return None
    return enable_compilation_cache()
