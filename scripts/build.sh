#!/usr/bin/env bash
# Configures and builds Tandem into build/ (Release, warnings as errors, CUDA when nvcc exists).
# Extra arguments are passed to CMake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_WERROR=ON "$@" >/dev/null
cmake --build "$BUILD_DIR" --parallel "$(nproc)"
