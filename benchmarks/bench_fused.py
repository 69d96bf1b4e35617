"""The fused Pallas kernels (issue 18) against XLA, Flax linen and PyTorch on neural-field MLPs.

Configs: inputs 32 -> width x 4 -> 3 (relu, mse), widths 64 and 128, batches 2^14 .. 2^21;
inference and a full training step (value and gradients + an SGD update, jitted or compiled);
implementations ``fused`` (jaxmlp.fused, block sizes from a short autotune), ``xla`` (jaxmlp's
manual backward as XLA compiles it), ``flax`` (linen + optax), ``torch`` (eager) and
``torch.compile``; dtypes bfloat16 / float16 (parameters, inputs and matmuls; float32
accumulation) and float32. Peaks are measured in the same run: a large matmul (FLOP/s) and a
large copy (bytes/s). Each record holds the median time per call, the achieved FLOP/s and the
bandwidth the ideal fused kernel needs (the input, the targets and the output read or written
once) as fractions of those peaks, so a figure says which bound it meets.

    python benchmarks/bench_fused.py --out fused_out/bench        # a GPU: a few minutes
    python benchmarks/bench_fused.py --quick --out /tmp/fused     # CPU smoke run (interpreted)

Writes ``records.jsonl`` (one JSON object per measurement, appended as they come, so a run cut
short keeps its figures), ``peaks.json``, ``autotune.json``, ``accuracy.json`` and
``summary.json`` (the issue's targets against the figures) under ``--out``. Peers that do not
import are skipped with a note. No measurement starts past ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmlp
from jaxmlp import fused

IMPLS = ("fused", "xla", "flax", "torch", "torch.compile")
LR = 1e-3
T0 = time.perf_counter()


def sizes_for(width: int, quick: bool) -> tuple[int, ...]:
    return (32, width, width, width, width, 3) if not quick else (32, width, width, 3)


def flops(sizes: tuple[int, ...], batch: int, mode: str) -> int:
    """2 B sum(fan_in fan_out) forward; a training step adds dz w^T and a^T dz (3x)."""
    fwd = 2 * batch * sum(a * b for a, b in itertools.pairwise(sizes))
    return fwd if mode == "infer" else 3 * fwd


def ideal_bytes(sizes: tuple[int, ...], batch: int, mode: str, itemsize: int) -> int:
    """What a fully fused kernel must move: x in, the output (inference) or targets in."""
    return batch * (sizes[0] + sizes[-1]) * itemsize


def timeit(fn, *, min_seconds: float) -> dict[str, float]:
    """Compile (first call) apart; then the median of 5 rounds of calls lasting ~min_seconds/5."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    t = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t, 1e-6)
    reps = max(1, int(min_seconds / 5 / once))
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        rounds.append((time.perf_counter() - t) / reps)
    return {"first_call_s": first, "seconds": statistics.median(rounds), "reps": reps}


def _block(tree):
    return jax.block_until_ready(tree)


# --- the jax implementations --------------------------------------------------------------------


def jax_runner(impl: str, model: jaxmlp.MLP, mode: str, x, y, config=None):
    params = model.init(jax.random.key(0))
    if impl == "fused":
        apply = lambda p, x: fused.apply(model, p, x, config=config)  # noqa: E731
        vg = fused.value_and_grad(model, "mse", config=config)
    else:
        apply = model.apply
        vg = jaxmlp.value_and_grad(model, "mse", method="manual")
    return _runner(mode, apply, vg, params, x, y)


def _runner(mode: str, apply, vg, params, x, y):
    """One inference (``mode="infer"``) or SGD training step per call, jitted and waited for."""
    if mode == "infer":
        f = jax.jit(apply)
        return lambda: _block(f(params, x))
    opt = optax.sgd(LR)

    @jax.jit
    def step(p, s, x, y):
        value, grads = vg(p, x, y)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    state = [params, opt.init(params)]

    def run():
        p, s, _ = _block(step(state[0], state[1], x, y))
        state[0], state[1] = p, s

    return run


def flax_runner(model: jaxmlp.MLP, mode: str, x, y):
    import flax.linen as nn

    dtype = jnp.dtype(model.param_dtype)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, h):
            for n in model.sizes[1:-1]:
                h = nn.relu(nn.Dense(n, dtype=dtype, param_dtype=dtype)(h))
            return nn.Dense(model.sizes[-1], dtype=dtype, param_dtype=dtype)(h)

    net = Net()
    params = net.init(jax.random.key(0), x[:2])
    vg = jax.value_and_grad(lambda p, x, y: jnp.mean((net.apply(p, x) - y) ** 2))
    return _runner(mode, net.apply, vg, params, x, y)


def torch_runner(model: jaxmlp.MLP, mode: str, x, y, compiled: bool):
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, model.param_dtype)
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(model.sizes[:-1], model.sizes[1:], strict=True)):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.ReLU()] if i < model.num_layers - 1 else [])
    net = torch.nn.Sequential(*layers).to(dev, dtype)
    xt = torch.from_numpy(np.array(x, np.float32)).to(dev, dtype)
    yt = torch.from_numpy(np.array(y, np.float32)).to(dev, dtype)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def infer():
        with torch.no_grad():
            return net(xt)

    def train():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((net(xt) - yt) ** 2)
        loss.backward()
        opt.step()
        return loss

    fn = infer if mode == "infer" else train
    if compiled:
        fn = torch.compile(fn)

    def run():
        fn()
        sync()

    return run


def runner(impl, model, mode, x, y, config):
    if impl in ("fused", "xla"):
        return jax_runner(impl, model, mode, x, y, config)
    if impl == "flax":
        return flax_runner(model, mode, x, y)
    return torch_runner(model, mode, x, y, compiled=impl == "torch.compile")


# --- peaks, autotune, accuracy ------------------------------------------------------------------


def measure_peaks(dtypes, quick: bool, min_seconds: float) -> dict[str, Any]:
    n = 512 if quick else 8192
    peaks: dict[str, Any] = {"matmul_n": n}
    for dtype in dtypes:
        a = jnp.ones((n, n), dtype)
        mm = jax.jit(lambda a: a @ a)
        t = timeit(lambda: _block(mm(a)), min_seconds=min_seconds)["seconds"]  # noqa: B023
        peaks[f"matmul_flops_{dtype}"] = 2 * n**3 / t
    big = jnp.ones(((1 << 20) if quick else (1 << 28),), jnp.float32)
    copy = jax.jit(lambda a: a * 1.0001)
    t = timeit(lambda: _block(copy(big)), min_seconds=min_seconds)["seconds"]
    peaks["copy_bytes_per_s"] = 2 * big.nbytes / t
    return peaks


def autotune(width: int, dtype: str, batch: int, quick: bool, args) -> dict[str, Any]:
    """The training step's fastest block sizes at one width, dtype and batch."""
    model = jaxmlp.MLP(sizes_for(width, quick), "relu", param_dtype=dtype)
    x, y = data(model, batch)
    # (tile_rows, tiles per program, warps, where the weight gradients accumulate); with one
    # tile per program there is nothing to accumulate across tiles
    grid = [(16, 1, 4, "registers"), (16, 2, 4, "memory")] if quick else [
        *((t, 1, w, "registers") for t in (64, 128) for w in (4, 8)),
        *((t, 8, w, a) for t in (64, 128) for w in (4, 8) for a in ("registers", "memory")),
        (128, 32, 8, "memory"),
    ]  # fmt: skip
    trials = []
    for tile, tiles, warps, acc in grid:
        if past_deadline(args):
            break
        config = fused.FusedConfig(tile_rows=tile, tiles=tiles, num_warps=warps, accumulate=acc)
        rec: dict[str, Any] = dataclasses.asdict(config)
        try:
            rec.update(timeit(jax_runner("fused", model, "train", x, y, config), min_seconds=0.2))
        except Exception as err:  # a block size the compiler refuses (registers, shared memory)
            rec["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        trials.append(rec)
        print("autotune", width, dtype, rec, flush=True)
    ok = [t for t in trials if "seconds" in t]
    best = min(ok, key=lambda t: t["seconds"]) if ok else None
    return {"width": width, "dtype": dtype, "batch": batch, "trials": trials, "best": best}


def accuracy(width: int, dtype: str, quick: bool) -> dict[str, Any]:
    """Fused gradients against jaxmlp's float32 XLA gradients at matmul precision highest."""
    batch = 256 if quick else 1 << 14
    model = jaxmlp.MLP(sizes_for(width, quick), "relu", param_dtype=dtype)
    x, y = data(model, batch)
    params = model.init(jax.random.key(0))
    # float32 kernels at "highest" (IEEE float32 in Triton, not TF32), as the target says
    with jax.default_matmul_precision("highest"):
        _, g = jax.jit(fused.value_and_grad(model, "mse"))(params, x, y)
    ref = jaxmlp.MLP(model.sizes, "relu")
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    with jax.default_matmul_precision("highest"):
        _, g32 = jax.jit(jaxmlp.value_and_grad(ref, "mse"))(
            p32, x.astype(jnp.float32), y.astype(jnp.float32)
        )
    leaves, want = jax.tree.leaves(g), jax.tree.leaves(g32)
    scale = max(float(jnp.max(jnp.abs(w))) for w in want)
    err = max(
        float(jnp.max(jnp.abs(a.astype(jnp.float32) - w)))
        for a, w in zip(leaves, want, strict=True)
    )
    target = 1e-5 if dtype == "float32" else 1e-2
    return {"width": width, "dtype": dtype, "rel_err": err / scale, "target": target}


def data(model: jaxmlp.MLP, batch: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, model.sizes[0])), model.param_dtype)
    y = jnp.asarray(rng.normal(size=(batch, model.sizes[-1])), model.param_dtype)
    return x, y


def past_deadline(args) -> bool:
    return time.perf_counter() - T0 > args.deadline


# --- the sweep and the summary ------------------------------------------------------------------


def summarise(records, peaks, accuracies) -> dict[str, Any]:
    def t(impl, width, dtype, batch, mode):
        for r in records:
            if (r["impl"], r["width"], r["dtype"], r["batch"], r["mode"]) == (
                impl, width, dtype, batch, mode
            ) and "seconds" in r:  # fmt: skip
                return r["seconds"]
        return None

    targets = []
    for width, mode, need, goal in ((64, "train", 2.0, 5.0), (64, "infer", 3.0, None),
                                    (128, "train", 1.5, None)):  # fmt: skip
        for dtype in ("bfloat16", "float16"):
            a, b = t("fused", width, dtype, 1 << 18, mode), t("xla", width, dtype, 1 << 18, mode)
            speedup = None if not (a and b) else b / a
            targets.append({
                "width": width, "mode": mode, "dtype": dtype, "batch": 1 << 18,
                "speedup_vs_xla": speedup, "target": need, "goal": goal,
                "met": None if speedup is None else speedup >= need,
            })  # fmt: skip
    return {"peaks": peaks, "targets": targets, "accuracy": accuracies}


def measure(impl, width, dtype, batch, mode, quick, configs, peaks, args) -> dict[str, Any]:
    """One record: the median time per call and what it achieves against the peaks."""
    model = jaxmlp.MLP(sizes_for(width, quick), "relu", param_dtype=dtype)
    x, y = data(model, batch)
    rec: dict[str, Any] = dict(
        impl=impl, width=width, dtype=dtype, batch=batch, mode=mode, sizes=list(model.sizes)
    )
    config = configs.get(width)
    try:
        try:
            fn = runner(impl, model, mode, x, y, config)
            rec.update(timeit(fn, min_seconds=args.min_seconds))
        except Exception as err:
            if impl != "fused" or config is None:
                raise
            # the tuned blocks may not fit another dtype (registers, shared memory)
            rec["tuned_config_error"] = f"{type(err).__name__}: {str(err)[:300]}"
            config = None
            rec.update(timeit(runner(impl, model, mode, x, y, None), min_seconds=args.min_seconds))
        if impl == "fused":
            rec["config"] = dataclasses.asdict(config or fused.FusedConfig())
        s = rec["seconds"]
        rec["flops_per_s"] = flops(model.sizes, batch, mode) / s
        itemsize = jnp.dtype(dtype).itemsize
        rec["ideal_bytes_per_s"] = ideal_bytes(model.sizes, batch, mode, itemsize) / s
        rec["frac_peak_flops"] = rec["flops_per_s"] / peaks[f"matmul_flops_{dtype}"]
        rec["frac_peak_copy"] = rec["ideal_bytes_per_s"] / peaks["copy_bytes_per_s"]
    except ImportError as err:
        rec["skipped"] = f"not importable: {err}"
    except Exception as err:
        rec["error"] = f"{type(err).__name__}: {str(err)[:400]}"
    t = rec.get("seconds")
    shown = f"{t * 1e3:9.3f} ms" if t else rec.get("skipped", rec.get("error", ""))[:80]
    print(f"{impl:14s} w{width:<4d} {dtype:9s} 2^{int(math.log2(batch)):<3d} {mode:6s} {shown}",
          flush=True)  # fmt: skip
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmarks/bench_fused.py", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--out", default="fused_out/bench")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny sizes, interpreted")
    p.add_argument("--widths", default=None, help="comma list (default 64,128; quick: 16)")
    p.add_argument("--dtypes", default=None, help="default bfloat16,float32; quick: float32")
    p.add_argument("--batches", default=None, help="log2 batch sizes (default 14,16,18,20,21)")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--modes", default="train,infer")
    p.add_argument(
        "--compile-batches",
        default="18",
        help="log2 batches for torch.compile (first dtype only: it compiles slowly)",
    )
    p.add_argument("--min-seconds", type=float, default=0.3, help="timing per measurement")
    p.add_argument("--deadline", type=float, default=420.0, help="no measurement starts later")
    p.add_argument("--no-autotune", action="store_true")
    args = p.parse_args(argv)
    q = args.quick
    widths = [int(w) for w in (args.widths or ("16" if q else "64,128")).split(",")]
    dtypes = (args.dtypes or ("float32" if q else "bfloat16,float32")).split(",")
    batches = [1 << int(b) for b in (args.batches or ("8" if q else "14,16,18,20,21")).split(",")]
    compile_batches = {1 << int(b) for b in args.compile_batches.split(",")}
    impls = args.impls.split(",")
    if q:
        impls = [i for i in impls if i != "torch.compile"]
        args.min_seconds = min(args.min_seconds, 0.05)
    modes = args.modes.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "quick": q,
           "argv": sys.argv[1:] if argv is None else list(argv)}  # fmt: skip
    print(json.dumps(env), flush=True)
    (out / "environment.json").write_text(json.dumps(env, indent=1))

    peaks = measure_peaks(dtypes, q, args.min_seconds)
    (out / "peaks.json").write_text(json.dumps(peaks, indent=1))
    print("peaks", peaks, flush=True)
    configs: dict[int, Any] = {}
    tuned = []
    for width in widths:
        if args.no_autotune:
            break
        half = "float32" if q else "bfloat16"
        res = autotune(width, half, 256 if q else 1 << 18, q, args)
        tuned.append(res)
        if res["best"]:
            b = res["best"]
            keys = ("tile_rows", "tiles", "num_warps", "num_stages", "accumulate")
            configs[width] = fused.FusedConfig(**{k: b[k] for k in keys})
    (out / "autotune.json").write_text(json.dumps(tuned, indent=1))
    accuracies = []
    for width in widths:
        for dtype in dtypes:
            if not past_deadline(args):
                accuracies.append(accuracy(width, dtype, q))
                print("accuracy", accuracies[-1], flush=True)
    (out / "accuracy.json").write_text(json.dumps(accuracies, indent=1))

    records: list[dict[str, Any]] = []
    # Three passes, so that a run cut short by the deadline has the kernels' own figures first:
    # fused and XLA everywhere, then the eager peers, then torch.compile (slow to compile).
    passes = [[i for i in impls if i in ("fused", "xla")],
              [i for i in impls if i in ("flax", "torch")],
              [i for i in impls if i == "torch.compile"]]  # fmt: skip
    with open(out / "records.jsonl", "a") as sink:
        for group in passes:
            for width in widths:
                for dtype in dtypes:
                    for batch in batches:
                        for mode in modes:
                            for impl in group:
                                if impl == "torch.compile" and not (
                                    batch in compile_batches and dtype == dtypes[0]
                                ):
                                    continue
                                if past_deadline(args):
                                    continue
                                rec = measure(
                                    impl, width, dtype, batch, mode, q, configs, peaks, args
                                )
                                records.append(rec)
                                sink.write(json.dumps(rec) + "\n")
                                sink.flush()
    summary = summarise(records, peaks, accuracies)
    summary["elapsed_s"] = time.perf_counter() - T0
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["targets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
