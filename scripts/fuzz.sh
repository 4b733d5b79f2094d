#!/usr/bin/env bash
# Runs every `go test -fuzz` target of the project for a while each.
#   scripts/fuzz.sh [budget]   (default 10s; a count such as 20000x works too)
# Build tags come from $GOTAGS (default "dynamic", as in the Makefile).
#
# It must neither stall nor flake:
#  - minimisation of a new crasher is bounded (-fuzzminimizetime), and each
#    target's test binary has a hard -timeout ($FUZZ_TIMEOUT, default 5m);
#  - Go's fuzzing coordinator can end a duration-bounded run with a bare
#    "context deadline exceeded" although nothing failed (golang/go#75804,
#    fixed in Go 1.27). Such a run wrote no failing input; it is run up to twice more.
#    Anything else, and above all a crasher (a "Failing input written to
#    testdata/fuzz/..." line), fails at once, and the input is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
tags=${GOTAGS-dynamic}
minimize=${FUZZ_MINIMIZE_TIME:-5s}
timeout=${FUZZ_TIMEOUT:-5m}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run_target PKG TARGET: one fuzzing run, its output shown and kept in $log.
run_target() {
  go test -tags "$tags" -run '^$' -fuzz "^$2\$" -fuzztime "$fuzztime" \
    -fuzzminimizetime "$minimize" -timeout "$timeout" "$1" 2>&1 | tee "$log"
}

# show_crashers PKG: print the failing inputs the last run wrote, so a CI log
# carries them even when the working tree is thrown away.
show_crashers() {
  local f
  for f in $(sed -n 's/.*Failing input written to \(testdata\/fuzz\/[^ ]*\).*/\1/p' "$log"); do
    echo "fuzz: failing input $1/$f (kept; commit it as a regression test once fixed):"
    sed 's/^/    /' "$1/$f" 2>/dev/null || echo "    (not readable)"
  done
}

for dir in proto controlplane worker sfu e2e; do
  # Each "func FuzzX(" in a _test.go file is one target of its package.
  for file in $(grep -rl --include='*_test.go' '^func Fuzz' "$dir" | sort || true); do
    pkg="./$(dirname "$file")"
    for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
      echo "fuzz: $pkg $target ($fuzztime)"
      if run_target "$pkg" "$target"; then continue; fi
      # Up to two more runs, only for the coordinator race: on 2 busy cores
      # it hit about one target of eight per run, so one retry alone would
      # still fail a CI run now and then. A real crasher is never retried.
      passed=false
      for again in 1 2; do
        grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written to' "$log" || break
        echo "fuzz: $target ended with a bare 'context deadline exceeded' and no failing input" \
          "(Go's coordinator race, golang/go#75804); running it again ($again of 2)"
        if run_target "$pkg" "$target"; then passed=true; break; fi
      done
      if $passed; then continue; fi
      show_crashers "$pkg"
      echo "fuzz: $pkg $target FAILED" >&2
      exit 1
    done
  done
done
