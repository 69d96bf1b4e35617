"""Data parallelism: 8 virtual CPU devices and a real two-process run on 127.0.0.1.

Both run in subprocesses: the device count is fixed when JAX starts, and jax.distributed
can be initialised once per process. Sharded and single-device runs sum the gradient in a
different order, so they agree to float32 rounding (atol 1e-6 on O(1) parameters), not bitwise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jaxmlp

SCRIPTS = Path(__file__).parent / "distributed_scripts"
ATOL = 1e-6


def run(args, **kwargs):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def multi_device():
    proc = run([str(SCRIPTS / "multi_device.py")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_data_parallel_fit_matches_single_device(multi_device):
    assert multi_device["devices"] == 8
    assert multi_device["fit_params"] < ATOL
    assert multi_device["fit_loss"] < ATOL
    assert multi_device["replicated"]


@pytest.mark.slow
def test_data_parallel_step_reduces_with_xla_collectives(multi_device):
    assert multi_device["step_params"] < ATOL
    assert multi_device["step_all_reduces"] >= 1


@pytest.mark.slow
def test_indivisible_batch_is_a_clear_error(multi_device):
    assert (
        "batch_size: 12 rows do not divide across the 8 devices"
        in multi_device["indivisible_error"]
    )


@pytest.mark.slow
def test_member_sharded_ensemble_matches_unsharded(multi_device):
    assert multi_device["ensemble_params"] < ATOL
    assert multi_device["ensemble_sharded"] in ("P('data',)", "PartitionSpec('data',)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    port = str(_free_port())
    script = str(SCRIPTS / "two_process.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(pid), port, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    model = jaxmlp.MLP((3, 16, 2), activation="tanh")
    x = jax.random.normal(jax.random.key(1), (100, 3))
    single = jaxmlp.fit(
        model, model.init(jax.random.key(2)), x, x[:, :2] ** 2, key=jax.random.key(3), loss="mse",
        optimizer=optax.adam(0.01), batch_size=16, epochs=5, progress=False,
    )  # fmt: skip
    for pid in (0, 1):
        got = json.loads((tmp_path / f"process{pid}.json").read_text())
        assert got["processes"] == 2 and got["devices"] == 2
        for a, b in zip(got["params"], jax.tree.leaves(single.params), strict=True):
            np.testing.assert_allclose(np.array(a), np.asarray(b), atol=ATOL)
    # Process 0 wrote the checkpoints; any process can read them.
    ck = jaxmlp.load_checkpoint(tmp_path / "ckpt" / "ckpt_000005.npz", model=model)
    np.testing.assert_allclose(
        np.asarray(ck.params[0].w), np.asarray(single.params[0].w), atol=ATOL
    )


def test_mesh_argument_is_checked():
    model = jaxmlp.MLP((3, 4, 1))
    with pytest.raises(TypeError, match="mesh"):
        jaxmlp.make_train_step(model, "mse", mesh="data")
    bad = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    with pytest.raises(ValueError, match="'data'"):
        jaxmlp.make_train_step(model, "mse", mesh=bad)


@pytest.mark.slow
def test_cli_train_distributed_matches_single_device(tmp_path):
    from jaxmlp.cli import main

    flags = [
        "train",
        "--dataset",
        "circle",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--no-plots",
        "--no-progress",
    ]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = run(["-m", "jaxmlp", *flags, "--distributed", "--out", str(tmp_path / "dp")], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main([*flags, "--out", str(tmp_path / "single")]) == 0
    dp = jaxmlp.load_checkpoint(tmp_path / "dp" / "model.npz")
    single = jaxmlp.load_checkpoint(tmp_path / "single" / "model.npz")
    for a, b in zip(jax.tree.leaves(dp.params), jax.tree.leaves(single.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    bad = run(
        [
            "-m",
            "jaxmlp",
            *flags,
            "--batch-size",
            "30",
            "--distributed",
            "--out",
            str(tmp_path / "x"),
        ],
        env=env,
    )
    assert (
        bad.returncode == 1
        and "multiple of the 4 devices" in bad.stderr
        and "Traceback" not in bad.stderr
    )
