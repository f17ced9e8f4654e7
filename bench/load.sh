#!/usr/bin/env bash
# Load and fault test of `tandem serve` on loopback: CLIENTS concurrent clients (default 64)
# for DURATION seconds (default 120) mixing streaming, non-streaming, cancelled and malformed
# requests, plus slow clients that open connections and send nothing. Prints requests, errors
# by code, p50/p99 latency and the server's RSS before and after; exits non-zero when a rule
# breaks (bench/load.mjs lists them) or the server dies.
#   bench/load.sh [-m MODEL]      (default: the demo model)
set -euo pipefail
cd "$(dirname "$0")/.."
TANDEM=${TANDEM:-build/tandem}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
export CLIENTS=${CLIENTS:-64} DURATION=${DURATION:-120} TANDEM_URL="http://127.0.0.1:$PORT"
"$TANDEM" serve --port "$PORT" -np 8 "$@" >"${LOAD_LOG:-/tmp/tandem-load-$PORT.log}" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "$TANDEM_URL/health" >/dev/null && break; sleep 0.2; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
# Warm-up: the same traffic for WARMUP seconds, so buffers reach their peak batch sizes and
# the allocator its working set; the baseline RSS is taken after it.
DURATION=${WARMUP:-15} node bench/load.mjs >/dev/null || true
rss_before=$(rss)
# Slow clients: connect and send half a request line, then hold the connection.
for _ in $(seq 8); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'POST /v1/completions HTTP/1.1\r\n' >&3; sleep "$DURATION") & done
summary=$(node bench/load.mjs) || status=$?
rss_after=$(rss)
kill -0 $server || { echo "load: the server died"; exit 1; }
echo "$summary"
awk -v b="$rss_before" -v a="$rss_after" 'BEGIN { printf "rss_before_kb=%d rss_after_kb=%d growth=%.1f%%\n", b, a, 100 * (a - b) / b }'
exit "${status:-0}"
