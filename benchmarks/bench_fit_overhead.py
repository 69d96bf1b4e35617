"""``fit``'s fixed cost per call against the limit XLA sets (issue 16, item 4).

The S config (MLP (20, 64, 64, 1), MSE, SGD 0.01, 1024 rows, batch 128, 40 shuffled epochs: 320
steps): ``jaxmlp.fit`` against a bare jitted ``lax.scan`` of the same 320 steps (the same manual
gradient and optimizer update) over minibatches gathered on the device beforehand, outside the
timing. Both are compiled first, then timed alternately in the same rounds, each round starting
one further along the list; medians and the median of each round's ratio. Target: ``fit`` within
1.08x of the bare scan.

``--variants`` adds ``fit`` with its host-side overlaps turned off, timed in the same rounds:
``waited`` (a callback that reads the carry, so every call's report is read before the next call
is launched) and ``whole first call`` (``epochs_per_call`` given, so the first call is not split
and all its row orders are drawn before it starts).

``--floors`` adds what ``fit`` cannot go below with the engine as it is, timed in the same rounds:
``least fit`` (the key's bits read, the initial state made, the row orders drawn and packed into
the plan, the compiled program called, its report read: none of ``fit``'s checks, history or
result), ``least fit, orders ready`` (the same with the plan packed beforehand) and ``program
alone`` (the compiled call with every argument ready, its initial state made beforehand, and its
report read).

    python benchmarks/bench_fit_overhead.py [--repeats 30] [--epochs 40] [--variants] [--floors]
                                            [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import optax

import jaxmlp
from jaxmlp._engine.orders import order_seed
from jaxmlp._engine.program import dtype_of, epochs_program, fresh_carry, read_report, rows_of
from jaxmlp._train import fit as fit_module
from jaxmlp._train.driver import host, plan_call
from jaxmlp._train.inputs import choose_epochs_per_call
from jaxmlp.bench import CONFIGS, environment
from jaxmlp.bench._suites import _data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--variants", action="store_true", help="also fit without its overlaps")
    p.add_argument("--floors", action="store_true", help="also the least a fit does")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    cfg = CONFIGS["S"]
    model = jaxmlp.MLP(cfg.sizes, "relu")
    params = model.init(jax.random.key(0))
    x, y = (jnp.asarray(v) for v in _data(cfg, a.rows, seed=2))
    opt = optax.sgd(0.01)
    steps_per_epoch = a.rows // cfg.batch
    key = jax.random.key(1)

    def fitter(**extra):
        def run_fit():
            r = jaxmlp.fit(model, params, x, y, loss=cfg.loss, key=key, optimizer=opt,
                           batch_size=cfg.batch, epochs=a.epochs, progress=False, **extra)  # fmt: skip
            return jax.block_until_ready(r.params)

        return run_fit

    class ReadsCarry(jaxmlp.Callback):  # the driver then reads every report before going on
        def on_call_end(self, state):
            pass

    runs = {"fit": fitter()}
    if a.variants:
        # The library's own choice, given: the same calls, the first not split.
        whole = choose_epochs_per_call(None, model, steps_per_epoch, cfg.batch)
        runs["fit, waited"] = fitter(callbacks=[ReadsCarry()])
        runs["fit, whole first call"] = fitter(epochs_per_call=whole)

    if a.floors:
        runs.update(_floors(runs["fit"], params, key, a.repeats * len(runs) + 4))

    vg = jaxmlp.value_and_grad(model, cfg.loss, method="manual")

    @jax.jit
    def bare(params, xs, ys):
        def step(c, batch):
            p, s = c
            value, grads = vg(p, *batch)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), value

        (p, _), values = jax.lax.scan(step, (params, opt.init(params)), (xs, ys))
        return p, values

    # The same row orders drawn on the device, gathered beforehand: (steps, batch, ...).
    perms = jnp.stack([jax.random.permutation(jax.random.key(e), a.rows) for e in range(a.epochs)])
    idx = perms[:, : steps_per_epoch * cfg.batch].reshape(-1, cfg.batch)
    xs, ys = x[idx], y[idx]

    def run_bare():
        return jax.block_until_ready(bare(params, xs, ys))

    runs["bare scan"] = run_bare
    compile_s = {}
    for name, fn in runs.items():
        t = time.perf_counter()
        fn()
        compile_s[name] = time.perf_counter() - t
    # Each round starts one further along the list: the code a call follows changes its time (a
    # fit right after another fit finds its Python warm, right after the bare scan cold).
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(a.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t)
    bare_s = times["bare scan"]
    each = {
        name: statistics.median(f / b for f, b in zip(v, bare_s, strict=True))
        for name, v in times.items()
    }
    ratios = [f / b for f, b in zip(times["fit"], bare_s, strict=True)]
    out = {
        "environment": environment(),
        "config": "S",
        "rows": a.rows,
        "epochs": a.epochs,
        "steps": a.epochs * steps_per_epoch,
        "first_call_s": compile_s,
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "min_ms": {k: 1e3 * min(v) for k, v in times.items()},
        "ratio_median_of_rounds": statistics.median(ratios),
        "ratios_to_bare_scan": each,
        "target": 1.08,
        "times_s": times,
    }
    print(f"S fit, {out['steps']} steps: fit {out['median_ms']['fit']:.2f} ms, bare scan "
          f"{out['median_ms']['bare scan']:.2f} ms (medians of {a.repeats}); fit / bare scan "
          f"{out['ratio_median_of_rounds']:.3f} (median of rounds), target <= 1.08")  # fmt: skip
    for name, r in each.items():
        if name not in ("fit", "bare scan"):
            print(f"  {name}: {out['median_ms'][name]:.2f} ms, {r:.3f}x the bare scan")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


def _floors(run_fit, params, key, calls: int) -> dict[str, Callable[[], Any]]:
    """The least a ``fit`` does through the engine, as functions to time: the spec, run settings
    and data are those ``fit`` hands its driver (caught from one ``fit`` of ``params``)."""
    seen = {}

    def catch(run, carry, data, *args, **kw):
        seen.update(run=run, data=data)
        return real(run, carry, data, *args, **kw)

    real = fit_module.drive
    fit_module.drive = catch
    try:
        run_fit()
    finally:
        fit_module.drive = real
    run, data = seen["run"], seen["data"]
    spec = run.spec
    program = epochs_program(spec)
    dtype = dtype_of(data.x, params)
    n = rows_of(data.x)

    def packed(seed):  # the driver's first plan, from the seed just read
        return plan_call(run._replace(seed=seed), 0, n, dtype).plan

    def call(carry, plan):
        out, report = program(carry, data.x, data.y, data.sw, plan, data.x_val, data.y_val)
        read_report(host(report), spec.epochs_per_call, dtype)
        return jax.block_until_ready(out.state.params)

    def fresh():
        return fresh_carry(params, spec.optimizer, dtype, spec.track_best)

    def least():
        return call(fresh(), packed(order_seed(key)))

    plan = packed(order_seed(key))

    def least_ready():
        return call(fresh(), plan)

    carries = [fresh() for _ in range(calls)]  # each call donates its own

    def alone():
        return call(carries.pop(), plan)

    return {"least fit": least, "least fit, orders ready": least_ready, "program alone": alone}


if __name__ == "__main__":
    raise SystemExit(main())
