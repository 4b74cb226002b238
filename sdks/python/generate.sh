#!/usr/bin/env bash
# Regenerates the Python code of sdks/python; called by scripts/generate.sh,
# which sets PROTOC (grpcio-tools' protoc), PROTOC_GEN_HERALD, HERALD_PROTO,
# INTEROP_PROTO and EXAMPLES_PROTO.
#
#   src/herald/v1/     Herald's API: *_pb2.py, *_pb2.pyi, *_pb2_grpc.py
#   interop/gen/       herald.interop.v1 messages + protoc-gen-herald bindings
#   examples/gen/      acme.signup.v1 / acme.transport.v1, likewise
set -euo pipefail
cd "$(dirname "$0")"
: "${PROTOC:?run scripts/generate.sh from the repository root}"
: "${PROTOC_GEN_HERALD:?}" "${HERALD_PROTO:?}" "${INTEROP_PROTO:?}" "${EXAMPLES_PROTO:?}"

# API stubs. The generated modules import each other as `herald.v1.x_pb2`,
# so they live inside the SDK package `herald`.
find src/herald/v1 -name '*_pb2*.py*' -delete
(cd "$HERALD_PROTO" && "$PROTOC" -I. --python_out="$OLDPWD/src" --pyi_out="$OLDPWD/src" \
  --grpc_python_out="$OLDPWD/src" herald/v1/*.proto)

# Event types: messages + typed bindings. Their imports of
# `herald.v1.options_pb2` resolve to the SDK package.
gen_events() { # proto_root out_dir files...
  local root=$1 out=$2
  shift 2
  rm -rf "$out"
  mkdir -p "$out"
  (cd "$root" && "$PROTOC" -I. -I"$HERALD_PROTO" --python_out="$OLDPWD/$out" --pyi_out="$OLDPWD/$out" \
    --plugin=protoc-gen-herald="$PROTOC_GEN_HERALD" --herald_out=lang=python:"$OLDPWD/$out" "$@")
}
gen_events "$INTEROP_PROTO" interop/gen herald/interop/v1/interop.proto
gen_events "$EXAMPLES_PROTO" examples/gen acme/signup/v1/signup.proto acme/transport/v1/transport.proto
