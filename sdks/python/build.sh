#!/usr/bin/env bash
# Creates sdks/python/.venv with the pinned dependencies of requirements.lock
# and the SDK installed (editable). Idempotent: a second run only checks.
#
#   sdks/python/build.sh            build / check
#   sdks/python/build.sh --relock   re-resolve pyproject.toml into requirements.lock
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [[ "${1:-}" == "--relock" ]]; then
  rm -rf .venv-lock
  "$PY" -m venv .venv-lock
  .venv-lock/bin/pip install --quiet --upgrade pip
  .venv-lock/bin/pip install --quiet ".[dev]" "grpcio==1.85.1" "grpcio-health-checking==1.85.1" "protobuf==7.35.1"
  { echo "# Pinned dependencies of sdks/python (runtime + dev), from pyproject.toml;"
    echo "# grpcio and protobuf match the generator (grpcio-tools 1.85.1, protoc 35.1)."
    echo "# Regenerate with: sdks/python/build.sh --relock"
    .venv-lock/bin/pip freeze --exclude herald-sdk; } > requirements.lock
  rm -rf .venv-lock
fi

stamp=.venv/.herald-build-stamp
want="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && .venv/bin/python -c "import herald" 2>/dev/null; then
  exit 0
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp"
echo "sdks/python/.venv ready"
