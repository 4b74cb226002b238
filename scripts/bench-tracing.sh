#!/usr/bin/env bash
# Publish throughput and latency with tracing off, exporting at 1 % and at
# 100 % sampling (to a local OTLP sink), runs alternating A B C A B C ...
#   scripts/bench-tracing.sh [rounds=3] [duration=10s]
# Needs: cargo build --release -p herald-cli --bin herald -p herald-server --example otlp_sink
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
DURATION=${2:-10s}
HERALD=target/release/herald
SINK=target/release/examples/otlp_sink
PORT=50095
SINK_ADDR=127.0.0.1:54317
"$SINK" "$SINK_ADDR" > /tmp/herald-bench-sink.log 2>&1 &
SINK_PID=$!
trap 'kill $SINK_PID 2>/dev/null || true' EXIT
sleep 0.5
run() { # label, extra serve args...
  local label=$1; shift
  local dir; dir=$(mktemp -d)
  "$HERALD" --log-level warn serve --listen "127.0.0.1:$PORT" --data-dir "$dir" "$@" > "$dir.log" 2>&1 &
  local pid=$!
  sleep 0.5
  local out
  out=$("$HERALD" --log-level warn bench publish --endpoint "http://127.0.0.1:$PORT" --duration "$DURATION" --json 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency"]; print("%.0f events/s  p50 %.1f ms  p99 %.1f ms  errors %d" % (r["events_per_sec"], l["p50_us"]/1000, l["p99_us"]/1000, r["errors"]))')
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  rm -rf "$dir" "$dir.log"
  printf '%-15s %s\n' "$label" "$out"
}
for round in $(seq 1 "$ROUNDS"); do
  run off
  run sampled-1pct --otlp-endpoint "http://$SINK_ADDR" --trace-sample-ratio 0.01
  run sampled-100pct --otlp-endpoint "http://$SINK_ADDR" --trace-sample-ratio 1.0
done
