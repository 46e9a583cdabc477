#!/bin/sh
# build.sh rebuilds every committed .wasm model from source, deterministically:
# the C reference models with clang/lld (wasm32, SIMD128, no libc, no imports)
# and the Go model with GOOS=wasip1. `make wasm` runs it and `make check`
# fails when its output differs from the committed files.
#
#   OUT_DIR=dir ./build.sh   writes the modules to dir instead of this directory
#   CLANG=clang-14       selects the compiler (default clang, else clang-14)
set -eu
cd "$(dirname "$0")"
OUT=${OUT_DIR:-.}
mkdir -p "$OUT"
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null 2>&1 || CLANG=clang-14
CFLAGS="--target=wasm32 -O3 -msimd128 -mbulk-memory -nostdlib -ffreestanding -fno-ident
 -Wall -Wextra -Werror
 -Wl,--no-entry -Wl,--strip-all -Wl,-z,stack-size=65536"
for m in logreg mlp cnn; do
	# shellcheck disable=SC2086
	"$CLANG" $CFLAGS -o "$OUT/$m.wasm.tmp" "c/$m.c"
	chmod 0644 "$OUT/$m.wasm.tmp"
	mv "$OUT/$m.wasm.tmp" "$OUT/$m.wasm"
done
# the SIMD peak kernel of the peer benchmark (not a model: kept out of the
# embedded model list, in bench/)
PEAK_OUT=${OUT_DIR:-bench}
mkdir -p "$PEAK_OUT"
# shellcheck disable=SC2086
"$CLANG" $CFLAGS -o "$PEAK_OUT/simdpeak.wasm.tmp" c/simdpeak.c
chmod 0644 "$PEAK_OUT/simdpeak.wasm.tmp"
mv "$PEAK_OUT/simdpeak.wasm.tmp" "$PEAK_OUT/simdpeak.wasm"
GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-s \
	-buildmode=c-shared -o "$OUT/gologreg.wasm.tmp" ./go/gologreg
chmod 0644 "$OUT/gologreg.wasm.tmp"
mv "$OUT/gologreg.wasm.tmp" "$OUT/gologreg.wasm"
