"""Time to first result (issue 16): whole fresh processes, jaxmlp against scikit-learn.

    python benchmarks/bench_latency.py [--repeats 3] [--quick] [--json PATH]

Each case is a fresh Python process, timed by this driver from its start to its exit: the wait a
user sees. The data is a CSV of 150 rows of scikit-learn's wine data (13 features, 3 classes),
written to a temporary folder. Cases:

- ``sklearn script``: read the CSV, ``StandardScaler``, ``MLPClassifier(hidden_layer_sizes=(32,),
  max_iter=200).fit``; every ratio below is to this case, in the same round.
- ``jaxmlp script``: the same with ``jaxmlp.data.Standardizer`` and ``jaxmlp.fit`` (Adam 1e-3, 200
  epochs of one 150-row batch, as scikit-learn's ``batch_size="auto"``), after
  ``jaxmlp.enable_compilation_cache()``: ``cold`` starts from a new empty cache folder every round,
  ``warm`` from one that a run before the rounds filled.
- ``jaxmlp train``: the command on the same CSV (one hidden layer of 32, 200 epochs, Adam 1e-3,
  batch 150, its default 20% validation split), ``--no-plots`` cold and warm, and with its
  pictures (and gradient check) warm.
- ``import jax``, ``import jax + one op`` (``jax.numpy.zeros(1).block_until_ready()``),
  ``import jaxmlp``, ``import jaxmlp + library`` (``jaxmlp.fit`` loaded) and ``jaxmlp --help``.
- ``cv``: one process runs ``cross_val_score(make_pipeline(StandardScaler(), MLPClassifier(...)),
  cv=5)`` on breast_cancer twice and reports each call's time: scikit-learn's own MLP, and
  ``jaxmlp.sklearn.MLPClassifier`` with its default cache cold and warm.

The cases run in the same rounds, interleaved, the order reversed every other round. Figures are
medians over rounds; ratios are the median of the same round's ratio. ``--quick`` is a smoke run
(one round, 10 epochs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SKLEARN_SCRIPT = """
import json, sys
import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
import warnings; warnings.simplefilter("ignore")
table = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
x, y = StandardScaler().fit_transform(table[:, :-1]), table[:, -1].astype(int)
clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=int(sys.argv[2]), random_state=0).fit(x, y)
print(json.dumps({"accuracy": clf.score(x, y), "epochs": clf.n_iter_}))
"""

JAXMLP_SCRIPT = """
import json, sys
import numpy as np
import jax, optax, jaxmlp
jaxmlp.enable_compilation_cache()
table = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.int32)
x = jaxmlp.data.Standardizer.fit(x).transform(x)
model = jaxmlp.MLP((13, 32, 3), activation="relu")
result = jaxmlp.fit(model, model.init(jax.random.key(0)), x, y, loss="softmax_cross_entropy",
                    key=jax.random.key(1), optimizer=optax.adam(1e-3), epochs=int(sys.argv[2]),
                    batch_size=150, progress=False)
out = np.asarray(model.apply(result.params, x))
print(json.dumps({"accuracy": float(np.mean(out.argmax(1) == y)), "epochs": len(result.history["loss"])}))
"""

CV_SCRIPT = """
import json, sys, time
import warnings; warnings.simplefilter("ignore")
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
if sys.argv[1] == "jaxmlp":
    from jaxmlp.sklearn import MLPClassifier
else:
    from sklearn.neural_network import MLPClassifier
x, y = load_breast_cancer(return_X_y=True)
calls, scores = [], []
for _ in range(2):
    start = time.perf_counter()
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=int(sys.argv[2]), random_state=0))
    scores.append(float(cross_val_score(pipe, x, y, cv=5).mean()))
    calls.append(time.perf_counter() - start)
print(json.dumps({"first_s": calls[0], "second_s": calls[1], "accuracy": scores}))
"""

TARGETS = {  # issue 16's targets: ratio to scikit-learn in the same run
    "jaxmlp script, cache warm": 1.5,
    "jaxmlp script, cache cold": 2.5,
    "jaxmlp train --no-plots, warm": 2.0,
    "jaxmlp train with pictures, warm": 3.0,
}


QUICK_CASES = (  # --quick's cases
    "sklearn script",
    "jaxmlp script, cache cold",
    "jaxmlp script, cache warm",
    "jaxmlp train with pictures, warm",
    "import jaxmlp",
    "jaxmlp --help",
    "cv sklearn",
    "cv jaxmlp, cache warm",
)


def _command_line() -> list[str]:
    script = Path(sys.executable).with_name("jaxmlp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jaxmlp"]


def _cases(csv_path: Path, epochs: int, out: Path) -> dict[str, tuple[list[str], str | None]]:
    """Case name -> (its command, its cache: None, "cold" (a new folder each round) or "warm")."""
    py = [sys.executable, "-c"]
    jaxmlp = _command_line()
    train = [*jaxmlp, "train", "--data", str(csv_path), "--target", "target", "--hidden", "32",
             "--epochs", str(epochs), "--lr", "0.001", "--batch-size", "150", "--no-progress",
             "--out", str(out)]  # fmt: skip
    return {
        "sklearn script": ([*py, SKLEARN_SCRIPT, str(csv_path), str(epochs)], None),
        "jaxmlp script, cache cold": ([*py, JAXMLP_SCRIPT, str(csv_path), str(epochs)], "cold"),
        "jaxmlp script, cache warm": ([*py, JAXMLP_SCRIPT, str(csv_path), str(epochs)], "warm"),
        "jaxmlp train --no-plots, cold": ([*train, "--no-plots"], "cold"),
        "jaxmlp train --no-plots, warm": ([*train, "--no-plots"], "warm"),
        "jaxmlp train with pictures, warm": (train, "warm"),
        "import jax": ([*py, "import jax"], None),
        "import jax + one op": ([*py, "import jax; jax.numpy.zeros(1).block_until_ready()"], None),
        "import jaxmlp": ([*py, "import jaxmlp"], None),
        "import jaxmlp + library": ([*py, "import jaxmlp; jaxmlp.fit"], None),
        "jaxmlp --help": ([*jaxmlp, "--help"], None),
        "cv sklearn": ([*py, CV_SCRIPT, "sklearn", str(epochs)], None),
        "cv jaxmlp, cache cold": ([*py, CV_SCRIPT, "jaxmlp", str(epochs)], "cold"),
        "cv jaxmlp, cache warm": ([*py, CV_SCRIPT, "jaxmlp", str(epochs)], "warm"),
    }


def _env(cache_home: Path) -> dict[str, str]:
    """A user who configured nothing: jaxmlp's own cache in ``cache_home``."""
    drop = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
            "JAXMLP_NO_COMPILATION_CACHE", "PYTHONPROFILEIMPORTTIME")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop}
    path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": path}


def _run(argv: list[str], cache_home: Path, cwd: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(cache_home), cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]}... failed:\n{done.stderr[-3000:]}")
    last = done.stdout.strip().splitlines()[-1:] or [""]
    try:
        report = json.loads(last[0])
    except json.JSONDecodeError:
        report = {}
    return seconds, report


def _write_wine(path: Path) -> None:
    """150 of the 178 rows of scikit-learn's bundled wine data (all 3 classes), as a CSV."""
    import numpy as np
    from sklearn.datasets import load_wine

    wine = load_wine()
    rows = np.sort(np.random.default_rng(0).permutation(len(wine.target))[:150])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*(n.replace("/", "_") for n in wine.feature_names), "target"])
        for i in rows:
            writer.writerow([*(repr(float(v)) for v in wine.data[i]), int(wine.target[i])])


def _environment() -> dict:
    from jaxmlp.bench import environment

    env = environment()
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)  # fmt: skip
    env["commit"] = head.stdout.strip() or None
    env["uncommitted_changes"] = bool(dirty.stdout.strip())
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--epochs", type=int, default=200, help="epochs / max_iter (default 200)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: one round, 10 epochs, one case of each kind")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write every time and report here")
    a = ap.parse_args()
    repeats, epochs = (1, 10) if a.quick else (a.repeats, a.epochs)
    tmp = Path(tempfile.mkdtemp(prefix="jaxmlp-latency-"))
    data = tmp / "wine.csv"
    _write_wine(data)
    cases = _cases(data, epochs, tmp / "run")
    if a.quick:  # one case of each kind: every code path of the script, half the processes
        cases = {name: case for name, case in cases.items() if name in QUICK_CASES}
    warm, unused = tmp / "warm", tmp / "unused"
    for argv, cache in cases.values():  # fill the warm folder (not timed)
        if cache == "warm":
            _run(argv, warm, tmp)
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    reports: dict[str, list[dict]] = {n: [] for n in names}
    load = []
    for r in range(repeats):
        load.append(os.getloadavg()[0])
        for name in names if r % 2 == 0 else names[::-1]:
            argv, cache = cases[name]
            # a cold case starts from a folder of its own, new every round
            home = tmp / f"cold-{r}-{names.index(name)}" if cache == "cold" else warm if cache else unused  # fmt: skip
            seconds, report = _run(argv, home, tmp)
            times[name].append(seconds)
            reports[name].append(report)
    base = times["sklearn script"]
    rows = []
    for name in names:
        ratio = statistics.median(t / b for t, b in zip(times[name], base, strict=True))
        rows.append({"case": name, "median_s": statistics.median(times[name]), "min_s": min(times[name]),
                     "max_s": max(times[name]), "ratio_to_sklearn_script": ratio,
                     "target": TARGETS.get(name), "times_s": times[name], "reports": reports[name]})  # fmt: skip
    cv = {}
    for name in [n for n in ("cv jaxmlp, cache cold", "cv jaxmlp, cache warm") if n in cases]:
        for call in ("first_s", "second_s"):
            ratios = [j[call] / s[call] for j, s in zip(reports[name], reports["cv sklearn"], strict=True)]  # fmt: skip
            cv[f"{name}, {call[:-2]} call"] = {
                "median_s": statistics.median(j[call] for j in reports[name]),
                "sklearn_median_s": statistics.median(s[call] for s in reports["cv sklearn"]),
                "ratio": statistics.median(ratios),
                "target": 2.5 if call == "first_s" else 1.0,
            }
    print(f"Fresh processes, {repeats} round(s), {epochs} epochs; load average {', '.join(f'{x:.1f}' for x in load)}")  # fmt: skip
    print("\n| case | median s | min-max s | ÷ sklearn script | target |\n|---|---|---|---|---|")
    for row in rows:
        target = "" if row["target"] is None else f"≤ {row['target']}"
        print(f"| {row['case']} | {row['median_s']:.2f} | {row['min_s']:.2f}-{row['max_s']:.2f} | {row['ratio_to_sklearn_script']:.2f} | {target} |")  # fmt: skip
    print("\n| 5-fold cross_val_score, in one process | jaxmlp s | sklearn s | ratio | target |\n|---|---|---|---|---|")  # fmt: skip
    for name, row in cv.items():
        print(f"| {name.removeprefix('cv ')} | {row['median_s']:.2f} | {row['sklearn_median_s']:.2f} | {row['ratio']:.2f} | ≤ {row['target']} |")  # fmt: skip
    if a.json:
        record = {"environment": _environment(), "repeats": repeats, "epochs": epochs,
                  "load_average_per_round": load, "cases": rows, "cv": cv}  # fmt: skip
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
