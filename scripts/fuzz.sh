#!/usr/bin/env bash
# Runs every `go test -fuzz` target of the project for a while each.
#   scripts/fuzz.sh [duration]   (default 10s)
# Build tags come from $GOTAGS (default "dynamic", as in the Makefile).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
tags=${GOTAGS-dynamic}
for dir in proto controlplane worker sfu; do
  # Each "func FuzzX(" in a _test.go file is one target of its package.
  { grep -rl --include='*_test.go' '^func Fuzz' "$dir" || true; } | while read -r file; do
    pkg="./$(dirname "$file")"
    for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
      echo "fuzz: $pkg $target ($fuzztime)"
      go test -tags "$tags" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
    done
  done
done
