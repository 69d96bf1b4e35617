"""jaxmlp.sklearn vs scikit-learn's MLPs on larger synthetic data (issue 19).

Both estimators (classifier and regressor), hidden (256, 256), Adam, batch 200 (both libraries'
"auto"), float32 inputs (both then compute in float32), a fixed number of epochs (``tol=0``,
``n_iter_no_change=inf``: no early stop), 50 features. Data: X ~ N(0, 1); a random tanh teacher
network gives the regression target and, through its argmax over 10 outputs, the class. For each
row count the two libraries alternate, repeat by repeat (same machine conditions for both); the
jaxmlp time excludes compilation (one untimed warm-up fit of the same shapes first, reported
apart). Held-out 10% scores (accuracy, R^2) are recorded beside the times.

    python benchmarks/bench_sklearn_large.py
    python benchmarks/bench_sklearn_large.py --rows 10000,100000 --epochs 5,2 --repeats 3,2 \
        --json benchmarks/results/cpu-2026-12-05/sklearn_large.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FEATURES = 50
HIDDEN = (256, 256)


def make_data(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    w1 = rng.normal(size=(FEATURES, 32)) / np.sqrt(FEATURES)
    w2 = rng.normal(size=(32, 10)) / np.sqrt(32)
    out = np.tanh(X @ w1) @ w2
    return X, out.argmax(axis=1), out[:, 0].astype(np.float32)


def timed_fit(est, X, y) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    return time.perf_counter() - start


def run(rows: int, epochs: int, repeats: int) -> list[dict]:
    from sklearn import neural_network

    import jaxmlp.sklearn as ours

    X, labels, target = make_data(rows)
    cut = rows - rows // 10
    params = dict(hidden_layer_sizes=HIDDEN, max_iter=epochs, tol=0.0, n_iter_no_change=np.inf,
                  random_state=0)  # fmt: skip
    out = []
    for kind, y in (("classifier", labels), ("regressor", target)):
        name = "MLPClassifier" if kind == "classifier" else "MLPRegressor"
        warm = timed_fit(getattr(ours, name)(**params), X[:cut], y[:cut])
        times: dict[str, list[float]] = {"jaxmlp": [], "sklearn": []}
        scores = {}
        for _ in range(repeats):
            for lib, module in (("jaxmlp", ours), ("sklearn", neural_network)):
                est = getattr(module, name)(**params)
                times[lib].append(timed_fit(est, X[:cut], y[:cut]))
                scores[lib] = float(est.score(X[cut:], y[cut:]))
        med = {lib: statistics.median(t) for lib, t in times.items()}
        row = dict(estimator=name, rows=rows, epochs=epochs, repeats=repeats,
                   jaxmlp_s=times["jaxmlp"], sklearn_s=times["sklearn"],
                   jaxmlp_median_s=med["jaxmlp"], sklearn_median_s=med["sklearn"],
                   speedup=med["sklearn"] / med["jaxmlp"], jaxmlp_first_fit_s=warm,
                   jaxmlp_score=scores["jaxmlp"], sklearn_score=scores["sklearn"])  # fmt: skip
        print(
            f"{name:13s} rows={rows:>8d} epochs={epochs} jaxmlp {med['jaxmlp']:.2f}s "
            f"(first fit {warm:.2f}s) sklearn {med['sklearn']:.2f}s speedup "
            f"{row['speedup']:.2f}x scores {scores['jaxmlp']:.3f}/{scores['sklearn']:.3f}",
            flush=True,
        )
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_sklearn_large.py")
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--epochs", default="5,2,1", help="epochs per fit, one per row count")
    parser.add_argument("--repeats", default="3,2,1", help="timed fits per library and row count")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = [int(v) for v in args.rows.split(",")]
    epochs = [int(v) for v in args.epochs.split(",")]
    repeats = [int(v) for v in args.repeats.split(",")]
    if not len(rows) == len(epochs) == len(repeats):
        parser.error("--rows, --epochs and --repeats need one value per row count")
    results = []
    for r, e, k in zip(rows, epochs, repeats, strict=True):
        results.extend(run(r, e, k))
    if args.json is not None:
        import jax
        import sklearn

        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                    load_average_1m=os.getloadavg()[0], jax=jax.__version__,
                    sklearn=sklearn.__version__, backend=jax.default_backend())  # fmt: skip
        args.json.write_text(json.dumps(dict(meta=meta, results=results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
