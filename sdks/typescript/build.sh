#!/usr/bin/env bash
# Installs the pinned dependencies (package-lock.json, `npm ci`) and compiles
# the SDK, generated code, interop agent, examples, tests and benchmark into
# dist/. Idempotent; fast when nothing changed (npm ci only when the lockfile
# is newer than the install, tsc incremental).
set -euo pipefail
cd "$(dirname "$0")"
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/tsc -p tsconfig.json
