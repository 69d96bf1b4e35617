"""Would another mixed-precision layout make the bfloat16 training step faster? A diagnostic for the
GPU target "L in bfloat16 >= 50% of the bfloat16 matmul", not part of the suite.

    python benchmarks/probe_mixed.py [--config L] [--steps 100] [--rounds 7] [--profile]

Times, in interleaved rounds on one device, the shipped bfloat16 step (float32 parameters and
activations, matmul inputs cast to bfloat16, float32 accumulation) against variants written here
for a ReLU network with softmax cross-entropy (the M and L configs), each jitted with its state
donated and plain SGD:

- ``bf16 activations``: every layer's output in bfloat16 (``preferred_element_type=bfloat16``),
  the logits and the loss in float32, weight and bias gradients accumulated in float32;
- ``... da in float32``: the same, but the backward input-gradient products return float32;
- ``... db as a matmul``: the bias gradient as ``ones @ dz`` instead of a reduction;
- ``... autodiff``: ``jax.value_and_grad`` of the same bfloat16-activation forward;
- ``bf16 weight copies in the state``: the state also carries bfloat16 copies of the weights,
  cast once when the update writes them, so the step reads them instead of casting.

Prints a Markdown table (median and min per step, % of the same-run bfloat16 8192 matmul, time
relative to the first variant) and, with ``--profile`` on an accelerator, per-kernel device time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
from jax import lax

from jaxmlp import TrainState, make_train_step
from jaxmlp._core.mlp import MLP, Dense
from jaxmlp.bench import CONFIGS, _peers
from jaxmlp.bench._suites import _data

BF, F32 = jnp.bfloat16, jnp.float32
LR = 0.01


def _dot(a, b, contract, out):
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                           preferred_element_type=out)  # fmt: skip


def _forward(params, x, w16=None):
    """ReLU layers with bfloat16 outputs; the last layer's logits in float32."""
    a, zs, acts = x.astype(BF), [], [x.astype(BF)]
    for l, p in enumerate(params):
        w = p.w.astype(BF) if w16 is None else w16[l]
        last = l == len(params) - 1
        z = _dot(a, w, (1, 0), F32 if last else BF) + (p.b if last else p.b.astype(BF))
        a = z if last else jnp.maximum(z, 0)
        zs.append(z)
        acts.append(a)
    return zs, acts


def _cross_entropy(logits, y):
    logp = jax.nn.log_softmax(logits)
    value = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    onehot = jax.nn.one_hot(y, logits.shape[1], dtype=F32)
    return value, (jnp.exp(logp) - onehot) / logits.shape[0]


def _manual(params, x, y, w16=None, db_matmul=False, da_f32=False):
    zs, acts = _forward(params, x, w16)
    value, dz = _cross_entropy(zs[-1], y)
    grads = [None] * len(params)
    for l in reversed(range(len(params))):
        dzb = dz.astype(BF)
        dw = _dot(acts[l], dzb, (0, 0), F32)
        ones = jnp.ones((dz.shape[0],), BF)
        db = _dot(ones, dzb, (0, 0), F32) if db_matmul else jnp.sum(dz, axis=0, dtype=F32)
        grads[l] = Dense(dw, db)
        if l == 0:
            break
        w = params[l].w.astype(BF) if w16 is None else w16[l]
        da = _dot(dzb, w, (1, 1), F32 if da_f32 else BF)
        dz = jnp.where(zs[l - 1] > 0, da, 0).astype(BF)
    return value, tuple(grads)


def _sgd(params, grads):
    return tuple(Dense(p.w - LR * g.w, p.b - LR * g.b) for p, g in zip(params, grads, strict=True))


def _variant(name, model, params, optimizer, loss):
    """``(jitted step, initial state)`` of one variant; the step donates its state."""
    copy = jax.tree.map(jnp.copy, params)
    if name.startswith("shipped"):
        method = name.split()[-1]
        step = make_train_step(model, loss, optimizer, method=method)
        return step, TrainState.create(params, optimizer)
    if name == "bf16 weight copies in the state":

        def step(state, x, y):
            p, w16 = state
            value, grads = _manual(p, x, y, w16=w16)
            new = _sgd(p, grads)
            return (new, tuple(q.w.astype(BF) for q in new)), value

        return jax.jit(step, donate_argnums=0), (copy, tuple(p.w.astype(BF) for p in params))
    if name == "bf16 activations, autodiff":

        def objective(p, x, y):
            return _cross_entropy(_forward(p, x)[0][-1], y)[0]

        def step(p, x, y):
            value, grads = jax.value_and_grad(objective)(p, x, y)
            return _sgd(p, grads), value

        return jax.jit(step, donate_argnums=0), copy
    options = {"db_matmul": "db as a matmul" in name, "da_f32": "da in float32" in name}

    def step(p, x, y):
        value, grads = _manual(p, x, y, **options)
        return _sgd(p, grads), value

    return jax.jit(step, donate_argnums=0), copy


VARIANTS = (
    "shipped manual",
    "shipped autodiff",
    "bf16 activations",
    "bf16 activations, da in float32",
    "bf16 activations, db as a matmul",
    "bf16 activations, autodiff",
    "bf16 weight copies in the state",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="L", choices=["M", "L"])
    ap.add_argument("--steps", type=int, default=100, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--profile", action="store_true", help="per-kernel device time (accelerators)")
    a = ap.parse_args()
    names = a.variants.split(",")
    if unknown := sorted(set(names) - set(VARIANTS)):
        ap.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    cfg = CONFIGS[a.config]
    x, y = (jnp.asarray(v) for v in _data(cfg, cfg.batch))
    model = MLP(cfg.sizes, "relu", compute_dtype="bfloat16")
    params = model.init(jax.random.key(0))
    optimizer = _peers.sgd(LR)
    runs = {}
    for name in names:
        step, state = _variant(name, model, params, optimizer, cfg.loss)
        t = time.perf_counter()
        state, value = step(state, x, y)
        jax.block_until_ready(value)
        print(
            f"{name}: compile + first step {time.perf_counter() - t:.2f} s, loss {float(value):.4f}"
        )
        runs[name] = [step, state]

    def run(name, n):
        step, state = runs[name]
        for _ in range(n):
            state, value = step(state, x, y)
        jax.block_until_ready(value)
        runs[name][1] = state
        return float(value)

    for name in names:
        run(name, min(a.steps, 20))
    times = {name: [] for name in names}
    for _ in range(a.rounds):
        for name in names:
            t = time.perf_counter()
            run(name, a.steps)
            times[name].append((time.perf_counter() - t) / a.steps)
    m = jnp.ones((a.matmul_size, a.matmul_size), BF)
    matmul = jax.jit(lambda p, q: jnp.dot(p, q, preferred_element_type=F32))
    matmul(m, m).block_until_ready()
    mt = []
    for _ in range(10):
        t = time.perf_counter()
        matmul(m, m).block_until_ready()
        mt.append(time.perf_counter() - t)
    roof = 2 * a.matmul_size**3 / statistics.median(mt)
    flops = 6 * cfg.batch * sum(i * o for i, o in zip(cfg.sizes[:-1], cfg.sizes[1:], strict=True))
    print(f"\n{a.config} bfloat16 step on {jax.devices()[0].device_kind}; bfloat16 "
          f"{a.matmul_size} matmul {statistics.median(mt) * 1e3:.3f} ms = {roof / 1e12:.1f} TFLOP/s\n")  # fmt: skip
    print(f"| variant | median us | min us | % of bf16 matmul | time ÷ {names[0]} |")
    print("|---|---|---|---|---|")
    base = statistics.median(times[names[0]])
    for name in names:
        med = statistics.median(times[name])
        print(f"| {name} | {med * 1e6:.1f} | {min(times[name]) * 1e6:.1f} | "
              f"{100 * flops / med / roof:.1f} | {med / base:.3f} |")  # fmt: skip
    print("\nloss after training:", {name: round(run(name, 1), 4) for name in names})
    if a.profile:
        from profile_step import summarize

        for name in names:
            with tempfile.TemporaryDirectory() as d:
                with jax.profiler.trace(d):
                    run(name, 20)
                summarize(d, 20, name, 14)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
