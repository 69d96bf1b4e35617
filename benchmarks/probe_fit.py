"""Where the fused ``fit``'s time goes on a device: fixed cost per call vs cost per epoch, and
whether unrolling its scans changes either. A diagnostic for the S-config fused-vs-loop target,
not part of the benchmark suite; prints one Markdown table, then a host profile of short fits.

    python benchmarks/probe_fit.py [--repeats 7] [--unrolls 1,2,8] [--json PATH]

Variants (each timed in the same interleaved rounds as loop (a), the jitted per-step loop):
``fit`` with its per-epoch step scan not unrolled, unrolled 2x (as shipped for CPUs) and fully
(8 steps, as shipped for GPUs and TPUs). A variant swaps ``lax.scan``'s ``unroll`` inside ``jaxmlp._engine.program``
for this process only (the compiled programs are rebuilt).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax

from jaxmlp import fit
from jaxmlp._engine import program as engine
from jaxmlp.bench import CONFIGS, _peers, environment
from jaxmlp.bench._suites import _data

_real_scan = jax.lax.scan


class _Lax:
    """``jax.lax`` with the ``unroll`` of the step scan set by the probe."""

    def __init__(self):
        self.unroll = {"step": 1}

    def __getattr__(self, name):
        return getattr(jax.lax, name)

    def scan(self, f, init, xs=None, **kw):
        name = getattr(f, "func", f).__name__  # the engine scans functools.partial(step, key=)
        if name in self.unroll:
            kw["unroll"] = self.unroll[name]
        return _real_scan(f, init, xs, **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--unrolls", default="1,2,8", help="step-scan unroll variants to time")
    ap.add_argument("--json")
    a = ap.parse_args()
    cfg = CONFIGS["S"]
    problem = _peers.Problem(cfg.sizes, "relu", cfg.loss, 0.01, "float32")
    x, y = _data(cfg, 1024, seed=1)  # the train suite's rows
    base = _peers.JaxmlpFit(problem, "manual")
    base.load(x, y)
    loop = _peers.JaxmlpLoop(problem, "manual")
    loop.load(x, y)
    lax_proxy = _Lax()
    engine.lax = lax_proxy

    def run_fit(epochs, seed):
        r = fit(base.model, base.params, base.x_dev, base.y_dev, loss=cfg.loss,
                key=jax.random.key(seed), optimizer=base.optimizer, epochs=epochs,
                batch_size=cfg.batch, progress=False)  # fmt: skip
        jax.block_until_ready(r.params)

    shipped = engine._step_unroll(-(-1024 // cfg.batch))
    variants = {f"step scan unroll {u}" + (" (shipped)" if u == shipped else ""): u
                for u in map(int, a.unrolls.split(","))}  # fmt: skip
    rows = []
    seeds = iter(range(1, 10**6))
    for label, unroll in variants.items():
        lax_proxy.unroll = {"step": unroll}
        engine.epochs_program.cache_clear()
        t = time.perf_counter()
        run_fit(20, 0)  # compiles (one program serves 20 and 60 epochs)
        compile_s = time.perf_counter() - t
        loop.train(1, cfg.batch, 0)
        times = {"fit 20": [], "fit 60": [], "loop 60": [], "fit 1": []}
        for _ in range(a.repeats):
            for name, fn in (("fit 20", lambda: run_fit(20, next(seeds))),
                             ("fit 60", lambda: run_fit(60, next(seeds))),
                             ("loop 60", lambda: loop.train(60, cfg.batch, next(seeds))),
                             ("fit 1", lambda: run_fit(1, next(seeds)))):  # fmt: skip
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        per_epoch = (med["fit 60"] - med["fit 20"]) / 40
        ratio = statistics.median(
            lp / f for lp, f in zip(times["loop 60"], times["fit 60"], strict=True)
        )
        rows.append({"variant": label, "compile_s": compile_s, **{k + " s": v for k, v in med.items()},
                     "fit per epoch s": per_epoch, "fit fixed s": med["fit 20"] - 20 * per_epoch,
                     "loop per step s": med["loop 60"] / 480, "loop 60 over fit 60": ratio})  # fmt: skip
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = [r["variant"]] + [f"{r[k] * 1e3:.3f} ms" if k.endswith(" s") else f"{r[k]:.2f}"
                                  for k in keys[1:]]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    # Where one short call's fixed cost goes on the host: a profile of 30 one-epoch fits
    # (the device work of one epoch is a small part of it; blocking reads show as waits).
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(30):
        run_fit(1, next(seeds))
    profile.disable()
    print(
        "\nfit(epochs=1) x 30, cumulative host time (ms per call), jaxmlp's and JAX's top entries:"
    )
    stats = pstats.Stats(profile)
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])  # (file, line, name): cumtime
    shown = 0
    for (file, line, name), (_, calls, _, cum, _) in entries:
        if ("jaxmlp" in file or "jax/_src/api.py" in file) and shown < 25:
            print(
                f"  {cum / 30 * 1e3:7.3f} ms  {calls / 30:5.1f} calls  {Path(file).name}:{line} {name}"
            )
            shown += 1
    if a.json:
        Path(a.json).write_text(
            json.dumps({"env": environment(sys.argv[1:]), "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
