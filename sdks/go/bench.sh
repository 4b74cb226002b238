#!/usr/bin/env bash
# Throughput of the Go SDK against a running herald: batching producer
# (Publish from 8192 goroutines; PublishBatch(100) from 64) and a consumer
# acking every event; 100-byte events. Prints events/s.
#
#   sdks/go/bench.sh http://127.0.0.1:50051 [SECONDS=10] [BACKLOG=1000000]
set -euo pipefail
cd "$(dirname "$0")"
[[ $# -ge 1 ]] || { echo "usage: sdks/go/bench.sh ENDPOINT [SECONDS] [BACKLOG]" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
mkdir -p bin
nice go build -trimpath -o bin/herald-bench ./cmd/herald-bench
exec bin/herald-bench "$@"
