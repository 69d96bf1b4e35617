"""Compile options for programs whose compile costs more than their run: on a CPU, XLA's older
code generator instead of its fusion emitters.

Measured on the 2-core CPU (2026-12-05): the emitters compile a small fit's epoch program 25-45%
slower (0.87 s against 0.54-0.62 s for a 30-32-2 classifier) and the small set-up programs
around it (the data's NaN check, padding, the optimizer's initial state) a third slower, for
kernels that run 1.1-1.2x faster. :func:`jaxmlp._engine.program.quick_compile` decides for an
epoch program; :func:`setup_jit` compiles the set-up programs, which run once per call over the
data, always quick on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

QUICK_COMPILE = {"xla_cpu_use_fusion_emitters": False}


def quick_options() -> dict[str, Any] | None:
    """:data:`QUICK_COMPILE` on a CPU, else ``None`` (JAX's defaults)."""
    return QUICK_COMPILE if jax.default_backend() == "cpu" else None


def options_if(quick: bool) -> dict[str, Any] | None:
    """:data:`QUICK_COMPILE` for a program chosen to compile quick, else ``None``."""
    return QUICK_COMPILE if quick else None


def setup_jit(fn: Callable) -> Callable:
    """``jax.jit(fn)`` with :func:`quick_options`, jitted at its first call (when the backend is
    known)."""

    @functools.cache
    def jitted() -> Callable:
        return jax.jit(fn, compiler_options=quick_options())

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return jitted()(*args, **kwargs)

    return call
