"""Memory and speed of ``fit`` against the data's size (issue 21).

Each measurement runs in a fresh subprocess: MLP (100, 64, 64, 1), MSE, SGD, batch 1024, float32
data of 100 features made with NumPy before the fit. The figure is the peak resident memory of
the process during ``fit`` minus its resident memory just before (Linux: the peak, ``VmHWM``, is
reset through ``/proc/self/clear_refs`` right before the call), so the data's own host copy is
not counted but every copy ``fit`` makes is, and so are the compilation and the runtime's own
buffers. Rows per second come from a second, timed ``fit`` in the same process (compiled by the
first).

``--mode memory`` passes NumPy arrays; ``--mode stream`` passes a ``jaxmlp.ArraySource``
over the same arrays; ``--mode memmap`` writes the data to a ``.npy`` file first and streams it
from ``np.load(..., mmap_mode="r")`` (the file is deleted afterwards)::

    python benchmarks/bench_memory.py --rows 250000,1000000,4000000 --json memory.json
    python benchmarks/bench_memory.py --mode memmap --rows 32000000 --epochs 1 --dir /tmp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = 100
SIZES = (FEATURES, 64, 64, 1)


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _make(rows: int, path: Path | None):
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.normal(size=(FEATURES,)).astype(np.float32)
    if path is None:
        x = np.empty((rows, FEATURES), np.float32)
        y = np.empty((rows, 1), np.float32)
    else:
        x = np.lib.format.open_memmap(path / "x.npy", "w+", np.float32, (rows, FEATURES))
        y = np.lib.format.open_memmap(path / "y.npy", "w+", np.float32, (rows, 1))
    step = 1 << 18
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        x[lo:hi] = rng.normal(size=(hi - lo, FEATURES)).astype(np.float32)
        y[lo:hi, 0] = np.tanh(x[lo:hi] @ w / 10)
    if path is not None:
        x.flush()
        y.flush()
        del x, y
        x = np.load(path / "x.npy", mmap_mode="r")
        y = np.load(path / "y.npy", mmap_mode="r")
    return x, y


def child(args) -> dict:
    import jax
    import numpy as np

    import jaxmlp

    tmp = None
    if args.data:  # files an earlier run wrote (kept)
        x = np.load(Path(args.data) / "x.npy", mmap_mode="r")
        y = np.load(Path(args.data) / "y.npy", mmap_mode="r")
        args.rows = len(x)
    else:
        if args.mode == "memmap":
            tmp = Path(tempfile.mkdtemp(prefix="jaxmlp-bench-", dir=args.dir))
        x, y = _make(args.rows, tmp)
    if args.mode == "memmap":  # drop the written pages: the run reads the file afresh
        import gc

        gc.collect()
    model = jaxmlp.MLP(SIZES, activation="relu")
    params = model.init(jax.random.key(0))
    data = x if args.mode == "memory" else jaxmlp.ArraySource(x, y)
    target = y if args.mode == "memory" else None
    kwargs = dict(loss="mse", batch_size=args.batch, epochs=args.epochs, progress=False,
                  shuffle=not args.no_shuffle)  # fmt: skip
    if args.chunk_steps:
        kwargs["chunk_steps"] = args.chunk_steps
    jax.block_until_ready(params)
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    first = jaxmlp.fit(model, params, data, target, key=jax.random.key(1), **kwargs)
    jax.block_until_ready(first.params)
    first_s = time.perf_counter() - t0
    peak = _status("VmHWM")
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    out = {
        "mode": args.mode,
        "rows": args.rows,
        "data_mib": (x.nbytes + y.nbytes) / 2**20,
        "rss_before_mib": before / 2**20,
        "peak_extra_mib": (peak - before) / 2**20,
        "ratio": (peak - before) / (x.nbytes + y.nbytes),
        "first_fit_s": first_s,
        "first_fit_rows_per_s": args.rows * args.epochs / first_s,
        "shuffle": not args.no_shuffle,
        # On an accelerator, the device's own peak (since the process started: the model's
        # initialisation is a few KiB), beside the host's.
        "device": str(device.device_kind),
        "peak_device_mib": None if not stats else stats.get("peak_bytes_in_use", 0) / 2**20,
        "loss": float(first.history["loss"][-1]),
    }
    if args.timed:
        t0, c0 = time.perf_counter(), time.process_time()
        again = jaxmlp.fit(model, params, data, target, key=jax.random.key(1), **kwargs)
        jax.block_until_ready(again.params)
        run_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        out["rows_per_s"] = args.rows * args.epochs / run_s
        out["timed_fit_s"] = run_s
        # CPU seconds of every thread: on a shared machine a steadier cost than the wall clock.
        out["cpu_s"] = cpu_s
        out["rows_per_cpu_s"] = args.rows * args.epochs / cpu_s
        out["same_params"] = all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(first.params), jax.tree.leaves(again.params), strict=True
            )
        )
    if tmp is not None:
        del x, y, data
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", default="250000,1000000,4000000")
    p.add_argument("--mode", default="memory", help="memory, stream or memmap (comma-separated)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration")
    p.add_argument("--timed", action="store_true", help="also time a second fit (rows/s)")
    p.add_argument("--chunk-steps", type=int, default=None)
    p.add_argument("--no-shuffle", action="store_true", help="visit the rows in stored order")
    p.add_argument("--dir", default=None, help="where --mode memmap writes its file")
    p.add_argument("--data", default=None, help="--mode memmap: read x.npy, y.npy from here")
    p.add_argument("--json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.rows = int(args.rows)
        print(json.dumps(child(args)))
        return 0
    results = []
    for _ in range(args.repeats):
        for rows in [int(r) for r in args.rows.split(",")]:
            for mode in args.mode.split(","):
                cmd = [sys.executable, __file__, "--child", "--rows", str(rows), "--mode", mode,
                       "--batch", str(args.batch), "--epochs", str(args.epochs)]  # fmt: skip
                cmd += ["--timed"] if args.timed else []
                cmd += ["--no-shuffle"] if args.no_shuffle else []
                cmd += ["--chunk-steps", str(args.chunk_steps)] if args.chunk_steps else []
                cmd += ["--dir", args.dir] if args.dir else []
                cmd += ["--data", args.data] if args.data else []
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(r)
                speed = ""
                if "rows_per_s" in r:
                    speed = (
                        f"  {r['rows_per_s']:,.0f} rows/s  {r['rows_per_cpu_s']:,.0f} rows/cpu-s"
                    )
                if r.get("peak_device_mib") is not None:
                    speed += f"  device peak {r['peak_device_mib']:,.0f} MiB"
                print(f"{mode:7s} {rows:>11,} rows  data {r['data_mib']:8.0f} MiB  extra "
                      f"{r['peak_extra_mib']:8.0f} MiB  ratio {r['ratio']:.2f}x{speed}", flush=True)  # fmt: skip
    if args.json:
        meta = {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
