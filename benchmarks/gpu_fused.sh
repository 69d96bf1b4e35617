#!/usr/bin/env bash
# The fused kernels (issue 18) on a GPU: one prepared run for a Hopper machine (H100/H200) with
# jax (CUDA), optax, flax, torch, pytest and hypothesis installed but no jaxmlp install and no
# internet: the checkout goes on PYTHONPATH.
#
#   OUT=/some/dir bash benchmarks/gpu_fused.sh
#   OUT=/some/dir STEPS=bench DEADLINE=300 bash benchmarks/gpu_fused.sh    # a follow-up run
#
# Expected run time: about 8 minutes (an estimate: the script has run only in its CPU smoke
# mode, `python benchmarks/bench_fused.py --quick`). Steps, in order of priority (STEPS picks
# some; default all):
#   tests  tests/test_fused.py (fast tier) with the kernels compiled by Triton, against XLA
#          at matmul precision "highest" (tests/conftest.py sets it off the CPU)  ~2 min
#          (STEPS=slowtests runs the slow tier: long hypothesis run, fit, ensembles, example)
#   lower  the neural-field step's HLO (the Triton kernel embedded) as XLA compiles it ~20 s
#   bench  benchmarks/bench_fused.py: peaks, autotune, accuracy, then fused and XLA over
#          widths 64 and 128, batches 2^14..2^21, bfloat16 and float32, training step and
#          inference; then Flax and torch eager; then torch.compile at 2^18      ~5 min
# No step starts past $DEADLINE seconds (default 540) and each has its own limit, so a slow
# step leaves the others' results. Logs and JSON records go to $WORK (default: a fresh
# temporary folder) and are packed into $OUT/results.tgz after every step, beside
# $OUT/steps.txt and $OUT/device.txt. The figures to read first: bench/summary.json (the
# issue's targets: train step width 64 batch 2^18 half >= 2x XLA, inference >= 3x, width 128
# >= 1.5x; gradients within 1e-2 of float32 XLA in half precision, 1e-5 in float32).
set -u
OUT=${OUT:-fused_out}
STEPS=${STEPS:-tests,lower,bench}  # slowtests: not in the default set
DEADLINE=${DEADLINE:-540}
source "$(dirname "$0")/_steps.sh"  # WORK, PY, want, step, device.txt
want tests && step tests 150 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -q \
  -p no:cacheprovider --maxfail=10 -m "not slow" tests/test_fused.py
want slowtests && step slowtests 200 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -q \
  -p no:cacheprovider --maxfail=10 -m slow tests/test_fused.py
if want lower; then  # one training step as XLA compiles it, around the Triton kernel
  step lower 60 env XLA_FLAGS="--xla_dump_to=$WORK/xla --xla_dump_hlo_as_text" "$PY" -c "
import jax, jax.numpy as jnp, jaxmlp
from jaxmlp import fused
m = jaxmlp.MLP((32, 64, 64, 64, 64, 3), 'relu', param_dtype='bfloat16')
p = m.init(jax.random.key(0))
x = jnp.ones((1 << 18, 32), jnp.bfloat16); y = jnp.ones((1 << 18, 3), jnp.bfloat16)
f = jax.jit(fused.value_and_grad(m, 'mse'))
print(f.lower(p, x, y).as_text()[:4000])
v, g = f(p, x, y); print('loss', v)"
  find "$WORK/xla" -type f -size +2M -delete 2>/dev/null  # text only, small
  tar -czf "$OUT/results.tgz" -C "$WORK" .
fi
want bench && step bench $((DEADLINE - SECONDS - 15)) "$PY" benchmarks/bench_fused.py \
  --out "$WORK/bench" --deadline $((DEADLINE - SECONDS - 60))
echo "total: $SECONDS s" | tee -a "$OUT/steps.txt"
[ -f "$WORK/tests.log" ] && tail -n 4 "$WORK/tests.log"
[ -f "$WORK/bench.log" ] && grep -E '^(fused|xla|flax|torch)' "$WORK/bench.log" | head -n 200
[ -f "$WORK/bench/summary.json" ] && cat "$WORK/bench/summary.json"
