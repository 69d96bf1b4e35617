"""The benchmark harness behind ``benchmarks/run.py`` (and a future ``jaxmlp bench``).

Suites (each returns JSON-ready records; :func:`main` prints them as Markdown tables):
    step      one training step (forward, backward, SGD update) per config and method, and the
              peers', on a fixed device-resident batch: compile time, median/min/max step time,
              steps/s, FLOP/s and % of the same-run matmul roofline, compiled temporary memory,
              peak device memory (GPU), and the same-run pairwise manual/autodiff ratio.
    grad      the same for the jitted ``value_and_grad`` alone (``benchmarks/bench_grad.py``).
    train     ``fit``'s fused epochs vs per-step Python loops and peers, whole runs of ``epochs``.
    ensemble  ``fit_ensemble`` with K members vs K sequential ``fit`` calls (model-steps/s).

Timing: compile first (timed apart), warm up, then ``repeats`` rounds; in each round every
implementation runs one timed chunk of ``inner`` steps ended by ``block_until_ready`` (the
order alternating between rounds), so every implementation does the same number of steps and
machine noise hits all alike. Ratios are same-round (pairwise) medians. Runs unchanged on CPU,
GPU and TPU; the device is the one JAX picks.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import _peers
from jaxmlp._peers import Problem, Unavailable

LOSS_ALIASES = {"ce": "softmax_cross_entropy", "xent": "softmax_cross_entropy"}


@dataclass(frozen=True)
class Config:
    """A benchmark network: ``sizes`` (input included), batch size and loss."""

    name: str
    sizes: tuple[int, ...]
    batch: int
    loss: str

    @property
    def flops_per_step(self) -> int:
        """Training-step FLOPs: 6 x batch x sum fan_in * fan_out (2 forward, 4 backward)."""
        return 6 * self.batch * sum(i * o for i, o in itertools.pairwise(self.sizes))


CONFIGS = {
    "S": Config("S", (20, 64, 64, 1), 128, "mse"),
    "M": Config("M", (784, 512, 512, 10), 256, "softmax_cross_entropy"),
    "L": Config("L", (1024, 2048, 2048, 2048, 10), 1024, "softmax_cross_entropy"),
}
QUICK_CONFIGS = "S,custom:32,128,128,4:64:mse"


def parse_configs(spec: str) -> list[Config]:
    """``"S,M,custom:32,128,128,4:64:mse"`` -> configs; a custom one is
    ``custom:SIZES:BATCH[:LOSS]`` (loss default: mse for one output, else softmax CE)."""
    out = []
    for token in re.split(r",(?=[A-Za-z])", spec.strip()):
        token = token.strip()
        if token.upper() in CONFIGS:
            out.append(CONFIGS[token.upper()])
            continue
        m = re.fullmatch(r"custom:([\d,]+):(\d+)(?::(\w+))?", token)
        if not m:
            raise ValueError(
                f"--configs: unknown config {token!r}; use S, M, L or custom:SIZES:BATCH[:LOSS]"
            )
        sizes = tuple(int(s) for s in m[1].split(",") if s)
        if len(sizes) < 2 or min(sizes) < 1 or int(m[2]) < 1:
            raise ValueError(f"--configs: {token!r} needs >= 2 positive sizes and a batch >= 1")
        loss = m[3] or ("mse" if sizes[-1] == 1 else "softmax_cross_entropy")
        loss = LOSS_ALIASES.get(loss, loss)
        from jaxmlp.losses import get_loss

        get_loss(loss)
        out.append(Config(token, sizes, int(m[2]), loss))
    return out


def matmul_precision() -> str:
    """The matmul precision in force (``jax_default_matmul_precision``), ``"default"`` if unset."""
    return str(jax.config.jax_default_matmul_precision or "default")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and how a run happened: merged into every JSON record."""
    import jaxlib

    from jaxmlp import __version__

    dev = jax.devices()[0]
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        # Other processes competing for the cores make CPU timings noisy: record the load.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jaxmlp": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "matmul_precision": matmul_precision(),
        "command": shlex.join(argv if argv is not None else sys.argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


@dataclass(frozen=True)
class Settings:
    """How much to measure (``main`` fills it from the flags; ``quick`` shrinks everything).

    Attributes:
        methods: jaxmlp gradient methods; dtype: compute dtype (parameters stay float32).
        peers: peer names (``_peers.PEERS``); lr: the SGD learning rate everywhere.
        repeats: timed chunks per implementation; target_s: length of one chunk (the number
            of steps per chunk is calibrated on jaxmlp's first method); max_s: cap on the
            timed work per implementation (repeats shrink, never below 3).
        samples, epochs: the train and ensemble suites' data rows and epochs; ks: ensemble sizes.
    """

    methods: tuple[str, ...] = ("manual", "autodiff")
    dtype: str = "float32"
    peers: tuple[str, ...] = ()
    lr: float = 0.01
    repeats: int = 20
    target_s: float = 0.05
    max_s: float = 20.0
    samples: int = 1024
    epochs: int = 40
    ks: tuple[int, ...] = (1, 8, 64)


def time_chunks(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Times each ``fn`` ``repeats`` times, interleaved, alternating the order every round."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - t)
    return out


def measure_roofline(n: int, dtype: str, s: Settings) -> dict[str, Any]:
    """``jnp.dot`` of two ``(n, n)`` matrices: the FLOP/s the device reaches on a plain matmul.

    A reduced-precision ``dtype`` accumulates and returns float32, as the mixed-precision
    policy's matmuls do (on CPUs a bfloat16-output dot can take a much slower kernel).
    """
    ka, kb = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(ka, (n, n), dtype), jax.random.normal(kb, (n, n), dtype)
    acc = None if dtype == "float32" else jnp.float32
    compiled = jax.jit(functools.partial(jnp.dot, preferred_element_type=acc)).lower(a, b).compile()
    jax.block_until_ready(compiled(a, b))
    t = time.perf_counter()
    jax.block_until_ready(compiled(a, b))
    inner = max(1, math.ceil(s.target_s / (time.perf_counter() - t)))

    def chunk():
        for _ in range(inner):
            c = compiled(a, b)
        jax.block_until_ready(c)

    st = _stats([t / inner for t in time_chunks({"dot": chunk}, s.repeats)["dot"]])
    name = f"jnp.dot {dtype} {n}x{n}" + ("" if acc is None else " (float32 accumulation)")
    rec = {"suite": "roofline", "impl": name, "dtype": dtype, "n": n}
    return {**rec, **st, "repeats": s.repeats, "inner": inner,
            "flops_per_s": 2 * n**3 / st["median_s"]}  # fmt: skip


def _data(cfg: Config, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cfg.sizes[0]), dtype=np.float32)
    if cfg.loss == "softmax_cross_entropy":
        return x, rng.integers(0, cfg.sizes[-1], rows).astype(np.int32)
    return x, rng.standard_normal((rows, cfg.sizes[-1]), dtype=np.float32)


def _base(suite: str, cfg: Config, impl: str, dtype: str, **extra) -> dict[str, Any]:
    return {"suite": suite, "config": cfg.name, "sizes": list(cfg.sizes), "batch": cfg.batch,
            "loss": cfg.loss, "impl": impl, "dtype": dtype, **extra}  # fmt: skip


def _record(suite: str, cfg: Config, impl: _peers.Impl, s: Settings, times, **extra) -> dict:
    st = _stats(times)
    return {**_base(suite, cfg, impl.name, s.dtype), "method": impl.method,
            "version": impl.version, "impl_device": impl.device, "param_dtype": "float32",
            "status": "ok",
            "compile_s": impl.compile_s, **st, "repeats": len(times),
            "steps_per_s": 1.0 / st["median_s"], "final_loss": impl.last_loss(),
            **extra}  # fmt: skip


def _build_peer(suite: str, cfg: Config, name: str, problem: Problem, s: Settings, data=None,
                **extra):  # fmt: skip
    """``(impl, None)``, or ``(None, record)`` saying why peer ``name`` cannot run. With
    ``data`` the peer also loads it and compiles (warms up) its step."""
    try:
        impl = _peers.make_peer(name, problem)
        if data is not None:
            impl.load(*data)
            impl.prepare()
        return impl, None
    except Unavailable as err:
        status, reason = "skipped", str(err)
    except Exception as err:  # a peer that breaks here (torch.compile, say) is reported
        status, reason = "failed", f"{type(err).__name__}: {err}"[:300]
    return None, {**_base(suite, cfg, name, s.dtype, **extra), "status": status, "reason": reason}


def bench_steps(
    cfg: Config, s: Settings, *, activation: str = "relu", grad: bool = False
) -> list[dict[str, Any]]:
    """The step (or, with ``grad``, value-and-grad) suite for one config; see the module doc."""
    suite = "grad" if grad else "step"
    problem = Problem(cfg.sizes, activation, cfg.loss, s.lr, s.dtype)
    x, y = _data(cfg, cfg.batch)
    ours = {m: _peers.JaxmlpStep(problem, m, grad=grad) for m in s.methods}
    for impl in ours.values():
        impl.load(x, y)
        impl.prepare()
    impls: dict[str, _peers.Impl] = dict(ours)
    records: list[dict[str, Any]] = []
    for name in () if grad else s.peers:
        impl, missing = _build_peer(suite, cfg, name, problem, s, (x, y), activation=activation)
        if missing is None:
            impls[name] = impl
        else:
            records.append(missing)
    # Calibrate on the first method: chunks of >= target_s; cap the timed work at max_s.
    first = ours[s.methods[0]]
    t1 = min(time_chunks({"c": lambda: first.run(1)}, 3)["c"])
    inner = max(1, math.ceil(s.target_s / t1))
    repeats = max(3, min(s.repeats, int(s.max_s / (inner * t1))))
    fns = {k: (lambda impl=impl: impl.run(inner)) for k, impl in impls.items()}
    times = {k: [t / inner for t in v] for k, v in time_chunks(fns, repeats).items()}
    extra = {"activation": activation, "flops_per_step": cfg.flops_per_step, "inner": inner}
    for k, impl in impls.items():
        rec = _record(suite, cfg, impl, s, times[k], **extra, temp_bytes=impl.temp_bytes,
                      peak_bytes=_peak_bytes())  # fmt: skip
        rec["flops_per_s"] = cfg.flops_per_step / rec["median_s"]
        # Same-round ratios: every implementation ran once per round, so noise hits alike.
        rec["time_over_jaxmlp"] = _pairwise(times[k], times[s.methods[0]])
        if k == "manual" and "autodiff" in ours:
            rec["manual_over_autodiff"] = _pairwise(times["manual"], times["autodiff"])
            ta, tb = impl.temp_bytes, ours["autodiff"].temp_bytes
            rec["temp_manual_over_autodiff"] = ta / tb if ta is not None and tb else None
        records.append(rec)
    return records


def _pairwise(a: list[float], b: list[float]) -> float:
    """The median over rounds of ``a[r] / b[r]`` (both timed in the same rounds)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def bench_train(cfg: Config, s: Settings) -> list[dict[str, Any]]:
    """``fit`` (fused) vs loop (a) (jitted step, NumPy host shuffle and batches) vs loop (b)
    (device slicing each step) vs the peers' loops: whole shuffled runs of ``s.epochs``."""
    if s.samples % cfg.batch:
        raise ValueError(f"samples ({s.samples}) must be a multiple of the batch ({cfg.batch})")
    problem = Problem(cfg.sizes, "relu", cfg.loss, s.lr, s.dtype)
    x, y = _data(cfg, s.samples, seed=1)
    impls: dict[str, _peers.Impl] = {}
    for m in s.methods:
        impls[f"fit {m}"] = _peers.JaxmlpFit(problem, m)
        impls[f"loop a {m}"] = _peers.JaxmlpLoop(problem, m)
    impls["loop b"] = _peers.JaxmlpNaiveLoop(problem, s.methods[0])
    records: list[dict[str, Any]] = []
    ours = list(impls)
    for name in s.peers:
        impl, missing = _build_peer("train", cfg, name, problem, s)
        if missing is None:
            impls[name] = impl
        else:
            records.append(missing)
    steps = s.epochs * (s.samples // cfg.batch)
    for k, impl in list(impls.items()):
        impl.load(x, y)
        t = time.perf_counter()
        try:
            impl.train(1, cfg.batch, seed=0)  # compiles and warms up
        except Exception as err:
            if k in ours:
                raise
            del impls[k]
            reason = f"{type(err).__name__}: {err}"[:300]
            records.append(
                {**_base("train", cfg, k, s.dtype), "status": "failed", "reason": reason}
            )
            continue
        impl.compile_s = time.perf_counter() - t
    seeds = itertools.count(1)
    fns = {k: (lambda i=i: i.train(s.epochs, cfg.batch, next(seeds))) for k, i in impls.items()}
    times = time_chunks(fns, s.repeats)
    ref = times[f"fit {s.methods[0]}"]
    extra = {"activation": "relu", "samples": s.samples, "epochs": s.epochs, "steps": steps}
    for k, impl in impls.items():
        rec = _record("train", cfg, impl, s, times[k], **extra)
        rec["steps_per_s"] = steps / rec["median_s"]
        rec["time_over_fit"] = _pairwise(times[k], ref)
        records.append(rec)
    return records


def bench_ensemble(cfg: Config, s: Settings) -> list[dict[str, Any]]:
    """``fit_ensemble`` with K members vs K sequential ``fit`` calls: model-steps/s."""
    from jaxmlp.ensemble import fit_ensemble
    from jaxmlp.mlp import MLP
    from jaxmlp.training import fit

    model = MLP(cfg.sizes, "relu", compute_dtype=None if s.dtype == "float32" else s.dtype)
    x, y = (jnp.asarray(a) for a in _data(cfg, s.samples, seed=2))
    steps = s.epochs * -(-s.samples // cfg.batch)
    method = s.methods[0]
    common = {"loss": cfg.loss, "optimizer": _peers.sgd(s.lr), "batch_size": cfg.batch,
              "method": method, "progress": False}  # fmt: skip
    seeds = itertools.count()

    def ensemble(k, epochs):
        key = jax.random.key(next(seeds))
        r = fit_ensemble(model, x, y, num_models=k, key=key, epochs=epochs, **common)
        jax.block_until_ready(r.params)

    def sequential(k, epochs):
        for _ in range(k):
            k_init, k_fit = jax.random.split(jax.random.key(next(seeds)))
            r = fit(model, model.init(k_init), x, y, key=k_fit, epochs=epochs, **common)
        jax.block_until_ready(r.params)

    records = []
    for k in s.ks:
        fns = {"fit_ensemble": ensemble, "sequential fit": sequential}
        warm = {}
        for label, fn in fns.items():
            t = time.perf_counter()
            fn(k, 1)
            warm[label] = time.perf_counter() - t
        timed = {lab: (lambda f=f, k=k: f(k, s.epochs)) for lab, f in fns.items()}
        times = time_chunks(timed, s.repeats)
        for label in fns:
            st = _stats(times[label])
            rec = _base("ensemble", cfg, f"jaxmlp {label}", s.dtype, method=method, members=k)
            records.append({**rec, "status": "ok", "samples": s.samples, "epochs": s.epochs,
                            "steps": steps, "compile_s": warm[label], **st, "repeats": s.repeats,
                            "model_steps_per_s": k * steps / st["median_s"],
                            "speedup_over_sequential": _pairwise(times["sequential fit"],
                                                                 times[label])})  # fmt: skip
    return records


# ---------------------------------------------------------------- reporting and the CLI


def _f(value: Any, spec: str = "", scale: float = 1.0) -> str:
    if value is None:
        return "–"
    return format(value * scale, spec) if spec else str(value)


# One Markdown table per suite: "header | record key | format | scale" per column.
_COLUMNS = {
    "step": """config|config
        act|activation
        impl|impl
        method|method
        dtype|dtype
        compile s|compile_s|.2f
        median ms|median_s|.3f|1e3
        min ms|min_s|.3f|1e3
        max ms|max_s|.3f|1e3
        steps/s|steps_per_s|.1f
        GFLOP/s|flops_per_s|.1f|1e-9
        % roofline|pct_roofline|.1f
        % roofline (min)|pct_roofline_best|.1f
        temp MiB|temp_bytes|.2f|9.5367431640625e-07
        peak MiB|peak_bytes|.1f|9.5367431640625e-07
        manual/autodiff time|manual_over_autodiff|.3f
        manual/autodiff temp|temp_manual_over_autodiff|.3f
        time ÷ jaxmlp|time_over_jaxmlp|.2f""",
    "train": """config|config
        impl|impl
        method|method
        dtype|dtype
        steps|steps
        warm-up s|compile_s|.2f
        median s|median_s|.4f
        min s|min_s|.4f
        max s|max_s|.4f
        steps/s|steps_per_s|.0f
        time ÷ fit|time_over_fit|.2f""",
    "ensemble": """K|members
        impl|impl
        dtype|dtype
        warm-up s|compile_s|.2f
        median s|median_s|.3f
        model-steps/s|model_steps_per_s|.0f
        speedup vs sequential|speedup_over_sequential|.2f""",
    "roofline": """matmul|impl
        median ms|median_s|.3f|1e3
        GFLOP/s|flops_per_s|.1f|1e-9""",
}
_COLUMNS = {"step": _COLUMNS["step"], "grad": _COLUMNS["step"], **_COLUMNS}
_TITLES = {
    "step": "Training step (forward, backward, SGD update; steady state, per step)",
    "grad": "value_and_grad alone (steady state, per call)",
    "train": "Whole training runs ({samples} samples, {epochs} epochs, batch {batch}, "
    "shuffled, SGD; time after a warm-up run)",
    "ensemble": "Ensembles vs sequential fits (config {config}, {samples} samples, "
    "{epochs} epochs per member)",
    "roofline": "Roofline (same run)",
}


def markdown(records: list[dict[str, Any]]) -> str:
    """The Markdown tables for a list of records (any mix of suites)."""
    out = []
    for suite, spec in _COLUMNS.items():
        rows = [r for r in records if r["suite"] == suite and r.get("status", "ok") == "ok"]
        if not rows:
            continue
        cols = [line.strip().split("|") for line in spec.splitlines()]
        lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = [_f(r.get(c[1]), *c[2:3], *(float(v) for v in c[3:])) for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        out += [f"### {_TITLES[suite].format(**rows[0])}", "\n".join(lines)]
    missing = [r for r in records if r.get("status") in ("skipped", "failed")]
    if missing:
        out.append("### Peers not measured")
        out.append("\n".join(f"- {r['impl']} ({r['suite']}, {r['config']}, {r['dtype']}): "
                             f"{r['status']}, {r['reason']}" for r in missing))  # fmt: skip
    return "\n\n".join(out) + "\n"


def add_roofline(records: list[dict[str, Any]], rooflines: list[dict[str, Any]]) -> None:
    """Fills ``pct_roofline``: reduced-precision runs against the matmul of their dtype (else
    bfloat16) when one was measured, everything else against the float32 matmul."""
    by_dtype = {r["dtype"]: r for r in rooflines}
    for rec in records:
        if rec.get("flops_per_s") is None:
            continue
        roof = by_dtype["float32"]
        if rec["dtype"] != "float32":
            roof = by_dtype.get(rec["dtype"]) or by_dtype.get("bfloat16") or roof
        rec["roofline"], rec["roofline_flops_per_s"] = roof["impl"], roof["flops_per_s"]
        rec["pct_roofline"] = 100.0 * rec["flops_per_s"] / roof["flops_per_s"]
        # Best (min) times against each other: robust when other processes share the cores.
        rec["pct_roofline_best"] = (
            100.0 * roof["min_s"] / rec["min_s"] * rec["flops_per_step"] / (2 * roof["n"] ** 3)
        )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags of ``benchmarks/run.py`` (and of a ``jaxmlp bench`` subcommand)."""
    p = argparse.ArgumentParser(prog=prog, description="jaxmlp benchmarks (Markdown on stdout)")
    add = p.add_argument
    add("--configs", help="S,M,L and/or custom:SIZES:BATCH[:LOSS] (default S,M,L)")
    add("--methods", default="manual,autodiff", help="gradient methods")
    add("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
        help="compute dtype; parameters, loss and gradients stay float32")  # fmt: skip
    add("--suites", default="step,train,ensemble", help="any of step, grad, train, ensemble")
    add("--activations", default="relu", help="hidden activations (step, grad suites)")
    add("--peers", help=f"all, none or any of {', '.join(_peers.PEERS)} (aliases flax, linen, "
        "nnx, eqx); default all, none with --quick")  # fmt: skip
    add("--quick", action="store_true", help="a smoke run of well under a minute on a CPU")
    add("--json", help="write every record (with its environment) to this JSON file")
    add("--repeats", type=int, help="timed repeats (default 20, quick 3)")
    add("--target-ms", type=float, help="length of one timed chunk (default 50, quick 2)")
    add("--max-seconds", type=float, help="timed work per implementation (default 20)")
    add("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    add("--train-config", default="S", help="config of the train/ensemble suites (default S)")
    add("--samples", type=int, help="training rows (default 1024, quick 256)")
    add("--epochs", type=int, help="training epochs (default 40, quick 4)")
    add("--ensembles", help="ensemble sizes K (default 1,8,64, quick 4)")
    add("--matmul-precision", choices=["default", "high", "highest", "bfloat16", "tensorfloat32", "float32"],
        help="jax_default_matmul_precision for the whole run")  # fmt: skip
    return p


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _settings(a: argparse.Namespace) -> Settings:
    q = a.quick
    methods = tuple(_csv(a.methods))
    if not methods or any(m not in ("manual", "autodiff") for m in methods):
        raise SystemExit(f"--methods: choose from manual, autodiff; got {a.methods!r}")
    return Settings(
        methods=methods, dtype=a.dtype, lr=a.lr,
        peers=tuple(_peers.parse_peers(a.peers if a.peers is not None else ("none" if q else "all"))),
        repeats=a.repeats or (3 if q else 20), target_s=(a.target_ms or (2 if q else 50)) / 1e3,
        max_s=a.max_seconds or (1.0 if q else 20.0), samples=a.samples or (256 if q else 1024),
        epochs=a.epochs or (4 if q else 40),
        ks=tuple(int(k) for k in _csv(a.ensembles or ("4" if q else "1,8,64"))),
    )  # fmt: skip


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Runs the suites ``argv`` asks for, prints Markdown tables, optionally writes JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser(prog).parse_args(argv)
    if a.matmul_precision:
        jax.config.update("jax_default_matmul_precision", a.matmul_precision)
    s = _settings(a)
    configs = parse_configs(a.configs or (QUICK_CONFIGS if a.quick else "S,M,L"))
    if a.quick and any(c.name == "L" for c in configs):
        print("--quick: skipping config L", file=sys.stderr)
        configs = [c for c in configs if c.name != "L"]
    suites = _csv(a.suites)
    if any(x not in ("step", "grad", "train", "ensemble") for x in suites):
        raise SystemExit(f"--suites: choose from step, grad, train, ensemble; got {a.suites!r}")
    train_cfg = parse_configs(a.train_config)[0]
    env = {**environment(), "argv": argv}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"# jaxmlp benchmarks on {env['device_kind']} ({env['platform']})")
    records: list[dict[str, Any]] = []
    for suite in ("step", "grad"):
        for cfg, act in itertools.product(configs, _csv(a.activations)):
            if suite in suites:
                log(f"{suite}: config {cfg.name}, {act}, {s.dtype}")
                records += bench_steps(cfg, s, activation=act, grad=suite == "grad")
    if "train" in suites:
        log(f"train: config {train_cfg.name}, {s.samples} samples, {s.epochs} epochs")
        ts = replace(s, repeats=max(2, s.repeats // 2))
        records += bench_train(train_cfg, replace(ts, methods=s.methods[:1]) if a.quick else ts)
    if "ensemble" in suites:
        log(f"ensemble: K in {list(s.ks)}")
        records += bench_ensemble(train_cfg, replace(s, repeats=2 if a.quick else 3))
    if {"step", "grad"} & set(suites):
        log("roofline")
        # Measured last, so that its large matrices do not set the peak-memory figures.
        rooflines = [measure_roofline(2048, "float32", s)]
        if env["platform"] != "cpu":
            rooflines.append(measure_roofline(8192, "bfloat16", s))
        elif s.dtype != "float32":  # the CPU's own reduced-precision matmul (AMX, AVX512-BF16)
            rooflines.append(measure_roofline(2048, s.dtype, s))
        add_roofline(records, rooflines)
        records += rooflines
    records = [{**r, **env} for r in records]
    print(f"## jaxmlp benchmarks: {env['device_kind']} x{env['device_count']} ({env['platform']}; "
          f"CPU {env['cpu']}), jax {env['jax']}, jaxlib {env['jaxlib']}, matmul precision "
          f"{env['matmul_precision']}, {env['date']}\n\n`{env['command']}`\n")  # fmt: skip
    print(markdown(records))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"environment": env, "records": records}, f, indent=1, default=str)
        log(f"wrote {len(records)} records to {a.json}")
    return 0
