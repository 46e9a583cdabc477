#!/usr/bin/env bash
# Rebuilds the WASM models into a scratch copy and fails if any committed
# .wasm differs from what its sources build to.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
OUT_DIR="$tmp" bash "$root/wasm-models/build.sh"
status=0
for f in "$tmp"/*.wasm; do
  name=$(basename "$f")
  committed=$(find "$root/wasm-models" -name "$name" -not -path "$tmp/*" | head -1)
  if [ -z "$committed" ]; then echo "wasm-check: $name is built but not committed"; status=1; continue; fi
  if ! cmp -s "$f" "$committed"; then echo "wasm-check: $committed is stale: run 'make wasm'"; status=1; fi
done
[ $status -eq 0 ] && echo "wasm-check: committed .wasm files match their sources"
exit $status
