"""JAX's persistent compilation cache (``jaxmlp/_cache.py``): where it lives, who turns it on, and
that a second process with it compiles nothing.

The test process itself never runs with the cache on (``conftest.py`` sets the opt-out): the
tests here that turn it on restore JAX's options before anything compiles, and the end-to-end
ones run in subprocesses against a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

import jaxmlp
from jaxmlp import _cache

OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_compilation_cache_max_size",
    "jax_enable_compilation_cache",
)


@pytest.fixture
def jax_options(monkeypatch):
    """JAX's cache options restored after the test (which must not compile anything)."""
    monkeypatch.delenv(_cache.ENV_OPT_OUT, raising=False)
    saved = {name: jax.config.values[name] for name in OPTIONS}
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_the_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.default_cache_dir() == tmp_path / "xdg" / "jaxmlp" / "jax"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in ("", "relative/path"):  # the XDG spec ignores a relative path
        monkeypatch.setenv("XDG_CACHE_HOME", unset)
        assert _cache.default_cache_dir() == tmp_path / "home" / ".cache" / "jaxmlp" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _cache.default_cache_dir() == tmp_path / "home" / ".cache" / "jaxmlp" / "jax"


@pytest.mark.parametrize(
    ("value", "off"),
    [("1", True), ("yes", True), ("0", False), ("false", False), ("", False)],
    ids=["1", "yes", "0", "false", "empty"],
)
def test_the_opt_out_variable(monkeypatch, value, off):
    monkeypatch.setenv(_cache.ENV_OPT_OUT, value)
    assert _cache.opted_out() is off


def test_enable_sets_jaxs_options(jax_options, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = jaxmlp.enable_compilation_cache()
    assert folder == tmp_path / "jaxmlp" / "jax" and folder.is_dir()
    assert jax.config.values["jax_compilation_cache_dir"] == str(folder)
    assert jax.config.values["jax_persistent_cache_min_compile_time_secs"] == 0.0
    assert jax.config.values["jax_compilation_cache_max_size"] == _cache.MAX_SIZE_BYTES
    explicit = jaxmlp.enable_compilation_cache(tmp_path / "mine")
    assert explicit == tmp_path / "mine" and explicit.is_dir()
    assert jax.config.values["jax_compilation_cache_dir"] == str(explicit)


def test_the_opt_out_wins_and_changes_nothing(jax_options, monkeypatch, tmp_path):
    monkeypatch.setenv(_cache.ENV_OPT_OUT, "1")
    before = jax.config.values
    assert jaxmlp.enable_compilation_cache(tmp_path / "c") is None
    assert _cache.enable_by_default() is None
    assert jax.config.values == before and not (tmp_path / "c").exists()


def test_entry_points_leave_a_configured_cache_alone(jax_options, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
    assert _cache.enable_by_default() is None
    assert jax.config.values["jax_compilation_cache_dir"] == str(tmp_path / "users")
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", False)
    assert _cache.enable_by_default() is None
    assert jax.config.values["jax_compilation_cache_dir"] is None
    jax.config.update("jax_enable_compilation_cache", True)
    assert _cache.enable_by_default() == tmp_path / "jaxmlp" / "jax"


# ---------------------------------------------------------------- fresh processes

# Counts the programs the process needed (every one asks the persistent cache first, whether a
# folder is set or not) and those the cache answered: programs - hits were compiled.
_COUNTER = """
import json, sys
from jax import monitoring
counts = {"programs": 0, "hits": 0}
def _count(event, **kwargs):
    if event == "/jax/compilation_cache/compile_requests_use_cache":
        counts["programs"] += 1
    elif event == "/jax/compilation_cache/cache_hits":
        counts["hits"] += 1
monitoring.register_event_listener(_count)
"""

_FIT = """
import jax, numpy as np, optax, jaxmlp
{enable}
x = np.random.default_rng(0).normal(size=(150, 13)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)
model = jaxmlp.MLP((13, 32, 3))
result = jaxmlp.fit(model, model.init(jax.random.key(0)), x, y, loss="softmax_cross_entropy",
                    key=jax.random.key(1), optimizer=optax.adam(1e-3), epochs=20, batch_size=32,
                    progress=False)
counts["params"] = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(result.params)]
"""


def _run(code: str, env: dict[str, str]) -> dict:
    script = _COUNTER + textwrap.dedent(code) + "\nprint(json.dumps(counts))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The environment of a user who configured nothing, with a temporary cache home."""
    drop = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", _cache.ENV_OPT_OUT)  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    return {**clean, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "JAX_PLATFORMS": "cpu"}


def _entries(folder: Path) -> int:
    return len(list(folder.glob("*-cache"))) if folder.is_dir() else 0


@pytest.mark.slow
def test_a_second_process_compiles_nothing(env, tmp_path):
    code = _FIT.format(enable=f"jaxmlp.enable_compilation_cache({str(tmp_path / 'c')!r})")
    cold, warm = _run(code, env), _run(code, env)
    assert cold["programs"] > 0 and cold["hits"] == 0
    assert _entries(tmp_path / "c") == cold["programs"]
    assert warm["programs"] == warm["hits"] == cold["programs"]  # every program read back
    assert warm["params"] == cold["params"]


@pytest.mark.slow
def test_a_library_call_changes_no_jax_option(env, tmp_path):
    code = """
    before = dict(jax.config.values)
    import jaxmlp.cli, jaxmlp.sklearn, jaxmlp.data
    """
    after = _run(_FIT.format(enable=textwrap.dedent(code)) + "\ncounts['changed'] = sorted(k for k, v in jax.config.values.items() if before[k] != v)\n", env)  # fmt: skip
    assert after["changed"] == [] and after["hits"] == 0
    assert not (tmp_path / "xdg").exists()


_CLI = """
from jaxmlp.cli import main
status = main(["train", "--dataset", "xor", "--n", "64", "--epochs", "5", "--hidden", "8",
               "--no-plots", "--no-progress", "--out", {out!r}])
assert status == 0
"""


@pytest.mark.slow
def test_the_command_line_turns_the_cache_on_by_default(env, tmp_path):
    folder = tmp_path / "xdg" / "jaxmlp" / "jax"
    code = _CLI.format(out=str(tmp_path / "run"))
    cold, warm = _run(code, env), _run(code, env)
    assert cold["programs"] > 0 and cold["hits"] == 0 and _entries(folder) == cold["programs"]
    assert warm["programs"] == warm["hits"] == cold["programs"]
    off = _run(code, {**env, "XDG_CACHE_HOME": str(tmp_path / "off"), _cache.ENV_OPT_OUT: "1"})
    assert off["programs"] == cold["programs"] and off["hits"] == 0
    assert not (tmp_path / "off").exists()


_ESTIMATOR = """
import numpy as np
from jaxmlp.sklearn import MLPClassifier
x = np.random.default_rng(0).normal(size=(60, 4))
MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(x, x[:, 0] > 0)
"""


@pytest.mark.slow
def test_estimators_turn_it_on_unless_jax_is_configured(env, tmp_path):
    own = _run(_ESTIMATOR, env)
    assert _entries(tmp_path / "xdg" / "jaxmlp" / "jax") == own["programs"] > 0
    users = tmp_path / "users"
    configured = {**env, "XDG_CACHE_HOME": str(tmp_path / "other"), "JAX_COMPILATION_CACHE_DIR": str(users)}  # fmt: skip
    _run(_ESTIMATOR, configured)
    assert not (tmp_path / "other").exists()  # JAX's own options (and folder) were left alone


# ---------------------------------------------------------------- quick compiles


def _spec(model, mesh=None):
    from jaxmlp._core.losses import get_loss
    from jaxmlp._engine.program import Spec
    from jaxmlp._engine.step import DEFAULT_OPTIMIZER

    return Spec(model=model, loss=get_loss("mse"), optimizer=DEFAULT_OPTIMIZER, method="manual",
                l2=0.0, batch_size=32, drop_last=False, shuffle=True, epochs_per_call=1,
                track_best=False, has_val=False, mesh=mesh)  # fmt: skip


@pytest.mark.parametrize(
    "setting, small, large", [(None, True, False), ("0", False, False), ("1", True, True)]
)
def test_small_epochs_compile_quick_unless_told_otherwise(monkeypatch, setting, small, large):
    import jax

    from jaxmlp._engine.program import QUICK_EPOCH_FLOPS, epoch_flops, quick_compile

    if setting is None:
        monkeypatch.delenv("JAXMLP_QUICK_COMPILE", raising=False)
    else:
        monkeypatch.setenv("JAXMLP_QUICK_COMPILE", setting)
    model = jaxmlp.MLP((30, 32, 2))
    params = model.init(jax.random.key(0))
    assert epoch_flops(params, 455) == 6 * (30 * 32 + 32 + 32 * 2 + 2) * 455
    spec = _spec(model)
    assert quick_compile(spec.mesh, epoch_flops(params, 455)) is small
    assert quick_compile(spec.mesh, QUICK_EPOCH_FLOPS) is large
    # With a mesh (data parallelism) the default options stay.
    assert not quick_compile(_spec(model, mesh=jaxmlp.data_parallel_mesh()).mesh, 1.0)


def test_fit_and_its_continuation_run_the_program_the_whole_run_would(monkeypatch):
    import jax
    import numpy as np

    from jaxmlp._train import driver

    monkeypatch.delenv("JAXMLP_QUICK_COMPILE", raising=False)
    seen = []
    real = driver.epochs_program
    monkeypatch.setattr(driver, "epochs_program", lambda spec: seen.append(spec.quick) or real(spec))  # fmt: skip
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    model = jaxmlp.MLP((3, 8, 1), activation="tanh")
    kw = {"loss": "mse", "key": jax.random.key(1), "batch_size": 16, "progress": False}
    half = jaxmlp.fit(model, model.init(jax.random.key(0)), x, x[:, :1], epochs=2, **kw)
    jaxmlp.fit(model, half, x, x[:, :1], epochs=4, **kw)
    assert seen == [True, True]
    monkeypatch.setenv("JAXMLP_QUICK_COMPILE", "0")
    jaxmlp.fit(model, model.init(jax.random.key(0)), x, x[:, :1], epochs=1, **kw)
    assert seen[-1] is False
