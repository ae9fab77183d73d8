#!/usr/bin/env bash
# Run the CUDA tests (tests/gpu), benchmarks 1-6, the profiler check and the step's cost part
# by part (profile_step --breakdown) on one CUDA GPU, offline, in at most 8.7 minutes (each
# under its own time limit), writing gpu_tests.log, one JSON per benchmark, gpu.log and
# tables.md (the markdown for RESULTS.md) flat into OUTDIR.
# Needs the wheels of .whl/ (fetched beforehand with benchmarks/fetch_wheels.sh); the package
# is used from this source tree.
#
#   benchmarks/gpu.sh OUTDIR
# (DEVICE=cpu QUICK=--quick benchmarks/gpu.sh OUTDIR rehearses the same script on a CPU)
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu.log"
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}
export PIP_NO_INDEX=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONWARNINGS=ignore
{ date -u; "$PYTHON" -V; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } >"$LOG" 2>&1
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >>"$LOG" 2>&1
export PYTHONPATH=/tmp/site:$PWD

run() {
  local limit=$1 name=$2 start=$SECONDS
  shift 2
  echo "== $name $* (limit ${limit}s)" >>"$LOG"
  timeout -k 5 "$limit" "$PYTHON" -m "benchmarks.$name" --device "$DEVICE" $QUICK --out "$OUT" "$@" >>"$LOG" 2>&1
  echo "== $name $*: exit $? after $((SECONDS - start))s" | tee -a "$LOG"
}

# the CUDA tests first (tests/gpu: exact step network, bf16 search, no host sync in a step)
start=$SECONDS
timeout -k 5 90 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/gpu >"$OUT/gpu_tests.log" 2>&1
echo "== gpu tests: exit $? after $((SECONDS - start))s ($(tail -n 1 "$OUT/gpu_tests.log"))" | tee -a "$LOG"

# most important first: a run cut short keeps what finished (each JSON is rewritten per row)
run 90 bench_inversion
run 50 bench_atlas_pass
run 45 profile_step
run 60 profile_step --breakdown
run 50 bench_units
run 45 bench_mti
run 45 bench_scaling
run 45 bench_step_network
"$PYTHON" -m benchmarks.results_table "$OUT" >"$OUT/tables.md" 2>>"$LOG"
echo "results in $OUT (total ${SECONDS}s)" | tee -a "$LOG"
