#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, when missing.
# As root it runs apt-get; otherwise it says what to install and fails.
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || command -v wasm-ld-14 >/dev/null || need+=(lld)
command -v wat2wasm >/dev/null || need+=(wabt)
command -v chromium >/dev/null || need+=(chromium)   # the console's browser test (cmd/coordinator)
if [ ${#need[@]} -eq 0 ]; then
  echo "deps: protoc, mosquitto, clang, wasm-ld and wat2wasm are installed"
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
