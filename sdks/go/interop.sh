#!/usr/bin/env bash
# Runs the Go interop agent (build it first with sdks/go/build.sh).
set -euo pipefail
BIN="$(dirname "$0")/bin/herald-interop"
if [[ ! -x "$BIN" ]]; then
  echo "sdks/go/bin/herald-interop is missing: run sdks/go/build.sh first" >&2
  exit 1
fi
exec "$BIN" "$@"
