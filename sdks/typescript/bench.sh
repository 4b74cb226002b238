#!/usr/bin/env bash
# Producer (batching) and consumer (ack per event) throughput with 100-byte
# events against a running broker:  bench.sh ENDPOINT [EVENTS]
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
exec node dist/bench/bench.js "$@"
