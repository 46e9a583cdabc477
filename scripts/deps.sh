#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, when missing.
# As root it runs apt-get; otherwise it says what to install and fails.
set -euo pipefail
# --peers also installs the peer benchmark's PyTorch (python3-torch and its
# dependencies, several hundred MB): only `make bench-peers` asks for it, so
# `make test` never needs it.
peers=0
[ "${1:-}" = --peers ] && peers=1
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || command -v wasm-ld-14 >/dev/null || need+=(lld)
command -v wat2wasm >/dev/null || need+=(wabt)
command -v chromium >/dev/null || need+=(chromium)   # the console's browser test (cmd/coordinator)
if [ $peers = 1 ]; then
  /usr/bin/python3 -c 'import torch' 2>/dev/null || need+=(python3-torch)
  # Without an optimised BLAS, PyTorch's dense layers run on the reference
  # BLAS (libblas3) at a fraction of their speed: give the peer OpenBLAS.
  [ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ] || [ -e /usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3 ] ||
    need+=(libopenblas0-pthread)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "deps: protoc, mosquitto, clang, wasm-ld, wat2wasm and chromium are installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing Debian packages: ${need[*]}" >&2
  echo "deps: run as root, or: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "deps: installed ${need[*]}"
