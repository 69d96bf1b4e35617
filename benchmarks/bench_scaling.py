"""Data-parallel scaling: fit's steps/s on 1, 2, 4, 8 devices (as many as exist).

Each run trains the same model with the same global batch on a mesh over the first k devices
(``jaxmlp.data_parallel_mesh(jax.devices()[:k])``); the median over repeats of a warm fit is
reported with the speed-up over one device. Meaningful only on real accelerators: virtual CPU
devices (``--xla_force_host_platform_device_count``) share the same cores.

    python benchmarks/bench_scaling.py --config M --epochs 3 --repeats 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import numpy as np
import optax

import jaxmlp

CONFIGS = {
    "S": ((20, 64, 64, 1), 128, "mse"),
    "M": ((784, 512, 512, 10), 256, "softmax_cross_entropy"),
    "L": ((1024, 2048, 2048, 2048, 10), 1024, "softmax_cross_entropy"),
}


def run(config: str, epochs: int, repeats: int, rows_per_batch_count: int) -> list[dict]:
    sizes, batch, loss = CONFIGS[config]
    model = jaxmlp.MLP(sizes)
    rng = np.random.default_rng(0)
    n = batch * rows_per_batch_count
    x = rng.standard_normal((n, sizes[0]), np.float32)
    y = (
        rng.integers(0, sizes[-1], n)
        if loss != "mse"
        else rng.standard_normal((n, sizes[-1])).astype(np.float32)
    )
    params = model.init(jax.random.key(0))
    opt = optax.sgd(0.01)
    records, base = [], None
    for k in (1, 2, 4, 8):
        if k > jax.device_count() or batch % k:
            break
        mesh = jaxmlp.data_parallel_mesh(jax.devices()[:k])
        kwargs = dict(
            loss=loss, optimizer=opt, batch_size=batch, epochs=epochs, progress=False, mesh=mesh
        )
        jaxmlp.fit(model, params, x, y, key=jax.random.key(1), **kwargs)  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = jaxmlp.fit(model, params, x, y, key=jax.random.key(1), **kwargs)
            jax.block_until_ready(result.params)
            times.append(time.perf_counter() - start)
        steps_per_s = epochs * rows_per_batch_count / statistics.median(times)
        base = base or steps_per_s
        records.append({
            "config": config, "devices": k, "device_kind": jax.devices()[0].device_kind,
            "platform": jax.devices()[0].platform, "steps_per_s": steps_per_s, "speedup": steps_per_s / base,
            "median_s": statistics.median(times), "jax": jax.__version__, "command": " ".join(sys.argv),
        })  # fmt: skip
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=CONFIGS, default="M")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batches", type=int, default=16, help="minibatches per epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the records here")
    a = p.parse_args()
    records = run(a.config, a.epochs, a.repeats, a.batches)
    print(
        f"| config | devices ({records[0]['device_kind']}) | steps/s | speed-up |\n|---|---|---|---|"
    )
    for r in records:
        print(f"| {r['config']} | {r['devices']} | {r['steps_per_s']:.1f} | {r['speedup']:.2f}x |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(records, f, indent=2)


if __name__ == "__main__":
    main()
