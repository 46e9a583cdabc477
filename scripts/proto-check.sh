#!/usr/bin/env bash
# Checks that the committed generated Go code (proto/**/*.pb.go) is what
# protoc and the protoc-gen-go pinned in go.mod (the `tool` line) generate
# from proto/**/*.proto today. Exits non-zero naming every stale, missing or
# orphaned .pb.go file.
#
#   scripts/proto-check.sh           check (make check)
#   scripts/proto-check.sh --write   regenerate in place (make proto)
#
# Needs protoc (Debian: protobuf-compiler) and the Go toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=check
case "${1:-}" in
  "") ;;
  --write) mode=write ;;
  *) echo "usage: $0 [--write]" >&2; exit 2 ;;
esac

command -v protoc >/dev/null || { echo "proto-check: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
plugin=$(go tool -n protoc-gen-go) || { echo "proto-check: protoc-gen-go is not a go.mod tool" >&2; exit 1; }
module=$(go list -m)

mapfile -t protos < <(find proto -name '*.proto' | LC_ALL=C sort)
[ ${#protos[@]} -gt 0 ] || { echo "proto-check: no .proto files under proto/" >&2; exit 1; }

gen() { # gen OUTDIR: generate Go for every .proto into OUTDIR/<path inside module>
  protoc --plugin=protoc-gen-go="$plugin" --go_out="$1" --go_opt=module="$module" -I proto "${protos[@]}"
}

if [ "$mode" = write ]; then
  gen .
  echo "proto-check: regenerated ${#protos[@]} .proto files with $(protoc --version)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gen "$tmp"

stale=()
while IFS= read -r f; do
  rel=${f#"$tmp"/}
  if [ ! -f "$rel" ]; then
    stale+=("$rel (missing: not generated into the tree)")
  elif ! cmp -s "$f" "$rel"; then
    stale+=("$rel (differs from regenerated)")
    diff -u "$rel" "$f" | head -n 20 >&2 || true
  fi
done < <(find "$tmp" -name '*.pb.go' | LC_ALL=C sort)
while IFS= read -r f; do
  [ -f "$tmp/$f" ] || stale+=("$f (orphan: no .proto generates it)")
done < <(find proto -name '*.pb.go' | LC_ALL=C sort)

if [ ${#stale[@]} -gt 0 ]; then
  echo "proto-check: generated code is stale; run scripts/proto-check.sh --write (make proto) and commit:" >&2
  printf '  %s\n' "${stale[@]}" >&2
  exit 1
fi
echo "proto-check: ${#protos[@]} .proto files, generated code up to date ($(protoc --version))"
