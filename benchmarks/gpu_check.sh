#!/usr/bin/env bash
# GPU readiness check (issue 11): one prepared script, < 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default OUT_DIR: benchmarks/results/gpu_check)
#
# 1. the GPU-marked tests (pytest -m gpu), plus the AMP/compile/DDP-adjacent CPU tests;
# 2. a CUDA fit with amp="bf16" and amp="fp16" (finite losses and scores, AUROC > 0.9);
# 3. compile=True on CUDA (scores match the eager fit to 1e-3 of their spread);
# 4. a CUDA -> CPU save/load round trip (CPU scores match the CUDA ones to 1e-4 of the spread);
# 5. WRN-40-2 training images/s of AOEDetector.fit (amp bf16, channels_last) vs a plain
#    hand-written torch loop doing the same work (one FGSM step on the outliers, one
#    forward over ID+outliers, energy-margin loss, Adam) on the same card.
# Every step has its own timeout; the script prints one line per check and a summary, and
# writes OUT_DIR/gpu_check.json. Exit code 0 only if every check passed.
set -u
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
status=0
echo "== GPU check $(date -u +%FT%TZ) on $($PY -c 'import torch;print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")')"
if ! $PY -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "FAIL: CUDA is not available"; exit 2
fi
echo "== 1. GPU-marked tests"
timeout 150 $PY -m pytest tests -m gpu -q -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/pytest_gpu.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== 2-5. CUDA fits, compile, save/load, WRN-40-2 throughput"
timeout 300 $PY benchmarks/_gpu_check.py "$OUT" || status=1
echo "== done: $([ $status -eq 0 ] && echo ALL PASSED || echo SOME CHECKS FAILED) (results in $OUT)"
exit $status
