#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for SECONDS (default 30),
# starting from the seed corpus in tests/fuzz/corpus/<target>. A crash fails the script and
# leaves the reproducer in build-fuzz/crashes/. bench/fuzz.sh runs the same for longer.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-${SECONDS_EACH:-30}}
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
bash scripts/install-deps.sh clang libclang-rt-14-dev
command -v clang++ >/dev/null || { echo "fuzz-smoke: clang++ is needed (apt-get install clang)"; exit 1; }
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTANDEM_FUZZ=ON -DTANDEM_TESTS=OFF -DTANDEM_CUDA=OFF >/dev/null
cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target gguf_fuzz tokenizer_fuzz chat_template_fuzz request_fuzz
export TANDEM_SHARED_DIR=${TANDEM_SHARED_DIR:-$(cd .. && pwd)/shared}
mkdir -p "$BUILD_DIR/crashes"
for target in gguf tokenizer chat_template request; do
  work="$BUILD_DIR/corpus-$target"
  mkdir -p "$work"
  cp -n tests/fuzz/corpus/$target/* "$work/" 2>/dev/null || true
  echo "fuzz-smoke: $target for ${SECONDS_EACH}s"
  "$BUILD_DIR/tests/fuzz/${target}_fuzz" -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 \
    -max_len=65536 -artifact_prefix="$BUILD_DIR/crashes/$target-" -print_final_stats=1 "$work" 2>&1 |
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|ERROR)" || true
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "fuzz-smoke: $target FAILED (see $BUILD_DIR/crashes)"; exit 1; }
done
echo "fuzz-smoke: all targets ran ${SECONDS_EACH}s without a finding"
