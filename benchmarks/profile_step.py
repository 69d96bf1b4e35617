"""Where a training step's device time goes: a ``jax.profiler`` trace of a few steady-state
steps, summed per device kernel. A diagnostic for the GPU roofline target, not part of the suite.

    python benchmarks/profile_step.py --config L --dtype bfloat16 --methods manual,autodiff
    python benchmarks/profile_step.py --fit     # the S config's fused fit, 40 epochs

Prints, per traced run and per device timeline line (streams, XLA ops, modules), the busy time
per step and the kernels that take most of it. Without an accelerator the trace has no device
plane and the script says so.
"""

from __future__ import annotations

import argparse
import collections
import glob
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
from jax.profiler import ProfileData

from jaxmlp.bench import CONFIGS, _peers
from jaxmlp.bench._suites import _data


def summarize(trace_dir: str, per: int, label: str, top: int) -> None:
    (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    planes = [p for p in ProfileData.from_file(path).planes if p.name.startswith("/device:")]
    if not planes:
        print(f"{label}: no device plane in the trace (CPU run?)")
        return
    for plane in planes:
        for line in plane.lines:
            totals: collections.Counter = collections.Counter()
            counts: collections.Counter = collections.Counter()
            for ev in line.events:
                totals[ev.name] += ev.duration_ns
                counts[ev.name] += 1
            busy = sum(totals.values())
            if not busy:
                continue
            print(f"\n{label} | {plane.name} | {line.name}: {busy / per / 1e3:.1f} us busy per "
                  f"step, {sum(counts.values()) / per:.1f} events per step")  # fmt: skip
            print("| kernel | us per step | share | calls per step |\n|---|---|---|---|")
            for name, ns in totals.most_common(top):
                print(f"| {name[:90]} | {ns / per / 1e3:.2f} | {100 * ns / busy:.1f}% | "
                      f"{counts[name] / per:.2f} |")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="L")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--methods", default="manual,autodiff")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fit", action="store_true", help="profile the S config's fused fit instead")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    if a.fit:
        cfg = CONFIGS["S"]
        problem = _peers.Problem(cfg.sizes, "relu", cfg.loss, 0.01, "float32")
        impl = _peers.JaxmlpFit(problem, "manual")
        impl.load(*_data(cfg, 1024, seed=1))
        impl.train(40, cfg.batch, 0)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            with jax.profiler.trace(d):
                impl.train(40, cfg.batch, 1)
            print(f"fit, 40 epochs x 8 steps: {(time.perf_counter() - t) * 1e3:.1f} ms traced")
            summarize(d, 320, "fit S (per step)", a.top)
        return 0
    cfg = CONFIGS[a.config]
    for method in a.methods.split(","):
        problem = _peers.Problem(cfg.sizes, "relu", cfg.loss, 0.01, a.dtype)
        impl = _peers.JaxmlpStep(problem, method)
        impl.load(*_data(cfg, cfg.batch))
        impl.prepare()
        impl.run(a.steps)
        with tempfile.TemporaryDirectory() as d:
            with jax.profiler.trace(d):
                impl.run(a.steps)
            summarize(d, a.steps, f"{a.config} {a.dtype} {method}", a.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
