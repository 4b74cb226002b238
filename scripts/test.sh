#!/usr/bin/env bash
# Runs Herald's whole test suite on a fresh machine: installs what the tests
# need (grpcurl from the Go module proxy), checks formatting and lints, then
# runs every Rust test — unit, storage, and end-to-end against real `herald`
# processes. Usage: scripts/test.sh   (from anywhere in the repo)
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_VERSION=v1.9.4

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

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# The disk-full and read-only-data-dir tests mount small tmpfs filesystems,
# which needs root (CI runs as root).
cargo test --workspace --locked

step "examples against a real herald process"
# The test suite already runs each example against an in-process broker;
# here they run as programs against `herald serve` on its own data dir.
cargo build -p herald-server --locked --bin herald
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
