"""Forward vs reverse mode: per-example input Jacobians ``d out / d x`` through ``apply_manual``.

``jax.jacfwd`` pushes one tangent per input through the hand-written tangent pass, ``jax.jacrev``
pulls one cotangent per output back through the hand-written backward pass: forward mode should
win when the inputs are few, reverse mode when the outputs are. Two tanh networks of the same
width show it, each Jacobian vmapped over a batch of rows (jitted; compile timed apart; the
implementations interleaved round by round, same-run medians). ``model.apply``'s Jacobians (JAX's
own autodiff) run alongside for reference. Last, the cost of a call alone: a jitted forward pass
of 4 rows, whose program keeps ``apply_manual``'s primitive (JAX then dispatches it in Python).

    python benchmarks/bench_modes.py
    python benchmarks/bench_modes.py --quick --json modes.json
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax

import jaxmlp

# name -> sizes: few inputs and many outputs, then the reverse
NETWORKS = {
    "2 in, 64 out": (2, 64, 64, 64),
    "64 in, 2 out": (64, 64, 64, 2),
}


def jacobians(model: jaxmlp.MLP, apply, how):
    """``x (batch, in) -> (batch, out, in)``: each row's Jacobian by ``how`` (jacfwd or jacrev)."""
    row = functools.partial(apply, model)
    return jax.jit(jax.vmap(lambda p, xi: how(lambda x1: row(p, x1))(xi), in_axes=(None, 0)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_modes.py", description=__doc__)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20, help="calls per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 calls (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    rounds, calls = (2, 2) if args.quick else (args.rounds, args.calls)

    applies = {"apply_manual": jaxmlp.apply_manual, "model.apply": lambda m, p, x: m.apply(p, x)}
    results = {}
    for name, sizes in NETWORKS.items():
        model = jaxmlp.MLP(sizes, activation="tanh")
        params = model.init(jax.random.key(0))
        x = jax.random.normal(jax.random.key(1), (args.batch, sizes[0]))
        fns, compile_s = {}, {}
        for label, apply in applies.items():
            for how in (jax.jacfwd, jax.jacrev):
                key = f"{how.__name__} {label}"
                fns[key] = jacobians(model, apply, how)
                start = time.perf_counter()
                jax.block_until_ready(fns[key](params, x))
                compile_s[key] = time.perf_counter() - start
        ref = np.asarray(fns["jacrev model.apply"](params, x))
        for fn in fns.values():
            np.testing.assert_allclose(np.asarray(fn(params, x)), ref, rtol=1e-4, atol=1e-5)
        times = {key: [] for key in fns}
        for _ in range(rounds):
            for key, fn in fns.items():
                start = time.perf_counter()
                outs = [fn(params, x) for _ in range(calls)]
                jax.block_until_ready(outs)
                times[key].append((time.perf_counter() - start) / calls)
        results[name] = {
            key: {"median_ms": 1e3 * float(np.median(t)), "compile_s": compile_s[key]}
            for key, t in times.items()
        }

    model = jaxmlp.MLP((2, 8, 1), activation="tanh")
    params, x = model.init(jax.random.key(2)), jax.random.normal(jax.random.key(3), (4, 2))
    alone = {
        "apply_manual": jax.jit(functools.partial(jaxmlp.apply_manual, model)),
        "model.apply": jax.jit(model.apply),
    }
    times = {key: [] for key in alone}
    for fn in alone.values():
        jax.block_until_ready(fn(params, x))
    for _ in range(rounds):
        for key, fn in alone.items():
            start = time.perf_counter()
            outs = [fn(params, x) for _ in range(10 * calls)]
            jax.block_until_ready(outs)
            times[key].append((time.perf_counter() - start) / (10 * calls))
    results["call alone"] = {k: {"median_ms": 1e3 * float(np.median(t))} for k, t in times.items()}

    print(f"per-example input Jacobians, batch {args.batch}, float32, {jax.devices()[0]}")
    print(f"{'network':>14} {'jacobian':>22} {'median ms':>10} {'compile s':>10}")
    for name in NETWORKS:
        rows = results[name]
        for key, r in rows.items():
            print(f"{name:>14} {key:>22} {r['median_ms']:>10.3f} {r['compile_s']:>10.2f}")
        fwd, rev = (
            rows["jacfwd apply_manual"]["median_ms"],
            rows["jacrev apply_manual"]["median_ms"],
        )
        print(f"{name:>14} {'jacrev / jacfwd':>22} {rev / fwd:>10.2f}")
    for key, r in results["call alone"].items():
        print(f"{'call alone':>14} {key:>22} {r['median_ms']:>10.3f}")
    record = {
        "machine": platform.processor() or platform.machine(),
        "device": str(jax.devices()[0]),
        "batch": args.batch,
        "rounds": rounds,
        "calls": calls,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
