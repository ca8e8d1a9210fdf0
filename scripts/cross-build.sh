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
export_libclang_path
for t in "${targets[@]}"; do
  triple=$(cross_triple "$t")
  sysroot=/usr/$(cross_gnu_type "$t")
  ensure_rust_target "$triple"
  echo "== $triple"
  # bindgen parses the target's headers: point clang at the cross sysroot.
  BINDGEN_EXTRA_CLANG_ARGS="--sysroot=$sysroot -I$sysroot/include" \
    cargo build --locked --release --features v4l2 --target "$triple" --bin camjobd 2>&1 | tail -n 1
  bin="target/$triple/release/camjobd"
  glibc=$(objdump -T "$bin" 2>/dev/null | grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sort -uV | tail -n 1 || true)
  printf '%s: %s bytes (%s KiB), needs %s\n' "$bin" "$(stat -c %s "$bin")" "$(( $(stat -c %s "$bin") / 1024 ))" "${glibc:-?}"
done
