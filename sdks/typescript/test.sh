#!/usr/bin/env bash
# The TypeScript SDK's tests against a real broker: type-checks everything
# (tsc --noEmit), builds, then runs node's test runner on dist/test (the SDK
# tests and the examples), each test file starting its own `herald serve`
# from $HERALD_BIN (default <repo>/target/debug/herald).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
export HERALD_BIN="${HERALD_BIN:-$ROOT/target/debug/herald}"
if [[ ! -x "$HERALD_BIN" ]]; then
  echo "no herald binary at $HERALD_BIN: build it (cargo build -p herald-cli) or set HERALD_BIN" >&2
  exit 1
fi
./build.sh
node_modules/.bin/tsc -p tsconfig.json --noEmit
node --test --test-concurrency=1 dist/test/
