#!/usr/bin/env bash
# Runs an example with the SDK venv: sdks/python/examples/run.sh signup_producer.py ENDPOINT
set -euo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
script=$1
shift
export PYTHONPATH="$DIR/gen${PYTHONPATH:+:$PYTHONPATH}"
exec "$DIR/../.venv/bin/python" "$DIR/$script" "$@"
