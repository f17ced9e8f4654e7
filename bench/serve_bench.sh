#!/usr/bin/env bash
# Aggregate decode throughput of `tandem serve` with 1, 4 and 8 concurrent streaming clients
# (continuous batching), optionally against llama-server -np 8 on the same file and threads.
#
#   bench/serve_bench.sh                                   # Tandem alone
#   LLAMA_SERVER=/path/to/llama-server bench/serve_bench.sh  # both, with ratios
#
# Environment: MODEL (default: models/bench-qwen3moe-q8_0.gguf, generated on first use with
# `tandem gen-model --preset bench`), THREADS (physical cores), GEN (128 tokens per client),
# CLIENTS ("1 4 8"), CTX (context per sequence, 1024), PORT (18180, and the ports above it),
# ROUNDS (3).
# Aggregate decode tok/s = sum over clients of the server-reported predicted_n / the longest
# predicted_ms (all clients start together), so prompt processing is left out, as in tg runs.
set -euo pipefail
cd "$(dirname "$0")/.."
TANDEM=${TANDEM:-build/tandem}
THREADS=${THREADS:-$(lscpu -p=CORE 2>/dev/null | grep -v '^#' | sort -u | wc -l)}
GEN=${GEN:-128}
CLIENTS=${CLIENTS:-"1 4 8"}
CTX=${CTX:-1024}
BASE_PORT=${PORT:-18180}
MODEL=${MODEL:-models/bench-qwen3moe-q8_0.gguf}
[[ -x "$TANDEM" ]] || { echo "build Tandem first (scripts/build.sh)"; exit 1; }
if [[ ! -f "$MODEL" ]]; then
  mkdir -p "$(dirname "$MODEL")"
  "$TANDEM" gen-model --arch qwen3moe --preset bench --type q8_0 -o "$MODEL"
fi
max_clients=$(echo $CLIENTS | tr ' ' '\n' | sort -n | tail -1)
log=$(mktemp)
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -f "$log"' EXIT

wait_ready() {
  for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}

# Prints aggregate decode tok/s for N concurrent clients (python3 standard library only).
measure() {
  python3 - "$PORT" "$1" "$GEN" <<'PY'
import json, sys, threading, time, urllib.request
port, n, gen = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
prompts = ["Once upon a time", "The capital of France is", "In a hole in the ground", "1 2 3 4 5",
           "It was the best of times", "Call me Ishmael.", "To be or not to be", "A long time ago"]
first, last, counts = [None] * n, [None] * n, [0] * n
server_n, server_ms = [0] * n, [0.0] * n
def client(i):
    body = json.dumps({"prompt": prompts[i % len(prompts)], "max_tokens": gen, "temperature": 0,
                       "ignore_eos": True, "stream": True, "n_predict": gen}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("choices") and ev["choices"][0].get("text"):
                now = time.perf_counter()
                if first[i] is None: first[i] = now
                last[i] = now
                counts[i] += 1
            t = ev.get("timings")
            if t and "predicted_n" in t:
                server_n[i], server_ms[i] = t["predicted_n"], t["predicted_ms"]
threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
# Preferred: the servers' own timings (clients start together, so the longest decode time is
# the decode window). Fallback: client-side arrival times, which include network buffering.
if all(server_ms):
    print(f"{sum(server_n) / (max(server_ms) / 1000):.2f}")
    sys.exit(0)
start, end = max(first), max(last)
# Tokens produced inside the window: each client's count minus its tokens before `start`,
# approximated by scaling with its own rate.
toks = 0.0
for i in range(n):
    span = last[i] - first[i]
    if span <= 0: continue
    rate = (counts[i] - 1) / span
    toks += rate * max(0.0, min(last[i], end) - max(first[i], start))
print(f"{toks / (end - start):.2f}" if end > start else "0")
PY
}

run_server_bench() {  # name, port, command...
  local name=$1; PORT=$2; shift 2
  "$@" > "$log" 2>&1 &
  pid=$!
  wait_ready || { echo "$name did not start:" >&2; cat "$log" >&2; exit 1; }
  measure 1 > /dev/null  # warm-up
  for n in $CLIENTS; do
    printf "%s %s %s\n" "$name" "$n" "$(measure "$n")"
  done
  kill -INT "$pid"; wait "$pid" || true; pid=""
}

results=$(mktemp)
# ROUNDS rounds, the two servers alternating, each on its own port (a stopped server's socket may
# linger in TIME_WAIT); the median round per client count is reported, which keeps one slow or
# fast moment on a shared machine from deciding a ratio.
for round in $(seq "${ROUNDS:-3}"); do
  run_server_bench tandem $((BASE_PORT + 2 * round)) "$TANDEM" serve -m "$MODEL" --port $((BASE_PORT + 2 * round)) \
    -t "$THREADS" -np "$max_clients" --ctx-size "$CTX" >> "$results"
  if [[ -n "${LLAMA_SERVER:-}" ]]; then
    run_server_bench llama $((BASE_PORT + 2 * round + 1)) "$LLAMA_SERVER" -m "$MODEL" --port $((BASE_PORT + 2 * round + 1)) \
      -t "$THREADS" -np "$max_clients" -c $((CTX * max_clients)) --no-webui >> "$results"
  fi
done
# name n value lines -> one line per (name, n): the median value.
median_of() {  # name n
  awk -v name="$1" -v n="$2" '$1==name && $2==n {print $3}' "$results" | sort -g |
    awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2)}'
}
echo "model: $MODEL  threads: $THREADS  tokens per client: $GEN  rounds: ${ROUNDS:-3} (median)"
printf "%-8s %14s %10s %14s %10s\n" clients tandem_tok/s vs_1 llama_tok/s ratio
t1=$(median_of tandem 1)
for n in $CLIENTS; do
  t=$(median_of tandem "$n")
  l=$(median_of llama "$n")
  scale=$([[ -n "$t1" ]] && awk -v a="$t" -v b="$t1" 'BEGIN { printf "%.2fx", a / b }' || echo -)
  ratio=$([[ -n "$l" ]] && awk -v a="$t" -v b="$l" 'BEGIN { printf "%.2fx", a / b }' || echo -)
  printf "%-8s %14.2f %10s %14s %10s\n" "$n" "$t" "$scale" "${l:--}" "$ratio"
done
rm -f "$results"
