#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA op tests, the hybrid and scheduled parity tests run on
# the device (TANDEM_TEST_CUDA_DEVICE), then the bench model CPU-only against experts on the
# GPU (all cached, and a partial cache under tandem and hybrimoe). What README "CUDA on an H200"
# reports was measured this way.
#
#   scripts/build.sh && bench/gpu_check.sh [DEVICE]      # DEVICE: CUDA index (default 0)
#
# Environment: BUILD_DIR (build), TANDEM_SHARED_DIR (../shared: reference models and goldens),
# MODELS_DIR (models/; the Q4_K bench model is generated on first use), CACHE_GB (1.2: the
# partial expert cache), HARDWARE (configs/hardware/h100-pcie-xeon.json: the cost model's
# starting point, refit from the device's own times).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-0}
BUILD_DIR=${BUILD_DIR:-build}
MODELS_DIR=${MODELS_DIR:-models}
CACHE_GB=${CACHE_GB:-1.2}
HARDWARE=${HARDWARE:-configs/hardware/h100-pcie-xeon.json}
export TANDEM_SHARED_DIR=${TANDEM_SHARED_DIR:-$(cd .. && pwd)/shared}
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU here (nvidia-smi finds none)" >&2
  exit 2
fi
nvidia-smi -L
"$BUILD_DIR"/tests/cuda_ops_test --gtest_brief=1
TANDEM_TEST_CUDA_DEVICE=$DEVICE "$BUILD_DIR"/tests/hybrid_parity_test --gtest_brief=1
TANDEM_TEST_CUDA_DEVICE=$DEVICE "$BUILD_DIR"/tests/scheduled_parity_test --gtest_brief=1
model=$MODELS_DIR/bench-qwen3moe-q4_k.gguf
mkdir -p "$MODELS_DIR"
[[ -f $model ]] || "$BUILD_DIR"/tandem gen-model --preset bench --type q4_k -o "$model"
for run in "cpu only|" "all cached|--gpu $DEVICE --policy tandem" \
  "tandem, $CACHE_GB GB|--gpu $DEVICE --expert-cache $CACHE_GB --policy tandem" \
  "hybrimoe, $CACHE_GB GB|--gpu $DEVICE --expert-cache $CACHE_GB --policy hybrimoe"; do
  echo "== ${run%%|*}"
  # shellcheck disable=SC2086  # the options are meant to split
  "$BUILD_DIR"/tandem bench -m "$model" -p 512 -n 64 -r 2 --hardware "$HARDWARE" ${run#*|}
done
