"""Manual vs autodiff gradients (issue 2): jitted ``value_and_grad`` time and compiled memory.

Defaults: config M = (784, 512, 512, 10), batch 256, softmax cross entropy; relu, tanh and
sigmoid networks; compile timed apart; the manual/autodiff column is the same-run median of
pairwise (interleaved) time ratios. Any ``benchmarks/run.py`` flag overrides a default:

    python benchmarks/bench_grad.py
    python benchmarks/bench_grad.py --dtype bfloat16 --json grad.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxmlp.bench import main

DEFAULTS = ["--suites", "grad", "--configs", "M", "--activations", "relu,tanh,sigmoid"]

if __name__ == "__main__":
    sys.exit(main([*DEFAULTS, *sys.argv[1:]], prog="benchmarks/bench_grad.py"))
