#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
# Used by CI (.ci/run) and by people: `scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# The tests need only the Rust toolchain and sh/cat/sleep (coreutils), which every Debian
# machine has; rustfmt and clippy are used when installed.
log "format"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --check
else
  echo "rustfmt not installed; skipping"
fi

log "build"
cargo build --locked --all-targets 2>&1 | tail -n 3
if cargo clippy --version >/dev/null 2>&1; then
  log "clippy"
  cargo clippy --locked --all-targets --quiet -- -D warnings
fi

log "tests"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Integration tests start real daemons with timing checks: a few at a time on 2 cores.
status=0
cargo test --locked --lib --bins --tests -- --test-threads=4 2>&1 | tee "$out" || status=$?

# The dashboard in real headless Chromium (installs chromium and playwright-core itself).
# SKIP_BROWSER=1 leaves it out for a quick local run; DASHBOARD_POLLS shortens it.
if [ "${SKIP_BROWSER:-0}" != 1 ]; then
  log "browser"
  bash scripts/browser-test.sh 2>&1 | tee -a "$out" || status=$?
fi

# The soak in its short form: 5 minutes, about 350,000 frames (more than 3 hours at 30 fps).
# SKIP_SOAK=1 leaves it out for a quick local run.
if [ "${SKIP_SOAK:-0}" != 1 ]; then
  log "soak"
  soak_status=0
  bash scripts/soak.sh "${SOAK_SECONDS:-300}" 2>&1 | tee -a "$out" || soak_status=$?
  if [ "$soak_status" -eq 0 ]; then
    echo "soak: 1 passed, 0 failed" >> "$out"
  else
    echo "soak: 0 passed, 1 failed" >> "$out"
    status=$soak_status
  fi
fi

# Fuzzing for a short bounded time (cargo-fuzz, libFuzzer): 30 s per target here; longer runs
# with scripts/fuzz.sh SECONDS. SKIP_FUZZ=1 leaves it out.
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  log "fuzz"
  fuzz_status=0
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}" 2>&1 | tee -a "$out" || fuzz_status=$?
  if [ "$fuzz_status" -eq 0 ]; then
    echo "fuzz: 1 passed, 0 failed" >> "$out"
  else
    echo "fuzz: 0 passed, 1 failed" >> "$out"
    status=$fuzz_status
  fi
fi

awk '/^(soak|fuzz): [01] passed/ { p += $2; f += $4 }
     /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^ℹ pass / { p += $3 } /^ℹ fail / { f += $3 }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$out"
exit "$status"
