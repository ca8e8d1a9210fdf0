#!/usr/bin/env bash
# Fuzzes the HTTP request parser and router, the config parser, the MJPEG splitter and the RTSP
# server (requests through a real connection, in process) with
# cargo-fuzz (libFuzzer, AddressSanitizer), each for SECONDS, starting from the seed corpus in
# fuzz/seeds/<target>/. Prints runs, coverage and corpus size per target; a crash fails the run
# and leaves the input in target/fuzz-artifacts/<target>/ — copy it to fuzz/regressions/<target>/
# once fixed, and `cargo test` (tests/it/fuzz_regressions.rs) replays it for good.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 s each, all five targets)
#   scripts/fuzz.sh --build                   (only install cargo-fuzz and build the targets)
#
# cargo-fuzz passes a few -Z flags (sanitizer, coverage instrumentation); the machine has the
# stable toolchain only, and RUSTC_BOOTSTRAP=1 lets it accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
if [ "${1:-}" = --build ]; then build_only=1; shift; fi
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(http_request config mjpeg rtsp_request whep)
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (crates.io)"
  cargo install --locked --quiet cargo-fuzz@0.13.2
fi
root=$(pwd)
echo "== building the fuzz targets"
(cd fuzz && cargo fuzz build -O 2>&1 | tail -n 1)
[ "$build_only" = 0 ] || exit 0
status=0
summary=()
for t in "${targets[@]}"; do
  corpus="$root/target/fuzz-corpus/$t"
  artifacts="$root/target/fuzz-artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="$artifacts/fuzz.log"
  echo "== $t for ${secs} s"
  # New inputs go to target/fuzz-corpus (not committed); the seeds are read only.
  if (cd fuzz && cargo fuzz run -O "$t" "$corpus" "$root/fuzz/seeds/$t" -- \
        -max_total_time="$secs" -artifact_prefix="$artifacts/" -print_final_stats=1) >"$log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || echo "?")
    summary+=("$t: $runs runs in ${secs} s, coverage $cov, corpus $(ls "$corpus" | wc -l) inputs, no crash")
  else
    status=1
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 || tail -n 30 "$log"
    summary+=("$t: CRASH (input in $artifacts/, log $log)")
  fi
done
echo
printf 'fuzz: %s\n' "${summary[@]}"
exit "$status"
