#!/usr/bin/env bash
# Runs every Fuzz target in the module for FUZZTIME (default 3s) each.
set -euo pipefail
FUZZTIME=${FUZZTIME:-3s}
n=0
while IFS= read -r file; do
  dir=$(dirname "$file")
  for fn in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(f \*testing\.F\)' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/'); do
    echo "fuzz: ./$dir $fn ($FUZZTIME)"
    go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$FUZZTIME" "./$dir" >/tmp/fuzz.$$.log 2>&1 || { cat /tmp/fuzz.$$.log; echo "fuzz: $fn in ./$dir FAILED"; exit 1; }
    n=$((n+1))
  done
done < <(git ls-files '*_test.go' 2>/dev/null | xargs grep -l '^func Fuzz' | sort)
rm -f /tmp/fuzz.$$.log
echo "fuzz: $n targets passed"
