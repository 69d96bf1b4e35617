"""The benchmark harness behind ``benchmarks/run.py`` (and a future ``jaxmlp bench``).

Suites (each returns JSON-ready records; :func:`main` prints them as Markdown tables):
    step      one training step (forward, backward, SGD update) per config and method, and the
              peers', on a fixed device-resident batch: compile time, median/min/max step time,
              steps/s, FLOP/s and % of the same-run matmul roofline, compiled temporary memory,
              peak device memory (GPU), and the same-run pairwise manual/autodiff ratio (in
              wall time, and in process CPU time, steadier when other jobs share the cores).
              ``--layers`` adds variants beyond the plain stack (layer norm, dropout, residual
              connections, l1; issue 15), jaxmlp's methods only.
    grad      the same for the jitted ``value_and_grad`` alone (``benchmarks/bench_grad.py``).
    train     ``fit``'s fused epochs vs per-step Python loops and peers, whole runs of ``epochs``.
    ensemble  ``fit_ensemble`` with K members vs K sequential ``fit`` calls (model-steps/s).
With ``step`` or ``grad``, the roofline: ``jnp.dot`` of two 2048 float32 matrices (and the run's
reduced dtype; 8192 bfloat16 on accelerators), and, when a torch peer runs, ``torch.matmul`` of
the same matrices as a reference for how fast that library's own kernels are.

Timing: compile first (timed apart), warm up, then ``repeats`` rounds; in each round every
implementation runs one timed chunk of ``inner`` steps ended by ``block_until_ready`` (the
order alternating between rounds), so every implementation does the same number of steps and
machine noise hits all alike. Ratios are same-round (pairwise) medians. Runs unchanged on CPU,
GPU and TPU; the device is the one JAX picks.

The measurements live in ``_bench_suites`` and the Markdown report in ``_bench_report``; this
module holds the configs, settings, environment and command line, and re-exports the rest.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import numpy as np

from jaxmlp.bench import _peers
from jaxmlp.bench._report import add_roofline, markdown
from jaxmlp.bench._suites import (
    bench_ensemble,
    bench_steps,
    bench_train,
    measure_peer_roofline,
    measure_roofline,
)
from jaxmlp.bench._suites import time_chunks as time_chunks

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

# The pieces beyond the plain stack (issue 15), as ``--layers`` names them: ``+`` joins pieces
# into one variant ("layernorm+dropout=0.2"), ``all`` is layer norm, dropout 0.1 and residual.
LAYER_PIECES = ("plain", "layernorm", "dropout[=RATE]", "residual", "l1[=STRENGTH]", "all")
ISSUE15_LAYERS = "plain,layernorm,dropout,residual,l1,all,all+l1"


def parse_layers(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """``"plain,layernorm,all+l1"`` -> ``[(name, problem fields), ...]``: each variant's
    ``Problem`` fields ``norm``, ``dropout`` (default rate 0.1), ``residual``, ``l1`` (default
    1e-4); ``all`` is ``layernorm+dropout+residual``."""
    out = []
    for variant in _csv(spec):
        fields: dict[str, Any] = {}
        for piece in variant.split("+"):
            name, _, value = piece.strip().partition("=")
            try:
                if name == "plain" and not value:
                    continue
                if name in ("layernorm", "norm") and not value:
                    fields["norm"] = "layernorm"
                elif name == "dropout":
                    fields["dropout"] = float(value or 0.1)
                elif name == "residual" and not value:
                    fields["residual"] = True
                elif name == "l1":
                    fields["l1"] = float(value or 1e-4)
                elif name == "all" and not value:
                    fields.update(norm="layernorm", dropout=0.1, residual=True)
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"--layers: unknown piece {piece!r} in {variant!r}; join any of "
                    f"{', '.join(LAYER_PIECES)} with '+'"
                ) from None
        out.append((variant, fields))
    return out


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
        from jaxmlp._core.losses import get_loss

        get_loss(loss)
        out.append(Config(token, sizes, int(m[2]), loss))
    return out


def matmul_precision() -> str:
    """The matmul precision in force (``jax_default_matmul_precision``), ``"default"`` if unset."""
    return str(jax.default_matmul_precision.value or "default")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cpus() -> int | None:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def environment(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and how a run happened: merged into every JSON record."""
    import jaxlib.version

    from jaxmlp import __version__

    dev = jax.devices()[0]
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        # The cores this process may run on (taskset / cgroups): small models train faster pinned
        # to one core than spread over two (benchmarks/RESULTS.md), so timings depend on it.
        "usable_cpus": _usable_cpus(),
        # Other processes competing for the cores make CPU timings noisy: record the load.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "jaxlib": jaxlib.version.__version__,
        "jaxmlp": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "matmul_precision": matmul_precision(),
        "command": shlex.join(argv if argv is not None else sys.argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


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
    add("--layers", default="plain", help="step, grad suites: network variants, e.g. plain,"
        "layernorm,dropout,residual,l1,all,all+l1 (issue15 for that list); each a '+'-joined "
        f"set of {', '.join(LAYER_PIECES)}; peers skip all but plain")  # fmt: skip
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
    try:
        layers = parse_layers(ISSUE15_LAYERS if a.layers == "issue15" else a.layers)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    env = {**environment(), "argv": argv}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"# jaxmlp benchmarks on {env['device_kind']} ({env['platform']})")
    records: list[dict[str, Any]] = []
    for suite in ("step", "grad"):
        for cfg, act, (lname, lfields) in itertools.product(configs, _csv(a.activations), layers):
            if suite in suites:
                log(f"{suite}: config {cfg.name}, {act}, {lname}, {s.dtype}")
                records += bench_steps(cfg, s, activation=act, grad=suite == "grad", layers=lfields)
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
        if any(p.startswith("torch") for p in s.peers):  # torch's own kernels, for reference
            rooflines += [measure_peer_roofline(r["n"], r["dtype"], s) for r in rooflines]
        records += rooflines
    records = [{**r, **env} for r in records]
    print(f"## jaxmlp benchmarks: {env['device_kind']} x{env['device_count']} ({env['platform']}; "
          f"CPU {env['cpu']}, usable cores: {env['usable_cpus']}), jax {env['jax']}, "
          f"jaxlib {env['jaxlib']}, matmul precision {env['matmul_precision']}, {env['date']}"
          f"\n\n`{env['command']}`\n")  # fmt: skip
    print(markdown(records))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"environment": env, "records": records}, f, indent=1, default=str)
        log(f"wrote {len(records)} records to {a.json}")
    return 0
