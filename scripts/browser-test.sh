#!/usr/bin/env bash
# The dashboard in a real headless Chromium against the real binary (tests/browser/): the
# dashboard test, the history chart's (history.test.mjs, about 1 min, on a debug build: its test
# knob shortens the history's minute), the Controls section's (controls.test.mjs, about 30 s, on
# the debug build too), then the WebRTC live view's (webrtc.test.mjs, about 1.5 min).
# Installs what it needs on a fresh Debian machine: Debian's chromium (apt) and playwright-core
# (npm, which only drives /usr/bin/chromium: no browser is ever downloaded). Node and npm are
# expected on the machine.
#
#   scripts/browser-test.sh                        # the full run: 12,000 polls at 50 ms (~11 min)
#   DASHBOARD_POLLS=1000 scripts/browser-test.sh   # a short run
#   UPDATE_SCREENSHOTS=1 scripts/browser-test.sh   # also copy the screenshots to docs/screenshots/
#
# Screenshots go to target/browser-artifacts/ (ARTIFACTS_DIR overrides it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)

log() { printf '\n== %s\n' "$*"; }

log "chromium"
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq chromium >/dev/null
fi
# Debian's launcher script prints a harmless shell warning on some machines; keep it off the log.
/usr/bin/chromium --version 2>/dev/null
command -v node >/dev/null || { echo "node is needed (Node.js 20 or newer)" >&2; exit 1; }
echo "node $(node --version), npm $(npm --version 2>/dev/null)"

log "playwright-core (npm)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm_log=$(mktemp)
trap 'rm -f "$npm_log"' EXIT
npm_status=0
if [ -f tests/browser/package-lock.json ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) >"$npm_log" 2>&1 || npm_status=$?
else
  (cd tests/browser && npm install --no-audit --no-fund --loglevel=error) >"$npm_log" 2>&1 || npm_status=$?
fi
grep -v 'Unknown user config' "$npm_log" || true
[ "$npm_status" -eq 0 ] || { echo "npm failed (status $npm_status)" >&2; exit 1; }
[ -d tests/browser/node_modules/playwright-core ] || { echo "npm did not install playwright-core" >&2; exit 1; }

log "build"
cargo build --release ${CAMJOBD_FEATURES:+--features "$CAMJOBD_FEATURES"} --bin camjobd 2>&1 | tail -n 2
cargo build ${CAMJOBD_FEATURES:+--features "$CAMJOBD_FEATURES"} --bin camjobd 2>&1 | tail -n 2

log "browser test (DASHBOARD_POLLS=${DASHBOARD_POLLS:-12000})"
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-$root/target/browser-artifacts}"
export CAMJOBD_BIN="${CAMJOBD_BIN:-$root/target/release/camjobd}"
mkdir -p "$ARTIFACTS_DIR"
status=0
# The spec reporter prints each test's console lines (the figures) and a pass/fail summary
# (scripts/test.sh adds up the "ℹ pass N" / "ℹ fail N" lines of every file). One file after the
# other, never at once: the WebRTC test measures latency and frame rates.
(cd tests/browser && node --test --test-reporter=spec dashboard.test.mjs) || status=$?
log "browser test: the history chart"
(cd tests/browser && node --test --test-reporter=spec history.test.mjs) || status=$?
log "browser test: the controls section"
(cd tests/browser && node --test --test-reporter=spec controls.test.mjs) || status=$?
log "browser test: WebRTC live view (WEBRTC_SECONDS=${WEBRTC_SECONDS:-30})"
(cd tests/browser && node --test --test-reporter=spec webrtc.test.mjs) || status=$?

shots=$(ls "$ARTIFACTS_DIR"/*.png 2>/dev/null || true)
if [ -n "$shots" ]; then
  echo "screenshots (CI artifacts): $ARTIFACTS_DIR"
  if [ "${UPDATE_SCREENSHOTS:-0}" = 1 ] && [ "$status" -eq 0 ]; then
    mkdir -p docs/screenshots
    cp $shots docs/screenshots/
    echo "copied to docs/screenshots/"
  fi
fi
echo "browser test: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s"
exit "$status"
