"""Strict test configuration shared by every test module.

- implicit rank promotion raises (the library writes every broadcast explicitly);
- JAX's key-reuse checker is on: a PRNG key consumed twice raises ``KeyReuseError``, so tests
  must create or split keys, never reuse one;
- hypothesis runs a bounded number of examples (15; JAXMLP_HYPOTHESIS_EXAMPLES sets more) with no
  deadline (compilation is slow; the suite must fit CI's 15 minutes on two cores);
- on GPUs and TPUs float32 matmuls run at full precision (``"highest"``): by default they may use
  TF32 or bfloat16 passes, and the gradient comparisons' float32 tolerances assume true float32;
- on a CPU-only machine programs compile with XLA's older code generator (a third faster to
  compile; ``JAXMLP_TEST_XLA_DEFAULTS=1`` keeps XLA's defaults).

Two tiers. ``make test`` (CI) runs lint and every test. ``make test-fast`` runs
``pytest -m "not slow"`` for the inner loop: the core maths, backprop and gradient checks, the
training engine, checkpoints and the error/robustness tests: about 2 minutes on two cores, 35 s when
JAX's persistent compilation cache (which the make target turns on) already holds the programs.
Tests marked ``@pytest.mark.slow`` (or a module's ``pytestmark``) are left to ``make test``: runs
in subprocesses (the ``python -m jaxmlp`` and CLI end-to-end runs, the 8-device and 2-process
distributed runs, the process-to-process reproducibility run, the SIGKILL checkpoint test), the
examples, scikit-learn's estimator checks and its real-data accuracy runs, the two long
hypothesis runs of manual vs automatic gradients (the named pairings stay fast), and the benchmark
script smoke runs. Mark a new test slow when it starts a process or trains end to end for seconds;
nothing is ever skipped, the marker only chooses the tier.
"""

from __future__ import annotations

import importlib.metadata
import os

import jax
import pytest
from hypothesis import HealthCheck, settings


def _cpu_only() -> bool:
    """No GPU or TPU plugin installed: JAX will run on the CPU."""
    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    return not any(n.startswith(("jax-cuda", "jax_cuda", "jax-rocm", "libtpu")) for n in names)


# On a CPU the tests compile with XLA's older code generator, as the library already does for
# small programs (jaxmlp/_quick.py): it compiles a third faster, and the tests check jaxmlp's
# maths and engine, not XLA's code generation. XLA reads the flag when JAX's backend starts (at
# jax.default_backend() below); subprocesses inherit it. JAXMLP_TEST_XLA_DEFAULTS=1 keeps XLA's
# defaults.
if os.environ.get("JAXMLP_TEST_XLA_DEFAULTS") != "1" and _cpu_only():
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_use_fusion_emitters=false".strip()

# The command line and the estimators turn on JAX's persistent compilation cache in the user's
# cache folder; tests stay out of it (tests/test_cache.py turns it on in subprocesses only).
os.environ["JAXMLP_NO_COMPILATION_CACHE"] = "1"

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)
if jax.default_backend() != "cpu":
    jax.config.update("jax_default_matmul_precision", "highest")

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("JAXMLP_HYPOTHESIS_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("ci")


@pytest.fixture
def x64():
    """Runs the test body with float64 enabled (``jax.enable_x64``), never a global flip."""
    with jax.enable_x64(True):
        yield


# The longest files first: `--dist loadfile` hands whole files to the two workers in collection
# order, so a long file collected last (scikit-learn's own MLP tests, ~2 minutes in one process)
# would leave one worker idle at the end while the other finishes it.
_LONGEST_FIRST = (
    "test_sklearn_peer.py",
    "test_layers.py",
    "test_docs.py",
    "test_fused.py",
    "test_backprop.py",
    "test_benchmarking.py",
    "test_examples.py",
    "test_objective.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
