#!/usr/bin/env bash
# The test command: installs what a fresh Debian 12 needs, builds (CPU, and the CUDA backend
# compile-only where nvcc exists), then runs the whole GoogleTest suite through ctest.
# Reference data is read from TANDEM_SHARED_DIR (default: ../shared beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
export TANDEM_SHARED_DIR=${TANDEM_SHARED_DIR:-$(cd .. && pwd)/shared}
ctest --test-dir build --output-on-failure --parallel "$(nproc)" --timeout 900
