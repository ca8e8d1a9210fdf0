#!/usr/bin/env bash
# Debian packages of camjobd: camjobd_<version>_<arch>.deb for each target, checked by lintian.
#
#   scripts/package.sh [x86_64|aarch64|armv7 ...]     (default: all three)
#
# Installs cargo-deb (crates.io) and lintian (Debian) when missing; cross targets get their
# toolchains from scripts/cross-build.sh. Builds with the V4L2 source. Output:
# target/debian/camjobd_<version>_amd64.deb, target/<triple>/debian/camjobd_<version>_{arm64,armhf}.deb
# DEB_VERSION=0.1.0-2 overrides the package version (the upgrade test builds a newer one).
# A lintian error fails the script; warnings are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64 aarch64 armv7)
command -v lintian >/dev/null || apt_install lintian
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb@3.8.0
version_args=()
[ -n "${DEB_VERSION:-}" ] && version_args=(--deb-version "$DEB_VERSION")
for t in "${targets[@]}"; do
  if [ "$t" = x86_64 ]; then
    ensure_libclang
    export_libclang_path
    out=$(cargo deb --locked --features v4l2 "${version_args[@]}" 2>&1 | tail -n 1)
  else
    scripts/cross-build.sh "$t" >/dev/null
    triple=$(cross_triple "$t")
    # The binary was just built; cargo-deb packs it (and reads its dynamic dependencies).
    out=$(cargo deb --locked --no-build --target "$triple" "${version_args[@]}" 2>&1 | tail -n 1)
  fi
  deb=$out
  [ -f "$deb" ] || { echo "cargo deb failed for $t: $out" >&2; exit 1; }
  echo "== $deb: $(stat -c %s "$deb") bytes; $(dpkg-deb -f "$deb" Architecture) Depends: $(dpkg-deb -f "$deb" Depends)"
  # lintian runs as root here and says so: that line is not a finding.
  report=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true)
  [ -n "$report" ] && echo "$report"
  errors=$(grep -c '^E:' <<<"$report" || true)
  echo "lintian: $errors error(s), $(grep -c '^W:' <<<"$report" || true) warning(s)"
  [ "$errors" = 0 ] || exit 1
done
