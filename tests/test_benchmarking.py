"""The benchmark harness: ``benchmarks/run.py --quick`` end to end, its records and tables.

Benchmarks are never timed tests: these check that the harness runs on the CPU and that what
it reports is complete and self-consistent, not how fast anything is.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmlp import bench as benchmarking
from jaxmlp.bench import CONFIGS, Config, _peers, parse_configs

ROOT = Path(__file__).resolve().parent.parent
ENV_FIELDS = (
    "platform",
    "device_kind",
    "device_count",
    "jax",
    "jaxlib",
    "matmul_precision",
    "command",
    "date",
    "cpu",
    "argv",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run of the user-facing script, as a subprocess on the CPU."""
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def _records(quick_run, suite):
    return [r for r in quick_run[1]["records"] if r["suite"] == suite]


@pytest.mark.slow
def test_every_record_carries_the_environment(quick_run):
    data = quick_run[1]
    assert data["records"]
    for rec in data["records"]:
        for field in (*ENV_FIELDS, "suite", "impl", "dtype"):
            assert field in rec, (field, rec["suite"], rec["impl"])
        assert rec["platform"] == "cpu" and rec["device_count"] >= 1
        assert 1 <= rec["usable_cpus"] <= rec["cpu_count"]
        assert rec["matmul_precision"] == "default"
        assert "--quick" in rec["command"] and rec["argv"] == ["--quick", "--json", rec["argv"][2]]


@pytest.mark.slow
def test_step_records(quick_run):
    steps = _records(quick_run, "step")
    # --quick runs S and one small custom config, both methods, and skips L.
    assert {(r["config"], r["method"]) for r in steps} == {
        (c, m) for c in ("S", "custom:32,128,128,4:64:mse") for m in ("manual", "autodiff")
    }
    (roof,) = _records(quick_run, "roofline")
    assert roof["n"] == 2048 and roof["dtype"] == "float32" and roof["flops_per_s"] > 0
    for r in steps:
        cfg = parse_configs(r["config"])[0]
        assert r["flops_per_step"] == cfg.flops_per_step
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["steps_per_s"] == pytest.approx(1 / r["median_s"])
        assert r["flops_per_s"] == pytest.approx(cfg.flops_per_step / r["median_s"])
        assert r["pct_roofline"] == pytest.approx(100 * r["flops_per_s"] / roof["flops_per_s"])
        best, roof_best = cfg.flops_per_step / r["min_s"], 2 * 2048**3 / roof["min_s"]
        assert r["pct_roofline_best"] == pytest.approx(100 * best / roof_best)
        assert r["compile_s"] > 0 and r["temp_bytes"] > 0 and r["repeats"] >= 3
        # The step's own footprint holds at least its temporaries and its (undonated) batch.
        y_width = cfg.sizes[-1] if cfg.loss == "mse" else 1  # float targets or int32 labels
        batch_bytes = 4 * cfg.batch * (cfg.sizes[0] + y_width)
        assert r["step_bytes"] >= r["temp_bytes"] + batch_bytes
        assert r["dtype"] == "float32" and r["param_dtype"] == "float32"
        assert r["impl_matmul_precision"] == "default"
        assert r["final_loss"] == pytest.approx(r["final_loss"])  # finite, not NaN
        if r["method"] == "manual":
            assert r["manual_over_autodiff"] > 0 and r["temp_manual_over_autodiff"] > 0
            assert r["time_over_jaxmlp"] == 1.0


@pytest.mark.slow
def test_train_and_ensemble_records(quick_run):
    train = {r["impl"]: r for r in _records(quick_run, "train")}
    assert set(train) == {
        "jaxmlp.fit (fused)",
        "jaxmlp loop (a): jitted step, NumPy batches",
        "jaxmlp loop (b): device slicing",
    }
    for r in train.values():
        assert r["steps"] == r["epochs"] * r["samples"] // r["batch"] == 8
        assert r["steps_per_s"] == pytest.approx(r["steps"] / r["median_s"])
        assert r["compile_s"] > 0
    assert train["jaxmlp.fit (fused)"]["time_over_fit"] == 1.0
    ens = _records(quick_run, "ensemble")
    assert {r["impl"] for r in ens} == {"jaxmlp fit_ensemble", "jaxmlp sequential fit"}
    for r in ens:
        assert r["model_steps_per_s"] == pytest.approx(r["members"] * r["steps"] / r["median_s"])


@pytest.mark.slow
def test_markdown_tables(quick_run):
    stdout = quick_run[0]
    for heading in (
        "### Training step",
        "### Whole training runs",
        "### Ensembles",
        "### Roofline",
    ):
        assert heading in stdout
    header = next(line for line in stdout.splitlines() if line.startswith("| config | act |"))
    assert "manual/autodiff time" in header and "% roofline" in header
    rows = [line for line in stdout.splitlines() if line.startswith("| S | relu | jaxmlp |")]
    assert len(rows) == 2
    assert all(row.count("|") == header.count("|") for row in rows)


def test_parse_configs():
    assert parse_configs("S,M,L") == [CONFIGS["S"], CONFIGS["M"], CONFIGS["L"]]
    s, c, m = parse_configs("s,custom:32,128,128,4:64:mse,M")
    assert (s, m) == (CONFIGS["S"], CONFIGS["M"])
    assert c == Config("custom:32,128,128,4:64:mse", (32, 128, 128, 4), 64, "mse")
    (c,) = parse_configs("custom:8,3:16")
    assert c.loss == "softmax_cross_entropy"
    assert parse_configs("custom:8,1:16")[0].loss == "mse"
    assert CONFIGS["S"].flops_per_step == 6 * 128 * (20 * 64 + 64 * 64 + 64 * 1)


@pytest.mark.parametrize(
    "spec", ["X", "custom:8:16", "custom:8,4:0", "custom:8,4:16:nope"], ids=str
)
def test_parse_configs_rejects(spec):
    with pytest.raises(ValueError, match=r"config|loss|sizes"):
        parse_configs(spec)


def test_parse_peers():
    assert _peers.parse_peers("torch,flax") == ["torch", "flax.linen", "flax.nnx"]
    assert _peers.parse_peers("none") == [] and _peers.parse_peers("") == []
    assert _peers.parse_peers("all") == list(_peers.PEERS)
    with pytest.raises(ValueError, match="unknown peer"):
        _peers.parse_peers("tensorflow")


class _FakeTorch:
    """Records what the torch peer asks of ``torch.set_float32_matmul_precision``."""

    def __init__(self):
        self.precision = "highest"  # torch's own default

    def set_float32_matmul_precision(self, value):
        self.precision = value

    def get_float32_matmul_precision(self):
        return self.precision


@pytest.mark.parametrize(
    ("jax_precision", "torch_precision"),
    [(None, "high"), ("tensorfloat32", "high"), ("bfloat16", "medium"), ("highest", "highest"),
     ("float32", "highest")],
)  # fmt: skip
def test_torch_matmul_precision_follows_jax(jax_precision, torch_precision):
    """On a GPU PyTorch's float32 matmuls run at JAX's precision (TF32 by default in JAX, true
    float32 by default in torch), so a float32 comparison is like for like."""
    from jaxmlp.bench._peers_other import _match_jax_precision

    fake = _FakeTorch()
    with jax.default_matmul_precision(jax_precision):
        assert _match_jax_precision(fake) == torch_precision == fake.precision


class _NumpyTorch(_FakeTorch):
    """Just enough of torch, backed by NumPy, for ``torch_matmul`` on a CPU."""

    float32 = np.float32

    def __init__(self):
        super().__init__()
        self.cuda = types.SimpleNamespace(is_available=lambda: False, synchronize=None)
        self.calls = 0

    def device(self, kind):
        return types.SimpleNamespace(type=kind)

    def Generator(self, device):
        return types.SimpleNamespace(manual_seed=np.random.default_rng)

    def randn(self, *shape, generator, device, dtype):
        return generator.standard_normal(shape).astype(dtype)

    def matmul(self, a, b):
        self.calls += 1
        return a @ b


def test_peer_roofline(monkeypatch):
    """torch's own matmul is timed like JAX's and reported beside it; without torch the row says
    why it is missing, and the % roofline columns always stay against JAX's matmul."""
    from jaxmlp.bench import _peers_other

    settings = benchmarking.Settings(repeats=3, target_s=1e-4, max_s=0.1)
    fake = _NumpyTorch()
    monkeypatch.setattr(_peers_other, "_import", lambda name: fake)
    rec = benchmarking.measure_peer_roofline(64, "float32", settings)
    assert rec["impl"] == "torch.matmul float32 64x64" and rec["library"] == "torch"
    assert rec["impl_matmul_precision"] == "highest" and fake.calls >= 2 + 3 * rec["inner"]
    assert rec["flops_per_s"] == pytest.approx(2 * 64**3 / rec["median_s"])
    assert rec["min_s"] <= rec["median_s"] <= rec["max_s"]

    def broken(a, b):
        raise RuntimeError("out of memory")

    fake.matmul = broken
    failed = benchmarking.measure_peer_roofline(64, "float32", settings)
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: out of memory"

    def missing(name):
        raise _peers.Unavailable(f"not installed ({name})")

    monkeypatch.setattr(_peers_other, "_import", missing)
    skipped = benchmarking.measure_peer_roofline(64, "float32", settings)
    assert skipped["status"] == "skipped" and "not installed (torch)" in skipped["reason"]
    ours = benchmarking.measure_roofline(64, "float32", settings)
    step = {"suite": "step", "impl": "jaxmlp", "dtype": "float32", "flops_per_s": 1e9,
            "flops_per_step": 1e6, "min_s": 1e-3}  # fmt: skip
    benchmarking.add_roofline([step], [ours])
    table = benchmarking.markdown([step, ours, rec, skipped])
    assert step["roofline"] == ours["impl"] == "jnp.dot float32 64x64"
    assert "| torch.matmul float32 64x64 | highest |" in table
    assert "- torch.matmul float32 64x64 (roofline, -, float32): skipped, not installed" in table


@pytest.mark.slow
def test_bfloat16_steps_and_unavailable_peer():
    """The mixed-precision policy runs; a peer without one is reported, not silently dropped."""
    cfg = parse_configs("custom:8,16,3:32")[0]
    settings = benchmarking.Settings(
        dtype="bfloat16", peers=("equinox",), repeats=3, target_s=1e-4, max_s=0.1
    )
    recs = benchmarking.bench_steps(cfg, settings)
    ours = [r for r in recs if r["impl"] == "jaxmlp"]
    assert [r["method"] for r in ours] == ["manual", "autodiff"]
    assert all(r["dtype"] == "bfloat16" and r["median_s"] > 0 for r in ours)
    (skipped,) = [r for r in recs if r["impl"] == "equinox"]
    assert skipped["status"] == "skipped" and "float32 only" in skipped["reason"]
    assert "- equinox (step, custom:8,16,3:32, bfloat16): skipped" in benchmarking.markdown(recs)


def _script(
    name: str, *args: str, tmp_path: Path, check: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 or not check, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_probe_fit_script(tmp_path):
    """The fit probe times each unroll variant against loop (a) and profiles short fits."""
    out = tmp_path / "probe.json"
    proc = _script("probe_fit.py", "--repeats", "1", "--unrolls", "1,2", "--json", str(out),
                   tmp_path=tmp_path)  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["step scan unroll 1", "step scan unroll 2 (shipped)"]
    for r in rows:
        assert 0 < r["fit 1 s"] and 0 < r["fit 20 s"] < r["fit 60 s"]
        assert r["loop 60 over fit 60"] > 0 and r["loop per step s"] > 0
    assert "fit(epochs=1) x 30" in proc.stdout and "fit.py" in proc.stdout


@pytest.mark.slow
def test_probe_mixed_script(tmp_path):
    """The mixed-precision probe trains each layout on the same rows to the same loss and times it
    against the first variant in the same rounds."""
    variants = "shipped manual,bf16 activations,bf16 weight copies in the state"
    proc = _script("probe_mixed.py", "--config", "M", "--steps", "2", "--rounds", "1",
                   "--matmul-size", "128", "--variants", variants, tmp_path=tmp_path)  # fmt: skip
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| shipped")
            or line.startswith("| bf16")]  # fmt: skip
    assert [r[0].strip("| ") for r in rows] == variants.split(",")
    assert rows[0][-1].strip(" |") == "1.000" and all(float(r[1]) > 0 for r in rows)
    losses = ast.literal_eval(proc.stdout.split("loss after training:")[1].strip())
    # A few SGD steps from the same start: the layouts agree to bfloat16 accuracy.
    assert max(losses.values()) - min(losses.values()) < 0.05
    bad = _script("probe_mixed.py", "--variants", "fp8", tmp_path=tmp_path, check=False)
    assert bad.returncode == 2 and "--variants: unknown ['fp8']" in bad.stderr


@pytest.mark.slow
def test_profile_step_script_without_device(tmp_path):
    """On a CPU the trace has no device plane: the script says so instead of failing."""
    proc = _script("profile_step.py", "--config", "S", "--dtype", "float32", "--methods",
                   "manual", "--steps", "2", tmp_path=tmp_path)  # fmt: skip
    assert "S float32 manual: no device plane in the trace" in proc.stdout


@pytest.mark.slow
def test_latency_script_quick(tmp_path):
    """The time-to-first-result benchmark runs its cases (``--quick``: one of each kind) once as
    fresh processes and reports the ratios to the scikit-learn script."""
    out = tmp_path / "latency.json"
    proc = _script("bench_latency.py", "--quick", "--json", str(out), tmp_path=tmp_path)
    record = json.loads(out.read_text())
    cases = {row["case"]: row for row in record["cases"]}
    assert cases["sklearn script"]["ratio_to_sklearn_script"] == 1.0
    assert all(row["median_s"] > 0 and len(row["times_s"]) == 1 for row in cases.values())
    for name in ("sklearn script", "jaxmlp script, cache cold", "jaxmlp script, cache warm"):
        assert cases[name]["reports"][0]["epochs"] == 10
    spec = importlib.util.spec_from_file_location(
        "bench_latency", ROOT / "benchmarks" / "bench_latency.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert set(cases) == set(script.QUICK_CASES)
    assert set(record["cv"]) == {f"cv jaxmlp, cache warm, {n} call" for n in ("first", "second")}
    assert record["environment"]["commit"] and "| jaxmlp --help |" in proc.stdout


def test_parse_layers():
    """``--layers``: each variant a '+'-joined set of pieces, ``issue15`` the whole list."""
    from jaxmlp.bench import ISSUE15_LAYERS, parse_layers

    assert parse_layers("plain,layernorm,dropout=0.2,residual,l1") == [
        ("plain", {}),
        ("layernorm", {"norm": "layernorm"}),
        ("dropout=0.2", {"dropout": 0.2}),
        ("residual", {"residual": True}),
        ("l1", {"l1": 1e-4}),
    ]
    (all_l1,) = parse_layers("all+l1=0.01")
    assert all_l1[1] == {"norm": "layernorm", "dropout": 0.1, "residual": True, "l1": 0.01}
    assert [name for name, _ in parse_layers(ISSUE15_LAYERS)][-2:] == ["all", "all+l1"]
    problem = _peers.Problem((8, 4, 4, 2), "relu", "mse", 0.01, "float32", **all_l1[1])
    assert problem.layers == "layernorm+dropout=0.1+residual+l1=0.01"
    with pytest.raises(_peers.Unavailable, match="no counterpart in the peer harness"):
        _peers.make_peer("torch", problem)
    for bad in ("batchnorm", "dropout=x", "residual=1", "all+"):
        with pytest.raises(ValueError, match="--layers: unknown piece"):
            parse_layers(bad)


@pytest.mark.slow
def test_layer_steps_record_both_methods_and_memory_ratios():
    """Issue 15's variants on a tiny network: both methods per variant, the same-run time and
    memory ratios, peers skipped (a smoke test: no timing is asserted)."""
    from jaxmlp.bench import parse_layers

    cfg = parse_configs("custom:6,8,8,3:16")[0]
    settings = benchmarking.Settings(peers=("equinox",), repeats=3, target_s=1e-4, max_s=0.1)
    for name, fields in parse_layers("all+l1,dropout"):
        for grad in (False, True):
            recs = benchmarking.bench_steps(cfg, settings, grad=grad, layers=fields)
            manual, autodiff = (r for r in recs if r["impl"] == "jaxmlp")
            assert (manual["method"], autodiff["method"]) == ("manual", "autodiff")
            assert manual["layers"] == autodiff["layers"] != "plain"
            assert manual["suite"] == ("grad" if grad else "step")
            for key in ("manual_over_autodiff", "manual_over_autodiff_cpu",
                        "temp_manual_over_autodiff", "step_bytes_manual_over_autodiff"):  # fmt: skip
                assert manual[key] > 0, (name, key)
            assert all(
                np.isfinite(r["final_loss"]) and r["median_s"] > 0 for r in (manual, autodiff)
            )
            skipped = [r for r in recs if r["impl"] == "equinox"]
            assert grad or (skipped and skipped[0]["status"] == "skipped")
    assert f"| {cfg.name} | relu | jaxmlp | dropout=0.1 | manual |" in benchmarking.markdown(recs)


def test_fit_overhead_script_times_fit_and_its_variants(tmp_path):
    """``bench_fit_overhead.py --variants --floors``: fit, fit with every report waited for, fit
    with a whole first call, the least a fit does through the engine and the bare scan, timed in
    the same rounds, with their ratios to the bare scan."""
    spec = importlib.util.spec_from_file_location(
        "bench_fit_overhead", ROOT / "benchmarks" / "bench_fit_overhead.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "overhead.json"
    assert script.main(["--repeats", "2", "--epochs", "2", "--rows", "256", "--variants",
                        "--floors", "--json", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    names = {"fit", "fit, waited", "fit, whole first call", "least fit", "least fit, orders ready",
             "program alone", "bare scan"}  # fmt: skip
    assert set(record["times_s"]) == names and all(len(v) == 2 for v in record["times_s"].values())
    assert set(record["ratios_to_bare_scan"]) == names
    assert record["ratios_to_bare_scan"]["bare scan"] == 1.0
    assert record["steps"] == 2 * 256 // 128 and record["target"] == 1.08
