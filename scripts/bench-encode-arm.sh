#!/usr/bin/env bash
# The encoding benchmark (examples/bench_encode.rs, in-process part) built for aarch64 and armv7
# and run under qemu-user: libjpeg-turbo's NEON path against the old `image` encoder, old vs
# new time per frame at 640x480 and 1280x720. qemu translates NEON into scalar host code, so
# only the ratios mean something; a Pi runs NEON natively. Prints figures, asserts nothing.
#
#   scripts/bench-encode-arm.sh [aarch64|armv7 ...]     (default: aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64)
. scripts/lib.sh
need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
for t in "${targets[@]}"; do
  case "$t" in
    aarch64) command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    armv7) command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    *) echo "unknown target $t (aarch64 or armv7)" >&2; exit 2 ;;
  esac
done
apt_install "${need[@]}"
for t in "${targets[@]}"; do
  case "$t" in
    aarch64) triple=aarch64-unknown-linux-gnu ;;
    armv7) triple=armv7-unknown-linux-gnueabihf ;;
  esac
  rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
  cargo build --locked --release --quiet --target "$triple" --example bench_encode
  echo "== $triple under qemu-user (emulated: compare the ratios)"
  # The runner from .cargo/config.toml (qemu with the cross sysroot).
  cargo run --locked --release --quiet --target "$triple" --example bench_encode -- --quick
done
