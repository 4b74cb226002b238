#!/usr/bin/env bash
# Producer and consumer throughput of the Python SDK, 100-byte events:
#   sdks/python/bench.sh http://127.0.0.1:50551 [--events N] [--window W] [--credits C]
# against e.g. `herald serve --in-memory --listen 127.0.0.1:50551`.
set -euo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
[[ $# -ge 1 ]] || { echo "usage: sdks/python/bench.sh ENDPOINT [options]" >&2; exit 2; }
"$DIR/build.sh" >&2
export PYTHONPATH="$DIR/examples/gen${PYTHONPATH:+:$PYTHONPATH}"
exec "$DIR/.venv/bin/python" "$DIR/bench/bench.py" "$@"
