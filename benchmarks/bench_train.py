"""Fused ``fit`` vs per-step loops, and ensembles vs sequential fits (issue 3).

Defaults: config S = (20, 64, 64, 1), batch 128, MSE, SGD (lr 0.01), 1024 samples (8 batches
per epoch), 40 epochs, shuffling on everywhere, timed after a warm-up run (compile excluded,
printed apart). Compared with ``fit``: loop (a), one jitted step per minibatch with the epoch's
permutation drawn by NumPy on the host and NumPy batches passed in; loop (b), device arrays
sliced each step; PyTorch eager and scikit-learn when installed. Then K = 1, 8, 64 member
ensembles (``fit_ensemble``) vs K sequential ``fit`` calls. Any ``run.py`` flag overrides:

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --peers all --json train.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxmlp.bench import main

DEFAULTS = [
    "--suites",
    "train,ensemble",
    "--train-config",
    "S",
    "--methods",
    "manual",
    "--peers",
    "torch,sklearn",
]

if __name__ == "__main__":
    sys.exit(main([*DEFAULTS, *sys.argv[1:]], prog="benchmarks/bench_train.py"))
