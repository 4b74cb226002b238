#!/usr/bin/env bash
# Regenerates every checked-in generated file: the Go, Python and TypeScript
# stubs of Herald's API (proto/herald/v1) in each SDK, and the typed
# producers/consumers protoc-gen-herald emits for the example and interop
# event types. Installs its pinned tools under target/tools on first use.
#
#   scripts/generate.sh           regenerate
#   scripts/generate.sh --check   regenerate, then fail if anything differs
#                                 from what is committed (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

GRPCIO_TOOLS_VERSION=1.85.1        # its protoc is the one protoc used for every language
PROTOC_GEN_GO_VERSION=v1.36.12     # google.golang.org/protobuf
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2  # google.golang.org/grpc/cmd/protoc-gen-go-grpc

TOOLS="$ROOT/target/tools"
mkdir -p "$TOOLS/bin"
export TOOLS_BIN="$TOOLS/bin"

if [[ ! -x "$TOOLS/protoc-venv/bin/python" ]] || ! "$TOOLS/protoc-venv/bin/python" -c "import grpc_tools" 2>/dev/null; then
  python3 -m venv "$TOOLS/protoc-venv"
  "$TOOLS/protoc-venv/bin/pip" install --quiet "grpcio-tools==${GRPCIO_TOOLS_VERSION}"
fi
# `$PROTOC ARGS...` behaves like protoc (grpcio-tools bundles protoc with the
# python and grpc_python generators built in; other plugins via --plugin).
PROTOC_WRAPPER="$TOOLS/bin/protoc"
cat > "$PROTOC_WRAPPER" <<WRAP
#!/usr/bin/env bash
GRPC_TOOLS_PROTO=\$("$TOOLS/protoc-venv/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
exec "$TOOLS/protoc-venv/bin/python" -m grpc_tools.protoc -I"\$GRPC_TOOLS_PROTO" "\$@"
WRAP
chmod +x "$PROTOC_WRAPPER"
export PROTOC="$PROTOC_WRAPPER"

install_go_tool() { # name module@version
  if [[ ! -x "$TOOLS_BIN/$1" ]] || [[ "$(cat "$TOOLS_BIN/$1.version" 2>/dev/null)" != "$2" ]]; then
    GOBIN="$TOOLS_BIN" GOFLAGS=-buildvcs=false go install "$2"
    echo "$2" > "$TOOLS_BIN/$1.version"
  fi
}
install_go_tool protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
install_go_tool protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"

cargo build --quiet --locked -p herald-codegen --bin protoc-gen-herald
export PROTOC_GEN_HERALD="$ROOT/target/debug/protoc-gen-herald"
export HERALD_PROTO="$ROOT/proto"                 # herald/v1/*.proto
export INTEROP_PROTO="$ROOT/tests/interop/proto"  # herald/interop/v1/interop.proto
export EXAMPLES_PROTO="$ROOT/examples-proto/proto" # acme/signup/v1/signup.proto

for sdk in go python typescript; do
  if [[ -x "sdks/$sdk/generate.sh" ]]; then
    echo "==> generating for sdks/$sdk"
    "sdks/$sdk/generate.sh"
  fi
done

if [[ "${1:-}" == "--check" ]]; then
  if ! git diff --exit-code --stat -- sdks || [[ -n "$(git ls-files --others --exclude-standard -- sdks)" ]]; then
    git ls-files --others --exclude-standard -- sdks
    echo "generated code is out of date: run scripts/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "generated code is up to date"
fi
