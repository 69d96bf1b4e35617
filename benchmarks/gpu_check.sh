#!/usr/bin/env bash
# One prepared run for an accelerator machine (GPU or TPU) with jax, optax, chex, pytest and numpy
# installed but no jaxmlp install and no internet: the checkout goes on PYTHONPATH.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#   OUT=/some/dir STEPS=train,probe,profile bash benchmarks/gpu_check.sh   # a follow-up run
#
# Steps, in order of priority (STEPS picks some; default all): tests, step (S, M, L in float32
# and bfloat16 with $PEERS), train (fused fit and ensembles vs loops), probe (fit's fixed and
# per-epoch cost), overhead (fit against a bare scan, with and without queued calls and the
# split first call), profile (per-kernel device time of the L step and the S fit), highest (M, L
# float32 at matmul precision "highest"), extra ($EXTRA_PEERS), xla (the fit program's HLO),
# memory (issue 21: peak host and device memory of in-memory and streamed fit, 1M and 4M rows),
# mixed (the L bfloat16 step against other mixed-precision layouts; not in the default set).
# Each step has its own time limit, and no step starts past $DEADLINE seconds (default 420),
# so a slow step leaves the others' results and the run ends in time. On an H100 the default
# steps took 52, 82 + 89, 43, 15 s (2026-11-26).
#
# Logs and JSON records go to $WORK (default: a fresh temporary folder) and are packed into
# $OUT/results.tgz after every step, beside $OUT/steps.txt and $OUT/device.txt: three files, so
# the run suits machines that send back only a few files.
set -u
OUT=${OUT:-accel_out}
PEERS=${PEERS:-torch,flax}
EXTRA_PEERS=${EXTRA_PEERS:-equinox,torch.compile}
STEPS=${STEPS:-tests,step,train,probe,overhead,profile,highest,extra,xla,memory}
DEADLINE=${DEADLINE:-420}
source "$(dirname "$0")/_steps.sh"  # WORK, PY, want, step, device.txt
# Gradient and training tests (tests/conftest.py sets float32 matmuls to "highest" off the CPU).
# Several workers share the device, so none may grab most of its memory up front.
want tests && step tests 110 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -q \
  -p no:cacheprovider -n 6 --maxfail=20 tests/test_backprop.py tests/test_check.py \
  tests/test_training.py tests/test_engine.py tests/test_ensemble.py tests/test_per_example.py
if want step; then
  for dtype in float32 bfloat16; do
    step "step_$dtype" 120 "$PY" benchmarks/run.py --configs S,M,L --dtype "$dtype" --suites step \
      --peers "$PEERS" --max-seconds 5 --json "$WORK/step_$dtype.json"
  done
fi
want train && step train 70 "$PY" benchmarks/bench_train.py --peers torch --json "$WORK/train.json"
want probe && step probe_fit 50 "$PY" benchmarks/probe_fit.py --json "$WORK/probe_fit.json"
# fit against a bare scan of the same steps, with and without queued calls and the split first call
want overhead && step overhead 40 "$PY" benchmarks/bench_fit_overhead.py --repeats 30 --variants \
  --json "$WORK/overhead.json"
if want profile; then
  step profile_L 60 "$PY" benchmarks/profile_step.py --config L --dtype bfloat16
  step profile_fit 40 "$PY" benchmarks/profile_step.py --fit
fi
want highest && step step_f32_highest 110 "$PY" benchmarks/run.py --configs M,L --dtype float32 \
  --suites step --peers torch --max-seconds 5 --matmul-precision highest \
  --json "$WORK/step_f32_highest.json"
want extra && step step_extra 60 "$PY" benchmarks/run.py --configs S,L --dtype float32 \
  --suites step --peers "$EXTRA_PEERS" --max-seconds 5 --json "$WORK/step_extra.json"
# Issue 21: host and device memory of in-memory and streamed fit against the data's size.
want memory && step memory 90 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" benchmarks/bench_memory.py \
  --rows 1000000,4000000 --mode memory,stream --timed --json "$WORK/memory.json"
want mixed && step probe_mixed 90 "$PY" benchmarks/probe_mixed.py --config L --profile
if want xla; then  # the fused program as XLA compiled it (kernels, loops, command buffers)
  step xla_dump 40 env XLA_FLAGS="--xla_dump_to=$WORK/xla --xla_dump_hlo_module_re=.*run.*" \
    "$PY" -c "import jax, numpy as np, jaxmlp; x = np.ones((1024, 20), np.float32); \
m = jaxmlp.MLP((20, 64, 64, 1)); jaxmlp.fit(m, m.init(jax.random.key(0)), x, x[:, :1], \
loss='mse', key=jax.random.key(1), epochs=2, batch_size=128, progress=False)"
  find "$WORK/xla" -type f ! -name '*.txt' -delete 2>/dev/null  # HLO text only: small
  tar -czf "$OUT/results.tgz" -C "$WORK" .
fi
echo "total: $SECONDS s" | tee -a "$OUT/steps.txt"
[ -f "$WORK/tests.log" ] && tail -n 4 "$WORK/tests.log"
for f in "$WORK"/step_*.log "$WORK/train.log" "$WORK/probe_fit.log" "$WORK/overhead.log" \
  "$WORK"/profile_*.log \
  "$WORK/probe_mixed.log"; do
  [ -f "$f" ] && { echo "== $(basename "$f")"; grep -E '^(\||fit|[SML] |  )' "$f" | head -n 70; }
done
