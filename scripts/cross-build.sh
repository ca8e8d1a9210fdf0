#!/usr/bin/env bash
# Release binaries for the Pi: aarch64 (Pi 3/4/5/Zero 2 W on 64-bit Raspberry Pi OS) and armv7
# (32-bit Raspberry Pi OS). Installs the cross toolchains and libclang (Debian packages) and the
# rustup targets when missing, builds with the V4L2 source, and prints each binary's size and the
# newest glibc symbol version it needs (the oldest Raspberry Pi OS it runs on).
#
#   scripts/cross-build.sh [aarch64|armv7 ...]     (default: both)
#
# Output: target/<triple>/release/camjobd
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
. scripts/lib.sh
cross_install --libclang "${targets[@]}" || exit 2
# bindgen finds libclang-14 under /usr/lib/llvm-14 only through its versioned name.
if [ -z "${LIBCLANG_PATH:-}" ] && [ -d /usr/lib/llvm-14/lib ]; then export LIBCLANG_PATH=/usr/lib/llvm-14/lib; fi
for t in "${targets[@]}"; do
  triple=$(cross_triple "$t")
  case "$t" in
    aarch64) sysroot=/usr/aarch64-linux-gnu ;;
    armv7) sysroot=/usr/arm-linux-gnueabihf ;;
  esac
  rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
  echo "== $triple"
  # bindgen parses the target's headers: point clang at the cross sysroot.
  BINDGEN_EXTRA_CLANG_ARGS="--sysroot=$sysroot -I$sysroot/include" \
    cargo build --locked --release --features v4l2 --target "$triple" --bin camjobd 2>&1 | tail -n 1
  bin="target/$triple/release/camjobd"
  glibc=$(objdump -T "$bin" 2>/dev/null | grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sort -uV | tail -n 1 || true)
  printf '%s: %s bytes (%s KiB), needs %s\n' "$bin" "$(stat -c %s "$bin")" "$(( $(stat -c %s "$bin") / 1024 ))" "${glibc:-?}"
done
