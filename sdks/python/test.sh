#!/usr/bin/env bash
# The Python SDK's tests against a real herald ($HERALD_BIN, default
# <repo>/target/debug/herald): the plugin's Python backend unit tests are in
# `cargo test -p herald-codegen`; here: mypy --strict over the SDK, the
# generated bindings, the examples and the interop agent, then pytest
# (round trips, errors, redelivery/DLQ, restart, examples, interop agent).
#
#   HERALD_BIN=/path/to/herald sdks/python/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
export HERALD_BIN="${HERALD_BIN:-$(cd ../.. && pwd)/target/debug/herald}"
echo "==> mypy (strict)"
.venv/bin/mypy src/herald examples/*.py examples/gen interop/herald_interop tests/typecheck
echo "==> pytest (herald: $HERALD_BIN)"
exec .venv/bin/python -m pytest -q "$@"
