#!/usr/bin/env bash
# One prepared run for a lent accelerator (GPU or TPU) with jax, optax, chex, pytest and numpy
# installed but no jaxmlp install and no internet: the checkout goes on PYTHONPATH. Everything it
# measures lands in $OUT (default: ./accel_out); each step has its own time limit, so a slow step
# leaves the others' results. About 8 minutes in all on an H100, start-up excluded.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-accel_out}
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1
PY=${PYTHON:-python}
PEERS=${PEERS:-torch,flax}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, note the status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}

{ date -u; nvidia-smi -L 2>/dev/null; "$PY" -c "import jax; print(jax.__version__, jax.devices())"; } \
  >"$OUT/device.txt" 2>&1
# Gradient and training tests (tests/conftest.py sets float32 matmuls to "highest" off the CPU).
step tests 150 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_backprop.py tests/test_check.py \
  tests/test_training.py tests/test_engine.py
for dtype in float32 bfloat16; do
  step "step_$dtype" 100 "$PY" benchmarks/run.py --configs S,M,L --dtype "$dtype" --suites step \
    --peers "$PEERS" --json "$OUT/step_$dtype.json"
done
step train 90 "$PY" benchmarks/bench_train.py --peers torch --json "$OUT/train.json"
step step_f32_highest 60 "$PY" benchmarks/run.py --configs M,L --dtype float32 --suites step \
  --peers none --matmul-precision highest --json "$OUT/step_f32_highest.json"
