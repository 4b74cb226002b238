#!/usr/bin/env bash
# Regenerates the TypeScript SDK's generated code. Run through
# scripts/generate.sh, which provides PROTOC, PROTOC_GEN_HERALD, HERALD_PROTO,
# INTEROP_PROTO and EXAMPLES_PROTO.
#
# - src/gen/herald/v1/*_pb.ts: Herald's API (messages and service
#   descriptors that Connect calls), from protoc-gen-es; and
#   src/gen/herald/sdk/internal/v1/raw_pb.ts from proto/ (wire twins with
#   events left encoded, for the hand-written event codec).
# - gen/: the interop and example event types: protoc-gen-es messages plus
#   protoc-gen-herald's typed bindings (<file>_herald.ts). herald/v1/options
#   is generated there too because the event files import it.
#
# Relative imports end in `.js` (import_extension=js) in both generators, as
# Node's ESM resolution (module: NodeNext) requires.
set -euo pipefail
cd "$(dirname "$0")"
: "${PROTOC:?run this through scripts/generate.sh}"
: "${PROTOC_GEN_HERALD:?run this through scripts/generate.sh}"
if [[ ! -x node_modules/.bin/protoc-gen-es ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
ES_PLUGIN="--plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es"
ES_OPT="--es_opt=target=ts,import_extension=js"

rm -rf src/gen gen
mkdir -p src/gen gen

api_protos=$(cd "$HERALD_PROTO" && ls herald/v1/*.proto | LC_ALL=C sort)
# shellcheck disable=SC2086
"$PROTOC" -I"$HERALD_PROTO" "$ES_PLUGIN" --es_out=src/gen "$ES_OPT" $api_protos
# The SDK's own wire helper (see the file).
"$PROTOC" -Iproto -I"$HERALD_PROTO" "$ES_PLUGIN" --es_out=src/gen "$ES_OPT" herald/sdk/internal/v1/raw.proto

"$PROTOC" -I"$HERALD_PROTO" -I"$INTEROP_PROTO" -I"$EXAMPLES_PROTO" \
  "$ES_PLUGIN" --es_out=gen "$ES_OPT" \
  --plugin=protoc-gen-herald="$PROTOC_GEN_HERALD" --herald_out=gen --herald_opt=lang=typescript,import_extension=js \
  herald/v1/options.proto \
  herald/interop/v1/interop.proto \
  acme/signup/v1/signup.proto \
  acme/transport/v1/transport.proto
