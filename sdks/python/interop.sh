#!/usr/bin/env bash
# Runs the Python interop agent (tests/interop/README.md) with the venv
# sdks/python/build.sh made: sdks/python/interop.sh produce|consume|bad-input ARGS...
set -euo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
if [[ ! -x "$DIR/.venv/bin/python" ]]; then
  echo "sdks/python/interop.sh: run sdks/python/build.sh first" >&2
  exit 1
fi
export PYTHONPATH="$DIR/interop:$DIR/interop/gen${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONIOENCODING=utf-8
exec "$DIR/.venv/bin/python" -m herald_interop "$@"
