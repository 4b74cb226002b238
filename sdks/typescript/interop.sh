#!/usr/bin/env bash
# Runs the TypeScript interop agent (tests/interop/README.md); run build.sh first.
set -euo pipefail
exec node "$(dirname "$0")/dist/interop/agent.js" "$@"
