#!/usr/bin/env bash
# Before/after runs of two herald binaries, alternating A B A B ..., each
# run against a fresh `herald serve` on a fresh data dir (loopback only):
#
#   bench/ab.sh OLD_BIN NEW_BIN [REPS]
#
# Runs, per binary and repetition:
#   publish:  herald bench publish --create-topic-fsync batch --event-size 100
#             --batch-size 100 --duration 10s        (durable, 100 B, batch 100)
#   pubsub:   herald bench subscribe --type shared --consumers 1 --rate 0
#             --producers 4 --publish-in-flight 1 --batch-size 100
#             --create-topic-fsync batch --duration 10s   (publish + one acking consumer)
# and prints one line per run plus the median per binary and workload.
# REPS defaults to 3. DURATION (default 10s) shortens every run; WORKLOADS
# (default "publish pubsub") picks the workloads.
set -euo pipefail

A=${1:?usage: bench/ab.sh OLD_BIN NEW_BIN [REPS]}
B=${2:?usage: bench/ab.sh OLD_BIN NEW_BIN [REPS]}
REPS=${3:-3}
DURATION=${DURATION:-10s}
WORKLOADS=${WORKLOADS:-publish pubsub}
PORT=${PORT:-50661}
RESULTS=$(mktemp)
SERVER_PID=
DATA_DIR=

# Stops the server and removes its data dir (a 10 s run writes ~1 GB).
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
  if [[ -n "$DATA_DIR" ]]; then
    rm -rf "$DATA_DIR" "$DATA_DIR.log"
    DATA_DIR=
  fi
}
trap 'stop_server; rm -f "$RESULTS"' EXIT

# Starts BIN on a fresh data dir and waits until it answers.
start_server() {
  local bin=$1
  DATA_DIR=$(mktemp -d)
  "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" --metrics-listen off \
    --log-level warn >"$DATA_DIR.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "server $bin did not start:" >&2
  cat "$DATA_DIR.log" >&2
  exit 1
}

# One run: prints "label workload events_per_second".
run() {
  local label=$1 bin=$2 workload=$3 json rate
  start_server "$bin"
  case $workload in
    publish)
      json=$("$bin" bench publish --endpoint "127.0.0.1:$PORT" --create-topic-fsync batch \
        --event-size 100 --batch-size 100 --duration "$DURATION" --json 2>/dev/null)
      rate=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["events_per_sec"]))' <<<"$json")
      ;;
    pubsub)
      json=$("$bin" bench subscribe --endpoint "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --type shared --consumers 1 --rate max --producers 4 --publish-in-flight 1 \
        --batch-size 100 --create-topic-fsync batch --duration "$DURATION" --json 2>/dev/null)
      rate=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["delivered_per_sec"]))' <<<"$json")
      ;;
  esac
  stop_server
  echo "$label $workload $rate" | tee -a "$RESULTS"
}

for rep in $(seq "$REPS"); do
  for workload in $WORKLOADS; do
    run A "$A" "$workload"
    run B "$B" "$workload"
  done
done

echo "median events/s (A = $A, B = $B):"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, workload, rate = line.split()
    runs.setdefault((workload, label), []).append(int(rate))
for workload in ("publish", "pubsub"):
    if (workload, "A") not in runs:
        continue
    a, b = runs[(workload, "A")], runs[(workload, "B")]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{workload:8} A {ma:>10,.0f}  B {mb:>10,.0f}  B/A {mb / ma:.3f}  (A runs {a}, B runs {b})")
EOF
