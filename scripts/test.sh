#!/usr/bin/env bash
# Runs Herald's whole test suite on a fresh machine: installs what the tests
# need (grpcurl and grpc-health-probe from the Go module proxy, the pinned
# code generators, each SDK's dependencies), checks that generated code is
# up to date, formatting and lints, then runs every Rust test — unit,
# storage, end-to-end against real `herald` processes, and the
# cross-language matrix — and each SDK's own tests against a real server.
# Usage: scripts/test.sh   (from anywhere in the repo)
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.4
GRPC_HEALTH_PROBE_VERSION=v0.4.62

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
cargo --version
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

step "grpcurl ${GRPCURL_VERSION}"
TOOLS_BIN="$PWD/target/tools/bin"
mkdir -p "$TOOLS_BIN"
if [[ ! -x "$TOOLS_BIN/grpcurl" ]]; then
  command -v go >/dev/null || { echo "go not found: install Go from https://go.dev/dl to get grpcurl" >&2; exit 1; }
  GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}"
fi
export GRPCURL="$TOOLS_BIN/grpcurl"
"$GRPCURL" -version

step "grpc-health-probe ${GRPC_HEALTH_PROBE_VERSION}"
if [[ ! -x "$TOOLS_BIN/grpc-health-probe" ]]; then
  GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false go install "github.com/grpc-ecosystem/grpc-health-probe@${GRPC_HEALTH_PROBE_VERSION}"
fi
export GRPC_HEALTH_PROBE="$TOOLS_BIN/grpc-health-probe"

step "generated code is up to date"
scripts/generate.sh --check

step "SDK builds"
# Each SDK installs its own pinned dependencies and builds its interop agent.
INTEROP_LANGS=rust
for build in sdks/*/build.sh; do
  [[ -x "$build" ]] || continue
  sdk=$(basename "$(dirname "$build")")
  echo "--> sdks/$sdk"
  "$build"
  INTEROP_LANGS="$INTEROP_LANGS,$sdk"
done
export HERALD_INTEROP_LANGS="$INTEROP_LANGS"
echo "interop matrix languages: $HERALD_INTEROP_LANGS"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# The disk-full and read-only-data-dir tests mount small tmpfs filesystems,
# which needs root (CI runs as root).
cargo test --workspace --locked

step "SDK tests against a real herald process"
cargo build -p herald-cli --locked --bin herald
export HERALD_BIN="$PWD/target/debug/herald"
for test in sdks/*/test.sh; do
  [[ -x "$test" ]] || continue
  echo "--> $test"
  "$test"
done

step "examples against a real herald process"
# The test suite already runs each example against an in-process broker;
# here they run as programs against `herald serve` on its own data dir.
EXAMPLES_DATA=$(mktemp -d)
EXAMPLES_PORT=50551
target/debug/herald serve --listen "127.0.0.1:${EXAMPLES_PORT}" --data-dir "$EXAMPLES_DATA" \
  > "$EXAMPLES_DATA.log" 2>&1 &
HERALD_PID=$!
trap 'kill "$HERALD_PID" 2>/dev/null || true; wait "$HERALD_PID" 2>/dev/null || true; rm -rf "$EXAMPLES_DATA" "$EXAMPLES_DATA.log"' EXIT
for _ in $(seq 1 100); do
  "$GRPCURL" -plaintext "127.0.0.1:${EXAMPLES_PORT}" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 0.1
done
for example in user_signup event_sourcing route_allocation; do
  HERALD_ENDPOINT="http://127.0.0.1:${EXAMPLES_PORT}" cargo run -p herald-client --locked --example "$example"
done

step "all tests passed"
