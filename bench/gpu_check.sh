#!/usr/bin/env bash
# One-shot GPU check: every GPU test and benchmark of the project in one run (~8 minutes on an H200).
#
#   OUT=/some/folder bash bench/gpu_check.sh          # run; outputs under $OUT (default: out/gpu_check)
#   bash bench/gpu_check.sh --dry-run                 # print the steps, run nothing, write nothing
#
# Needs only the GPU machine's base image (PyTorch + Triton): the project is used from this checkout
# (PYTHONPATH), and missing pure-Python extras (rich, safetensors, pytest, ...) are reported by the
# steps that need them. Every step runs even if an earlier one failed; the exit status is the number of
# failed steps. At the end everything is packed into $OUT/gpu_check.tar.gz (one file to copy back) and
# the files are ready to be copied into profiles/<gpu>/ (see profiles/README.md).
set -u
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/out/gpu_check}"
BATCH_COMPARE="${BATCH_COMPARE:-16}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

STEPS=(
  "python -m pytest -m gpu tests -q -rs -p no:cacheprovider 2>&1 | tee \$OUT/gpu_tests.log"
  "python bench/kernels.py --out \$OUT/kernels.json 2>&1 | tee \$OUT/kernels.log"
  "python bench/sampling.py --model titok-l-32 --pipelines reference,compile,fast --batch-sizes 1,32,256 --dtype bfloat16 --iters 5 --out \$OUT/sampling_l32_bf16.json --plot \$OUT/sampling_l32_bf16.png 2>&1 | tee \$OUT/sampling_l32_bf16.log"
  "python bench/sampling.py --model titok-l-32 --pipelines reference,compile,fast --batch-sizes 1,32,256 --dtype float32 --iters 5 --out \$OUT/sampling_l32_fp32.json 2>&1 | tee \$OUT/sampling_l32_fp32.log"
  "python bench/parity.py --model titok-l-32 --batch-size 32 --out \$OUT/parity_l32.json 2>&1 | tee \$OUT/parity_l32.log"
  "python bench/sampling.py --compare paper --protocol both --batch-sizes $BATCH_COMPARE --iters 2 --out \$OUT/compare_paper.json --plot \$OUT/compare_paper.png 2>&1 | tee \$OUT/compare_paper.log"
  "python bench/profile.py --model titok-l-32 --pipeline fast --batch-size 64 --out-dir \$OUT 2>&1 | tee \$OUT/profile.log"
)

if [ "$DRY" = 1 ]; then
  echo "gpu_check dry run: outputs would go to $OUT"
  for s in "${STEPS[@]}"; do echo "  $s"; done
  echo "  tar -czf \$OUT/gpu_check.tar.gz -C \$OUT ."
  exit 0
fi

mkdir -p "$OUT"
cd "$ROOT" || exit 1
nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"
failed=0
for s in "${STEPS[@]}"; do
  echo "=== $(date -u +%H:%M:%S) $s"
  start=$(date +%s)
  (set -o pipefail; eval "$s")
  rc=$?
  echo "=== rc=$rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/steps.txt"
  [ "$rc" = 0 ] || failed=$((failed + 1))
done
tar -czf "/tmp/gpu_check.tar.gz" -C "$OUT" . && mv /tmp/gpu_check.tar.gz "$OUT/gpu_check.tar.gz"
echo "gpu_check: $failed failed steps; outputs in $OUT (packed: $OUT/gpu_check.tar.gz)"
exit "$failed"
