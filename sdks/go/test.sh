#!/usr/bin/env bash
# The Go SDK's tests against a real herald ($HERALD_BIN, default
# <repo>/target/debug/herald): vet + gofmt, `go test -race` (each test
# starts its own server), then the examples and a Go→Go interop round
# against one more server started here.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
export HERALD_BIN="${HERALD_BIN:-$ROOT/target/debug/herald}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
[[ -x "$HERALD_BIN" ]] || { echo "no herald at $HERALD_BIN: cargo build -p herald-cli or set HERALD_BIN" >&2; exit 1; }

echo "==> go vet, gofmt"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[[ -z "$unformatted" ]] || { echo "not gofmt-clean: $unformatted" >&2; exit 1; }

echo "==> go test -race"
nice go test -race -count=1 ./...

echo "==> examples and interop agent against $HERALD_BIN"
./build.sh
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=$(mktemp -d)
"$HERALD_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level warn --metrics-listen off &
HERALD_PID=$!
trap 'kill $HERALD_PID 2>/dev/null; wait $HERALD_PID 2>/dev/null; rm -rf "$DATA"' EXIT
export HERALD_ENDPOINT="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null && break
  sleep 0.1
done
# Twice each: the examples use fixed topics and subscriptions, and a run
# must not be confused by what earlier runs left there.
for example in signup routeallocation; do
  for run in 1 2; do
    echo "--> examples/$example (run $run)"
    nice go run ./examples/$example
  done
done
echo "--> interop go -> go"
TOPIC="interop.go.$RANDOM"
./interop.sh produce --endpoint "$HERALD_ENDPOINT" --topic "$TOPIC" --run-id r1 --count 20 > /tmp/herald-go-produced.$$
./interop.sh consume --endpoint "$HERALD_ENDPOINT" --topic "$TOPIC" --subscription s --type exclusive --count 20 --timeout-s 30 > /tmp/herald-go-consumed.$$
python3 - /tmp/herald-go-produced.$$ /tmp/herald-go-consumed.$$ <<'PY'
import json, sys
produced = {r["seq"]: r for r in map(json.loads, open(sys.argv[1]))}
consumed = list(map(json.loads, open(sys.argv[2])))
assert len(produced) == 20 and len(consumed) == 20, (len(produced), len(consumed))
for c in consumed:
    seq = int(c["event"].get("seq", "0"))
    p = produced[seq]
    assert c["id"] == p["id"] and c["trace_id"] == p["trace_id"], (c, p)
    assert c["attributes"]["interop-producer"] == "go" and c["event"]["big"] == str(2**64 - 1 - seq)
print("interop go -> go: 20 events, ids and trace ids match")
PY
rm -f /tmp/herald-go-produced.$$ /tmp/herald-go-consumed.$$
echo "Go SDK: all tests passed"
