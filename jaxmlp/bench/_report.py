"""The benchmark report: Markdown tables from the suites' records, and the roofline column.

One table per suite, its columns declared as ``"header | record key | format | scale"`` lines;
peers that were skipped or failed are listed under the tables with the reason.
"""

from __future__ import annotations

from typing import Any


def _column(line: str) -> tuple[str, str, str, float]:
    """``header|key[|format[|scale]]`` as ``(header, key, format, scale)``."""
    header, key, *rest = line.strip().split("|")
    return header, key, rest[0] if rest else "", float(rest[1]) if len(rest) > 1 else 1.0


def _f(value: Any, spec: str = "", scale: float = 1.0) -> str:
    if value is None:
        return "–"
    return format(value * scale, spec) if spec else str(value)


# One Markdown table per suite: "header | record key | format | scale" per column.
_COLUMNS = {
    "step": """config|config
        act|activation
        impl|impl
        layers|layers
        method|method
        dtype|dtype
        compile s|compile_s|.2f
        median ms|median_s|.3f|1e3
        min ms|min_s|.3f|1e3
        max ms|max_s|.3f|1e3
        steps/s|steps_per_s|.1f
        GFLOP/s|flops_per_s|.1f|1e-9
        % roofline|pct_roofline|.1f
        % roofline (min)|pct_roofline_best|.1f
        temp MiB|temp_bytes|.2f|9.5367431640625e-07
        step MiB|step_bytes|.2f|9.5367431640625e-07
        process peak MiB|peak_bytes|.1f|9.5367431640625e-07
        manual/autodiff time|manual_over_autodiff|.3f
        manual/autodiff CPU time|manual_over_autodiff_cpu|.3f
        manual/autodiff temp|temp_manual_over_autodiff|.3f
        manual/autodiff step mem|step_bytes_manual_over_autodiff|.3f
        time ÷ jaxmlp|time_over_jaxmlp|.2f""",
    "train": """config|config
        impl|impl
        method|method
        dtype|dtype
        steps|steps
        warm-up s|compile_s|.2f
        median s|median_s|.4f
        min s|min_s|.4f
        max s|max_s|.4f
        steps/s|steps_per_s|.0f
        time ÷ fit|time_over_fit|.2f""",
    "ensemble": """K|members
        impl|impl
        dtype|dtype
        warm-up s|compile_s|.2f
        median s|median_s|.3f
        model-steps/s|model_steps_per_s|.0f
        speedup vs sequential|speedup_over_sequential|.2f""",
    "roofline": """matmul|impl
        matmul precision|impl_matmul_precision
        median ms|median_s|.3f|1e3
        GFLOP/s|flops_per_s|.1f|1e-9""",
}
_COLUMNS = {"step": _COLUMNS["step"], "grad": _COLUMNS["step"], **_COLUMNS}
_TITLES = {
    "step": "Training step (forward, backward, SGD update; steady state, per step)",
    "grad": "value_and_grad alone (steady state, per call)",
    "train": "Whole training runs ({samples} samples, {epochs} epochs, batch {batch}, "
    "shuffled, SGD; time after a warm-up run)",
    "ensemble": "Ensembles vs sequential fits (config {config}, {samples} samples, "
    "{epochs} epochs per member)",
    "roofline": "Roofline (same run)",
}


def markdown(records: list[dict[str, Any]]) -> str:
    """The Markdown tables for a list of records (any mix of suites)."""
    out = []
    for suite, spec in _COLUMNS.items():
        rows = [r for r in records if r["suite"] == suite and r.get("status", "ok") == "ok"]
        if not rows:
            continue
        cols = [_column(line) for line in spec.splitlines()]
        lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = [_f(r.get(key), fmt, scale) for _, key, fmt, scale in cols]
            lines.append("| " + " | ".join(cells) + " |")
        out += [f"### {_TITLES[suite].format(**rows[0])}", "\n".join(lines)]
    missing = [r for r in records if r.get("status") in ("skipped", "failed")]
    if missing:
        out.append("### Peers not measured")
        out.append("\n".join(f"- {r['impl']} ({r['suite']}, {r.get('config', '-')}, {r['dtype']}): "
                             f"{r['status']}, {r['reason']}" for r in missing))  # fmt: skip
    return "\n\n".join(out) + "\n"


def add_roofline(records: list[dict[str, Any]], rooflines: list[dict[str, Any]]) -> None:
    """Fills ``pct_roofline``: reduced-precision runs against the matmul of their dtype (else
    bfloat16) when one was measured, everything else against the float32 matmul."""
    by_dtype = {r["dtype"]: r for r in rooflines}
    for rec in records:
        if rec.get("flops_per_s") is None:
            continue
        roof = by_dtype["float32"]
        if rec["dtype"] != "float32":
            roof = by_dtype.get(rec["dtype"]) or by_dtype.get("bfloat16") or roof
        rec["roofline"], rec["roofline_flops_per_s"] = roof["impl"], roof["flops_per_s"]
        rec["pct_roofline"] = 100.0 * rec["flops_per_s"] / roof["flops_per_s"]
        # Best (min) times against each other: robust when other processes share the cores.
        rec["pct_roofline_best"] = (
            100.0 * roof["min_s"] / rec["min_s"] * rec["flops_per_step"] / (2 * roof["n"] ** 3)
        )
