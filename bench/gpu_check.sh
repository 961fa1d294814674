#!/usr/bin/env bash
# The prepared GPU check (issue 26), for a lent GPU machine (the device tool), in under 8 minutes:
#   here:   bash bench/gpu_wheels.sh      # once: what that machine lacks, into .whl/ (no registry there)
#   there:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# It installs .whl/ beside that machine's own PyTorch and ONNX Runtime (nothing is fetched), runs
# bench/gpu_check.py, and leaves its figures in $OUT/gpu_check.json (and the log in $OUT/gpu_check.log).
# Elsewhere: PY=.venv/bin/python bash bench/gpu_check.sh --allow-cpu checks the script on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 3
  export PYTHONPATH="$PWD:/tmp/site:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS="ignore::RuntimeWarning"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null | tee "$OUT/nvidia-smi.txt"
timeout 500 "$PY" bench/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
