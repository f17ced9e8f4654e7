#!/usr/bin/env bash
# CPU-only throughput of Tandem against llama.cpp on the same GGUF files and threads.
#
#   bench/cpu_bench.sh                      # Tandem alone
#   LLAMA_BENCH=/path/to/llama-bench bench/cpu_bench.sh   # both, alternating, with ratios
#
# Environment: TYPES (default "q8_0 q4_k"; any `gen-model --type`, e.g. q4_k_m for the mix of
# types llama.cpp gives a Q4_K_M file), THREADS (default: physical cores), REPS (3),
# ROUNDS (2: each tool runs ROUNDS times, alternating, and the best round counts),
# PROMPT (512; 0 skips prefill), GEN (128; 0 skips decode), DEPTH (0: tokens already in the
# context before each test, as llama-bench -d), KV (f16: the KV cache type of both tools,
# llama-bench's default), MODELS_DIR (models/), LLAMA_ARGS (more llama-bench options, e.g.
# "-mmp 0" to read the weights into memory as Tandem does instead of mapping the file).
# The bench models are generated on first use
# with `tandem gen-model --preset bench` (~6 GB in Q8_0, ~3.5 GB in Q4_K).
set -euo pipefail
cd "$(dirname "$0")/.."
TANDEM=${TANDEM:-build/tandem}
TYPES=${TYPES:-"q8_0 q4_k"}
THREADS=${THREADS:-$(lscpu -p=CORE 2>/dev/null | grep -v '^#' | sort -u | wc -l)}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-2}
PROMPT=${PROMPT:-512}
GEN=${GEN:-128}
DEPTH=${DEPTH:-0}
KV=${KV:-f16}
MODELS_DIR=${MODELS_DIR:-models}
[[ -x "$TANDEM" ]] || { echo "build Tandem first (scripts/build.sh)"; exit 1; }
mkdir -p "$MODELS_DIR"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Best avg_ts per test from a llama-bench style JSON array.
best() { python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))
for r in rows:
    test = ("pp%d" % r["n_prompt"]) if r["n_prompt"] > 0 else ("tg%d" % r["n_gen"])
    if r.get("n_depth", 0) > 0: test += "@d%d" % r["n_depth"]
    print(test, r["avg_ts"], r.get("stddev_ts", 0))' "$1"; }

printf "%-6s %-12s %14s %14s %8s\n" type test tandem_t/s llama_t/s ratio
for type in $TYPES; do
  model="$MODELS_DIR/bench-qwen3moe-$type.gguf"
  [[ -f "$model" ]] || "$TANDEM" gen-model --arch qwen3moe --preset bench --type "$type" -o "$model"
  for round in $(seq "$ROUNDS"); do
    "$TANDEM" bench -m "$model" -p "$PROMPT" -n "$GEN" -d "$DEPTH" -t "$THREADS" -r "$REPS" \
      --kv-type "$KV" -o json > "$out/tandem-$type-$round.json"
    if [[ -n "${LLAMA_BENCH:-}" ]]; then
      "$LLAMA_BENCH" -m "$model" -p "$PROMPT" -n "$GEN" -d "$DEPTH" -t "$THREADS" -r "$REPS" \
        -ctk "$KV" -ctv "$KV" ${LLAMA_ARGS:-} -o json > "$out/llama-$type-$round.json" 2>/dev/null
    fi
  done
  tests=()
  at=""
  [[ "$DEPTH" != 0 ]] && at="@d$DEPTH"
  [[ "$PROMPT" != 0 ]] && tests+=("pp$PROMPT$at")
  [[ "$GEN" != 0 ]] && tests+=("tg$GEN$at")
  for test in "${tests[@]}"; do
    t=$(for f in "$out"/tandem-"$type"-*.json; do best "$f"; done | awk -v t="$test" '$1==t {print $2}' | sort -g | tail -1)
    l="-"; ratio="-"
    if [[ -n "${LLAMA_BENCH:-}" ]]; then
      l=$(for f in "$out"/llama-"$type"-*.json; do best "$f"; done | awk -v t="$test" '$1==t {print $2}' | sort -g | tail -1)
      ratio=$(awk -v a="$t" -v b="$l" 'BEGIN { printf "%.2fx", a / b }')
    fi
    printf "%-6s %-12s %14.2f %14s %8s\n" "$type" "$test" "$t" "$l" "$ratio"
  done
done
