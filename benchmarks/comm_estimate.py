"""When does data parallelism pay? A back-of-the-envelope model for the gradient all-reduce.

Per step, each of N devices computes 6 * b * F FLOPs (b rows per device, F = sum of fan_in * fan_out)
and then all-reduces the gradient: 4 * P bytes in float32 (P parameters). A ring all-reduce moves
2 (N - 1) / N of those bytes over each device's link, plus a fixed latency. Communication starts to
dominate when it takes longer than the compute it could hide behind, i.e. below the per-device batch

    b* = (2 (N - 1) / N * 4 P / bandwidth + latency) * flops_per_s / (6 F).

The assumptions are printed with the table; change them with the flags.

    python benchmarks/comm_estimate.py --devices 8 --flops 200e12 --latency-us 20
"""

from __future__ import annotations

import argparse
import itertools

CONFIGS = {
    "S": ((20, 64, 64, 1), 128),
    "M": ((784, 512, 512, 10), 256),
    "L": ((1024, 2048, 2048, 2048, 10), 1024),
}
LINKS = {"NVLink 4 (H100 SXM)": 450e9, "PCIe 5 x16": 50e9, "InfiniBand NDR 400 Gb/s": 50e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--flops", type=float, default=200e12, help="achieved FLOP/s per device")
    p.add_argument("--latency-us", type=float, default=20.0, help="fixed cost of one all-reduce")
    a = p.parse_args()
    n, lat = a.devices, a.latency_us * 1e-6
    print(
        f"N = {n} devices, {a.flops / 1e12:g} TFLOP/s achieved per device, all-reduce latency {a.latency_us:g} us\n"
    )
    print(
        "| config | params P | gradient bytes | compute per step at the config's batch (us) | link | all-reduce (us) | b* rows/device |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (sizes, batch) in CONFIGS.items():
        pairs = list(itertools.pairwise(sizes))
        params = sum((i + 1) * o for i, o in pairs)
        flops_per_row = 6 * sum(i * o for i, o in pairs)
        compute = batch * flops_per_row / a.flops
        for link, bw in LINKS.items():
            comm = 2 * (n - 1) / n * 4 * params / bw + lat
            print(f"| {name} | {params:,} | {4 * params / 1e6:.2f} MB | {compute * 1e6:.1f} | {link} ({bw / 1e9:g} GB/s) "
                  f"| {comm * 1e6:.0f} | {comm * a.flops / flops_per_row:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
