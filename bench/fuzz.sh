#!/usr/bin/env bash
# Longer fuzzing run of the same targets as the CI smoke run: SECONDS a target (default 600).
#   bench/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/fuzz-smoke.sh "${1:-${SECONDS_EACH:-600}}"
