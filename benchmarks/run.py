"""Run jaxmlp's benchmarks from a checkout: ``python benchmarks/run.py --help``.

Examples:
    python benchmarks/run.py --quick
    python benchmarks/run.py --configs S,M,L --dtype float32 --json cpu.json
    python benchmarks/run.py --configs S,M,L --dtype bfloat16 --peers torch,flax
    python benchmarks/run.py --configs "custom:32,128,128,4:64:mse" --suites step
    python benchmarks/run.py --configs M --suites step --peers none --layers issue15
"""

import sys
from pathlib import Path

# Run from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxmlp.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/run.py"))
