#!/usr/bin/env bash
# Regenerates the Go SDK's generated code; run through scripts/generate.sh,
# which sets PROTOC, TOOLS_BIN, PROTOC_GEN_HERALD, HERALD_PROTO,
# INTEROP_PROTO and EXAMPLES_PROTO.
#
#   heraldpb/               Herald's API (protoc-gen-go + protoc-gen-go-grpc)
#   internal/interoppb/     the interop event (protoc-gen-go + protoc-gen-herald)
#   examples/signuppb/      acme.signup.v1      (protoc-gen-go + protoc-gen-herald)
#   examples/transportpb/   acme.transport.v1   (protoc-gen-go + protoc-gen-herald)
set -euo pipefail
cd "$(dirname "$0")"
: "${PROTOC:?run scripts/generate.sh}" "${TOOLS_BIN:?}" "${PROTOC_GEN_HERALD:?}"
: "${HERALD_PROTO:?}" "${INTEROP_PROTO:?}" "${EXAMPLES_PROTO:?}"

MODULE=github.com/herald-broker/herald/sdks/go
GO_PLUGINS=(--plugin=protoc-gen-go="$TOOLS_BIN/protoc-gen-go"
            --plugin=protoc-gen-go-grpc="$TOOLS_BIN/protoc-gen-go-grpc"
            --plugin=protoc-gen-herald="$PROTOC_GEN_HERALD")

rm -rf heraldpb internal/interoppb examples/signuppb examples/transportpb
mkdir -p heraldpb internal/interoppb examples/signuppb examples/transportpb

# Herald's API.
(cd "$HERALD_PROTO" && ls herald/v1/*.proto) | sort > /tmp/herald-go-protos.$$
mapfile -t API < /tmp/herald-go-protos.$$
rm -f /tmp/herald-go-protos.$$
"$PROTOC" "${GO_PLUGINS[@]}" -I"$HERALD_PROTO" \
  --go_out=. --go_opt=module=$MODULE \
  --go-grpc_out=. --go-grpc_opt=module=$MODULE \
  "${API[@]}"

# Event types: message code plus Herald's typed bindings.
"$PROTOC" "${GO_PLUGINS[@]}" -I"$HERALD_PROTO" -I"$INTEROP_PROTO" \
  --go_out=. --go_opt=module=$MODULE \
  --herald_out=lang=go,module=$MODULE:. \
  herald/interop/v1/interop.proto
"$PROTOC" "${GO_PLUGINS[@]}" -I"$HERALD_PROTO" -I"$EXAMPLES_PROTO" \
  --go_out=. --go_opt=module=$MODULE \
  --herald_out=lang=go,module=$MODULE:. \
  acme/signup/v1/signup.proto acme/transport/v1/transport.proto

gofmt -l heraldpb internal/interoppb examples/signuppb examples/transportpb | { ! grep . ; } || {
  echo "generated Go code is not gofmt-clean" >&2; exit 1; }
