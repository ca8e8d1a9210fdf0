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
cross_install --qemu "${targets[@]}" || exit 2
for t in "${targets[@]}"; do
  triple=$(cross_triple "$t")
  ensure_rust_target "$triple"
  cargo build --locked --release --quiet --target "$triple" --example bench_encode
  echo "== $triple under qemu-user (emulated: compare the ratios)"
  # The runner from .cargo/config.toml (qemu with the cross sysroot).
  cargo run --locked --release --quiet --target "$triple" --example bench_encode -- --quick
done
