#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
# Used by CI (.ci/run) and by people: `scripts/test.sh`.
#
# Steps (each SKIP_<NAME>=1 leaves one out for a quick local run):
#   format, build and clippy (with and without the v4l2 feature), unit and integration tests,
#   CROSS   unit tests for aarch64 and armv7 under qemu-user (in the background, niced, while
#           the browser test mostly waits),
#   BROWSER the dashboard in headless Chromium (DASHBOARD_POLLS),
#   SOAK    5 minutes (SOAK_SECONDS),
#   VM      vivid in a qemu VM + the ustreamer benchmark (BENCH_S, 10 s per run here),
#   POWERCUT power cuts on ext4 in a qemu VM (POWER_CUTS, 4 here; the README reports 50),
#   PACKAGE the amd64 .deb: lintian, install/upgrade/purge in a throwaway Debian root,
#   FUZZ    20 s per fuzz target (FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

log() { printf '\n== %s  (%d s)\n' "$*" "$(( $(date +%s) - start ))"; }
# SKIP_<NAME>=1 (an indirect expansion: the variable named SKIP_<NAME>).
skip() { local var="SKIP_$1"; [ "${!var:-0}" = 1 ]; }

. scripts/lib.sh
# What the steps write that the final line counts (cargo's and node's results, one line per
# script), the background job's log, and the background job itself.
out=$(mktemp)
cross_log=$(mktemp)
fuzz_build_log=$(mktemp)
cross_pid=""
trap 'rm -f "$out" "$cross_log" "$fuzz_build_log"; [ -z "$cross_pid" ] || kill "$cross_pid" 2>/dev/null || true' EXIT
status=0
# The release binary of the browser test, the soak and the VM test is one build, with V4L2.
export CAMJOBD_FEATURES=v4l2
# The tests that drive real clients (ffmpeg) or move the wall clock (libfaketime) must not
# skip here.
export CAMJOBD_REQUIRE_CLIENTS=1 CAMJOBD_REQUIRE_FAKETIME=1
# NASM (installed by the first step, before the first build) gives libjpeg-turbo its x86 SIMD
# code; a unit test checks that the build has it.
export CAMJOBD_REQUIRE_SIMD=1

# --- The steps' commands, in the order of the table below.

# One place installs the Debian packages, so that later steps never run two apt-gets at once
# (the cross tests run beside the browser test). The scripts still install what is missing
# when run on their own.
packages() {
  local want missing p
  want=("$(libclang_package)" ffmpeg nasm faketime mosquitto openssl gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav python3-venv libsodium23)
  skip BROWSER || want+=(chromium)
  skip SOAK || want+=(gnuplot-nox)
  skip VM || want+=(qemu-system-x86 busybox-static cpio kmod v4l-utils ustreamer libjpeg-turbo-progs)
  skip POWERCUT || want+=(qemu-system-x86 busybox-static cpio kmod e2fsprogs libjpeg-turbo-progs python3)
  skip PACKAGE || want+=(lintian mmdebstrap systemd-container)
  # shellcheck disable=SC2207 # package names are single words
  skip CROSS || want+=(qemu-user $(cross_packages aarch64) $(cross_packages armv7))
  missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  apt_install "${missing[@]}"
  # The WHEP tests' second WebRTC stack: aiortc (PyPI) in a venv under target/.
  CAMJOBD_WHEP_PYTHON=$(whep_python)
  export CAMJOBD_WHEP_PYTHON
  # Moonraker (PyPI) in a venv under target/, which the registration tests start and stop.
  CAMJOBD_MOONRAKER_PYTHON=$(moonraker_python)
  export CAMJOBD_MOONRAKER_PYTHON
}

format() {
  if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --check
  else
    echo "rustfmt not installed; skipping"
  fi
}

# The tests run with the v4l2 feature (the V4L2 source); the default build, which needs no
# libclang (`cargo run --release` on a fresh machine), is checked by clippy below (or by a
# plain `cargo check` where clippy is missing).
build() {
  cargo build --locked --all-targets --features v4l2
  if cargo clippy --version >/dev/null 2>&1; then
    log "clippy"
    cargo clippy --locked --all-targets --quiet -- -D warnings
    cargo clippy --locked --all-targets --features v4l2 --quiet -- -D warnings
  else
    # The whole output: a compile error must be readable in CI's log.
    cargo check --locked --all-targets
  fi
}

# Unit tests, and the integration tests: tests/it (one crate, one module per area) and
# tests/alloc.rs (alone in its process: it counts the process's allocations). They start real
# daemons with timing checks: a few at a time on 2 cores.
tests() {
  cargo test --locked --no-fail-fast --features v4l2 --lib --bins --tests -- --test-threads=4
}

# While the browser test mostly waits on its 50 ms polls, the cross tests and the fuzz targets'
# build run beside it at the lowest priority (their own target directories: no cargo lock).
background() {
  if ! skip CROSS || ! skip FUZZ; then
    log "started in the background, niced: cross tests (aarch64, armv7 under qemu-user), fuzz build"
    (
      cross_status=0
      if ! skip CROSS; then nice -n 19 bash scripts/cross-test.sh > "$cross_log" 2>&1 || cross_status=$?; fi
      if ! skip FUZZ; then nice -n 19 bash scripts/fuzz.sh --build > "$fuzz_build_log" 2>&1 || true; fi
      exit "$cross_status"
    ) &
    cross_pid=$!
  fi
}

# The dashboard in real headless Chromium (installs chromium and playwright-core itself).
browser() { bash scripts/browser-test.sh; }

# The soak in its short form: 5 minutes, about 290,000 frames (more than 2.5 hours at 30 fps);
# the third-vs-third memory check needs `SOAK_SECONDS=1500` (docs/testing.md "Soak").
soak() { bash scripts/soak.sh "${SOAK_SECONDS:-300}"; }

cross_wait() {
  if [ -n "$cross_pid" ]; then
    log "cross tests (and the fuzz build)"
    local cross_status=0
    wait "$cross_pid" || cross_status=$?
    cross_pid=""
    if ! skip CROSS; then
      cat "$cross_log"
      record cross "$cross_status"
    fi
  fi
}

# The real V4L2 path: vivid in a VM (boots Debian's kernel in qemu; TCG without KVM).
vm() { BENCH_S=${BENCH_S:-10} bash scripts/vm-test.sh; }

# Power cuts on a real filesystem (ext4 on a virtio disk in a VM); 50 with POWER_CUTS=50.
power_cuts() { BENCH_S=0 bash scripts/power-cut-test.sh "${POWER_CUTS:-4}"; }

# The amd64 Debian package: lintian, then installed, upgraded and purged in a throwaway
# Debian root (mmdebstrap). scripts/package.sh builds the arm64 and armhf ones too.
package() { bash scripts/package-test.sh; }

# Fuzzing for a short bounded time (cargo-fuzz, libFuzzer); longer with scripts/fuzz.sh SECONDS.
fuzz() { bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"; }

# Records a script's outcome as one pass or fail in the summary.
record() { # NAME STATUS
  if [ "$2" -eq 0 ]; then echo "$1: 1 passed, 0 failed" >> "$out"; else echo "$1: 0 passed, 1 failed" >> "$out"; status=$2; fi
}

# --- The steps, in order, one a line: SKIP | COUNT | COMMAND | TITLE
#   SKIP     the step's SKIP_<SKIP>=1 switch; - : the step always runs
#   COUNT    - : the command runs as it is and may log more itself; a failure ends the run
#            own : its output goes to the summary, which counts the tests in it; a failure
#                  fails the run
#            NAME : its output goes to the summary, which counts the step as one test NAME;
#                   a failure fails the run
#   COMMAND  one of the functions above
#   TITLE    its `== TITLE` line; - : none (the command logs when it has something to do)
steps=(
  "-        | -         | packages   | packages"
  "-        | -         | format     | format"
  "-        | -         | build      | build"
  "-        | own       | tests      | tests"
  "-        | -         | background | -"
  "BROWSER  | own       | browser    | browser"
  "SOAK     | soak      | soak       | soak"
  "-        | -         | cross_wait | -"
  "VM       | vm        | vm         | vm"
  "POWERCUT | power-cut | power_cuts | power cuts"
  "PACKAGE  | package   | package    | package"
  "FUZZ     | fuzz      | fuzz       | fuzz"
)

for row in "${steps[@]}"; do
  IFS='|' read -r switch count command title <<< "$row"
  # Each field without the blanks around it.
  read -r switch <<< "$switch"
  read -r count <<< "$count"
  read -r command <<< "$command"
  read -r title <<< "$title"
  if [ "$switch" != - ] && skip "$switch"; then continue; fi
  [ "$title" = - ] || log "$title"
  case $count in
    -) "$command" ;;
    own) "$command" 2>&1 | tee -a "$out" || status=$? ;;
    *)
      step_status=0
      "$command" 2>&1 | tee -a "$out" || step_status=$?
      record "$count" "$step_status"
      ;;
  esac
done

log "done"
awk '/^(soak|fuzz|vm|cross|power-cut|package): [01] passed/ { p += $2; f += $4 }
     /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^ℹ pass / { p += $3 } /^ℹ fail / { f += $3 }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$out"
exit "$status"
