#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
# Used by CI (.ci/run) and by people: `scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Tools the tests use from the system: sh, cat, sleep, kill (coreutils, procps).
need=()
command -v kill >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

log "format"
if rustup component list --installed 2>/dev/null | grep -q rustfmt; then
  cargo fmt --check
else
  echo "rustfmt not installed; skipping"
fi

log "build"
cargo build --all-targets --locked 2>&1 | tail -n 3

log "tests"
# Integration tests start real daemons with timing checks; a few at a time on 2 cores.
cargo test --locked --all-targets -- --test-threads=4
