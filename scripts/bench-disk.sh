#!/usr/bin/env bash
# Bytes written to disk per hour by a 640x480, one-snapshot-per-second job on a static scene,
# with keep "all" versus keep "changed" (issue 5's benchmark). Prints figures; asserts nothing.
# Usage: scripts/bench-disk.sh [SECONDS]   (default 130, more than two keepalive periods; both jobs run side by side)
# Measured from /proc/PID/io write_bytes (bytes sent to the block device), with
# storage.fsync "always" so that writeback happens within the run instead of ~30 s later.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-130}
cargo build --release --quiet --bin camjobd --example bench_capture
work=$(mktemp -d "${TMPDIR:-/var/tmp}/camjobd-bench-disk.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# One static 640x480 frame, fed at 10 fps like a camera looking at a wall.
./target/release/examples/bench_capture --write-static-jpeg "$work/frame.jpg" 640 480

for keep in all changed; do
  cat > "$work/$keep.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0" },
  "storage": { "dir": "$work/data-$keep", "fsync": "always" },
  "log": { "level": "warn" },
  "cameras": [ { "name": "cam0",
    "source": { "kind": "pipe", "command": ["sh", "-c", "while :; do cat $work/frame.jpg; sleep 0.1; done"] },
    "snapshot_interval_ms": 1000,
    "store": { "keep": "$keep", "keepalive_s": 60 } } ]
}
JSON
  ./target/release/camjobd --config "$work/$keep.json" > "$work/$keep.out" 2> "$work/$keep.err" &
  pids+=($!)
done
sleep 2
wb() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
wc() { awk '/^wchar/ {print $2}' "/proc/$1/io"; }
a0=$(wb "${pids[0]}"); c0=$(wb "${pids[1]}"); aw0=$(wc "${pids[0]}"); cw0=$(wc "${pids[1]}")
sleep "$secs"
a1=$(wb "${pids[0]}"); c1=$(wb "${pids[1]}"); aw1=$(wc "${pids[0]}"); cw1=$(wc "${pids[1]}")
python3 - "$secs" "$a0" "$a1" "$c0" "$c1" "$aw0" "$aw1" "$cw0" "$cw1" "$work" <<'PY'
import sys, os
secs = float(sys.argv[1]); a0, a1, c0, c1, aw0, aw1, cw0, cw1 = map(int, sys.argv[2:10]); work = sys.argv[10]
per_hour = lambda d: d * 3600 / secs
def files(k):
    n = 0
    for root, _, fs in os.walk(f"{work}/data-{k}"):
        n += sum(1 for f in fs if f.endswith(".jpg"))
    return n
frame = os.path.getsize(f"{work}/frame.jpg")
print(f"static 640x480 scene ({frame} bytes per JPEG), 1 snapshot/s, {secs:.0f} s measured, fsync always:")
print(f"  keep all:     {per_hour(a1-a0)/1e6:8.1f} MB/hour to disk (write_bytes), {per_hour(aw1-aw0)/1e6:8.1f} MB/hour passed to write(); {files('all')} files")
print(f"  keep changed: {per_hour(c1-c0)/1e6:8.1f} MB/hour to disk (write_bytes), {per_hour(cw1-cw0)/1e6:8.1f} MB/hour passed to write(); {files('changed')} files")
if c1 - c0 > 0:
    print(f"  ratio all/changed: {(a1-a0)/(c1-c0):.1f}x")
PY
