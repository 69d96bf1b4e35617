"""The benchmark measurements: interleaved timing, the matmul roofline and the suites.

Each suite builds its implementations (``_peers``), compiles and warms them up, times them in
interleaved rounds (:func:`time_chunks`) and returns one JSON-ready record per implementation,
with same-round (pairwise) ratios (the step suites in wall and in process CPU time);
:mod:`jaxmlp.bench` decides what runs and prints it.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.bench import _peers
from jaxmlp.bench._peers import Impl, Problem, Unavailable

if TYPE_CHECKING:
    from jaxmlp.bench import Config, Settings


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def _peak_bytes() -> int | None:
    """The device's high-water mark of allocated bytes since the process started (GPUs; None on
    CPUs). JAX cannot reset it, so it is the peak over everything measured so far in the run,
    not one implementation's: the column grows with the largest config measured."""
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def time_chunks(
    fns: dict[str, Callable[[], Any]], repeats: int, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Times each ``fn`` ``repeats`` times, interleaved, alternating the order every round.

    With ``cpu`` (a dict), ``cpu[name]`` also gets each chunk's process CPU time (every thread
    of this process: the host's dispatch and XLA's CPU thread pool): on a loaded CPU the wall
    time includes waiting for the cores, the CPU time much less so."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    if cpu is not None:
        cpu.update({k: [] for k in fns})
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            c = time.process_time()
            t = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - t)
            if cpu is not None:
                cpu[name].append(time.process_time() - c)
    return out


def _time_matmul(run: Callable[[], Any], sync: Callable[[Any], Any], s: Settings) -> dict:
    """Times ``run()`` (one matmul) in chunks of about ``s.target_s``; ``sync(out)`` waits for it."""
    sync(run())
    t = time.perf_counter()
    sync(run())
    inner = max(1, math.ceil(s.target_s / (time.perf_counter() - t)))

    def chunk():
        c = run()
        for _ in range(inner - 1):
            c = run()
        sync(c)

    st = _stats([t / inner for t in time_chunks({"dot": chunk}, s.repeats)["dot"]])
    return {**st, "repeats": s.repeats, "inner": inner}


def measure_roofline(n: int, dtype: str, s: Settings) -> dict[str, Any]:
    """``jnp.dot`` of two ``(n, n)`` matrices: the FLOP/s the device reaches on a plain matmul.

    A reduced-precision ``dtype`` accumulates and returns float32, as the mixed-precision
    policy's matmuls do (on CPUs a bfloat16-output dot can take a much slower kernel).
    """
    ka, kb = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(ka, (n, n), dtype), jax.random.normal(kb, (n, n), dtype)
    acc = None if dtype == "float32" else jnp.float32
    compiled = jax.jit(functools.partial(jnp.dot, preferred_element_type=acc)).lower(a, b).compile()
    st = _time_matmul(lambda: compiled(a, b), jax.block_until_ready, s)
    name = f"jnp.dot {dtype} {n}x{n}" + ("" if acc is None else " (float32 accumulation)")
    rec = {
        "suite": "roofline",
        "impl": name,
        "library": "jax",
        "dtype": dtype,
        "n": n,
        "impl_matmul_precision": str(jax.default_matmul_precision.value or "default"),
    }
    return {**rec, **st, "flops_per_s": 2 * n**3 / st["median_s"]}


def measure_peer_roofline(n: int, dtype: str, s: Settings) -> dict[str, Any]:
    """PyTorch's matmul of the same size and dtype, timed the same way (a reference row: the
    ``% roofline`` columns stay against JAX's matmul); a skipped record when torch is missing."""
    rec = {"suite": "roofline", "library": "torch", "dtype": dtype, "n": n,
           "impl": f"torch.matmul {dtype} {n}x{n}"}  # fmt: skip
    try:
        run, sync, precision = _peers.torch_matmul(n, dtype)
        st = _time_matmul(run, lambda out: sync(), s)
    except Unavailable as err:
        return {**rec, "status": "skipped", "reason": str(err)}
    except Exception as err:  # reported, so that the run's other results are still written
        return {**rec, "status": "failed", "reason": f"{type(err).__name__}: {err}"[:300]}
    return {
        **rec,
        "impl_matmul_precision": precision,
        **st,
        "flops_per_s": 2 * n**3 / st["median_s"],
    }


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
            "version": impl.version, "impl_device": impl.device,
            "impl_matmul_precision": impl.matmul_precision, "param_dtype": "float32",
            "status": "ok",
            "compile_s": impl.compile_s, **st, "repeats": len(times),
            "steps_per_s": 1.0 / st["median_s"], "final_loss": impl.last_loss(),
            **extra}  # fmt: skip


def _build_peer(suite: str, cfg: Config, name: str, problem: Problem, s: Settings, data=None,
                **extra) -> Impl | dict[str, Any]:  # fmt: skip
    """The peer ``name``, or a record saying why it cannot run. With ``data`` the peer also
    loads it and compiles (warms up) its step."""
    try:
        impl = _peers.make_peer(name, problem)
        if data is not None:
            impl.load(*data)
            impl.prepare()
        return impl
    except Unavailable as err:
        status, reason = "skipped", str(err)
    except Exception as err:  # a peer that breaks here (torch.compile, say) is reported
        status, reason = "failed", f"{type(err).__name__}: {err}"[:300]
    return {**_base(suite, cfg, name, s.dtype, **extra), "status": status, "reason": reason}


def bench_steps(
    cfg: Config,
    s: Settings,
    *,
    activation: str = "relu",
    grad: bool = False,
    layers: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The step (or, with ``grad``, value-and-grad) suite for one config; see the module doc.

    ``layers``: the pieces beyond the plain stack, ``Problem``'s ``norm``, ``dropout``,
    ``residual`` and ``l1`` (:func:`jaxmlp.bench.parse_layers`); the peers skip them."""
    suite = "grad" if grad else "step"
    problem = Problem(cfg.sizes, activation, cfg.loss, s.lr, s.dtype, **(layers or {}))
    x, y = _data(cfg, cfg.batch)
    ours = {m: _peers.JaxmlpStep(problem, m, grad=grad) for m in s.methods}
    for impl in ours.values():
        impl.load(x, y)
        impl.prepare()
    impls: dict[str, _peers.Impl] = dict(ours)
    records: list[dict[str, Any]] = []
    for name in () if grad else s.peers:
        built = _build_peer(suite, cfg, name, problem, s, (x, y), activation=activation,
                            layers=problem.layers)  # fmt: skip
        if isinstance(built, dict):
            records.append(built)
        else:
            impls[name] = built
    # Calibrate on the first method: chunks of >= target_s; cap the timed work at max_s.
    first = ours[s.methods[0]]
    t1 = min(time_chunks({"c": lambda: first.run(1)}, 3)["c"])
    inner = max(1, math.ceil(s.target_s / t1))
    repeats = max(3, min(s.repeats, int(s.max_s / (inner * t1))))
    fns = {k: (lambda impl=impl: impl.run(inner)) for k, impl in impls.items()}
    cpu: dict[str, list[float]] = {}
    times = {k: [t / inner for t in v] for k, v in time_chunks(fns, repeats, cpu).items()}
    extra = {"activation": activation, "layers": problem.layers, "flops_per_step": cfg.flops_per_step,
             "inner": inner}  # fmt: skip
    for k, impl in impls.items():
        rec = _record(suite, cfg, impl, s, times[k], **extra, temp_bytes=impl.temp_bytes,
                      step_bytes=impl.step_bytes, peak_bytes=_peak_bytes(),
                      cpu_median_s=statistics.median(cpu[k]) / inner)  # fmt: skip
        rec["flops_per_s"] = cfg.flops_per_step / rec["median_s"]
        # Same-round ratios: every implementation ran once per round, so noise hits alike.
        rec["time_over_jaxmlp"] = _pairwise(times[k], times[s.methods[0]])
        if k == "manual" and "autodiff" in ours:
            rec["manual_over_autodiff"] = _pairwise(times["manual"], times["autodiff"])
            # The same ratio in process CPU time: steadier than wall time on a loaded CPU.
            rec["manual_over_autodiff_cpu"] = _pairwise(cpu["manual"], cpu["autodiff"])
            ta, tb = impl.temp_bytes, ours["autodiff"].temp_bytes
            rec["temp_manual_over_autodiff"] = ta / tb if ta is not None and tb else None
            sa, sb = impl.step_bytes, ours["autodiff"].step_bytes
            rec["step_bytes_manual_over_autodiff"] = sa / sb if sa is not None and sb else None
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
        built = _build_peer("train", cfg, name, problem, s)
        if isinstance(built, dict):
            records.append(built)
        else:
            impls[name] = built
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
    from jaxmlp import fit, fit_ensemble
    from jaxmlp._core.mlp import MLP

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
        params = None
        for _ in range(k):
            k_init, k_fit = jax.random.split(jax.random.key(next(seeds)))
            params = fit(model, model.init(k_init), x, y, key=k_fit, epochs=epochs, **common).params
        jax.block_until_ready(params)

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
