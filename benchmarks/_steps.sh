# The harness the prepared accelerator runs share (sourced by gpu_check.sh and gpu_fused.sh,
# which set OUT, STEPS and DEADLINE first): the folders, `want`, `step` and device.txt.
# Logs and JSON records go to $WORK (default: a fresh temporary folder) and are packed into
# $OUT/results.tgz after every step, beside $OUT/steps.txt and $OUT/device.txt.
mkdir -p "$OUT"
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python}

want() { [[ ",$STEPS," == *",$1,"* ]]; }

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $WORK/NAME.log, note the status
  local name=$1 limit=$2
  shift 2
  if ((SECONDS + 20 > DEADLINE)); then
    echo "$name: skipped (deadline)" | tee -a "$OUT/steps.txt"
    return
  fi
  ((SECONDS + limit > DEADLINE)) && limit=$((DEADLINE - SECONDS))
  local t0=$SECONDS
  # SIGINT first, so pytest and Python print what they have; SIGKILL 10 s later.
  timeout -k 10 -s INT "$limit" "$@" >"$WORK/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
  tar -czf "$OUT/results.tgz" -C "$WORK" .
}

{ date -u; nvidia-smi -L 2>/dev/null; nproc; "$PY" -c "import jax; print(jax.__version__, jax.devices())"; } \
  >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
