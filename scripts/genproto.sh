#!/usr/bin/env bash
# Regenerates the Go code for proto/ with the pinned generators.
#   scripts/genproto.sh            write into proto/
#   scripts/genproto.sh --check    fail when the committed code is stale
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/.tools/bin:$PATH"
out="$root/proto"
if [ "${1:-}" = --check ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
cd "$root/proto"
protos=$(find . -name '*.proto' | sort)
protoc --proto_path=. \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  $protos
if [ "${1:-}" = --check ]; then
  stale=0
  for f in $(cd "$out" && find . -name '*.pb.go' | sort); do
    if ! cmp -s "$out/$f" "$root/proto/$f"; then
      echo "proto: $f is stale; run 'make proto' and commit the result" >&2
      stale=1
    fi
  done
  exit $stale
fi
