#!/usr/bin/env bash
# The unit tests, cross-compiled for the Pi and run under qemu-user (the runners in
# .cargo/config.toml): aarch64 and armv7, with the V4L2 source built in. Installs the cross
# toolchains, libc headers, qemu-user and libclang (Debian) and the rustup targets when missing.
#
#   scripts/cross-test.sh [aarch64|armv7 ...]     (default: both)
#
# Uses target/cross as its own target directory, so it can run beside other cargo builds.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
. scripts/lib.sh
cross_install --libclang --qemu "${targets[@]}" || exit 2
export CARGO_TARGET_DIR="$PWD/target/cross"
status=0
for t in "${targets[@]}"; do
  triple=$(cross_triple "$t")
  ensure_rust_target --brief "$triple"
  echo "== unit tests for $triple under $(grep -A2 "\[target.$triple\]" .cargo/config.toml | awk -F'"' '/runner/ {print $2}')"
  log="$CARGO_TARGET_DIR/test-$triple.log"
  mkdir -p "$CARGO_TARGET_DIR"
  if ! cargo test --locked --features v4l2 --target "$triple" --lib >"$log" 2>&1; then
    status=1
    tail -n 40 "$log"
  fi
  grep -E '^test result|FAILED|panicked' "$log" || true
done
exit "$status"
