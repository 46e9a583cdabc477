#!/usr/bin/env bash
# Runs every Fuzz target in the module for FUZZTIME (default 3s) each.
# Each package's test binary is built once and run from the package directory
# (so testdata/fuzz seeds are found), which keeps the whole pass to minutes.
set -euo pipefail
FUZZTIME=${FUZZTIME:-3s}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
start=$SECONDS
dirs=$(git ls-files '*_test.go' 2>/dev/null | xargs grep -l '^func Fuzz' | xargs -n1 dirname | sort -u)
total=$(git ls-files '*_test.go' | xargs grep -hoE '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' | wc -l)
for dir in $dirs; do
  bin="$work/$(echo "$dir" | tr / _).test"
  # -fuzz at build time adds the coverage instrumentation that guides the fuzzer.
  go test -c -fuzz=. -o "$bin" "./$dir"
  for fn in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(f \*testing\.F\)' "$dir"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/'); do
    n=$((n+1))
    echo "fuzz [$n/$total]: ./$dir $fn ($FUZZTIME)"
    ok=0
    for attempt in 1 2; do
      if (cd "$root/$dir" && "$bin" -test.run='^$' -test.fuzz="^${fn}\$" -test.fuzztime="$FUZZTIME" \
          -test.fuzzcachedir="$work/cache" >"$work/log" 2>&1); then
        ok=1
        break
      fi
      # Go 1.26's fuzzing coordinator can report its own -fuzztime deadline
      # as a failure when the machine is loaded (Go issue 75804, fixed
      # in Go 1.27); no failing input is written then. Such a run is retried
      # once; a run that wrote a failing input is never retried.
      if grep -q 'Failing input written' "$work/log" || ! grep -q 'context deadline exceeded' "$work/log"; then
        break
      fi
      echo "fuzz: $fn: the engine hit its own deadline without a failing input; retrying once"
    done
    if [ $ok = 0 ]; then
      cat "$work/log"
      echo "fuzz: $fn in ./$dir FAILED (a failing input is saved under ./$dir/testdata/fuzz/$fn)"
      exit 1
    fi
  done
done
echo "fuzz: $n targets passed in $((SECONDS-start))s"
