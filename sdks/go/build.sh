#!/usr/bin/env bash
# Builds the Go SDK's interop agent into sdks/go/bin/herald-interop.
# Dependencies are pinned in go.mod/go.sum (`go mod download` verifies
# them); rebuilding when nothing changed is a cache hit.
set -euo pipefail
cd "$(dirname "$0")"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
go mod download
mkdir -p bin
nice go build -trimpath -o bin/herald-interop ./cmd/herald-interop
