#!/usr/bin/env bash
# Prints camjobd's figures; asserts nothing. Usage: scripts/bench.sh [SECONDS]   (default 10)
#  1. capture path: pass-through frames/s (100 KB JPEGs, unlimited rate) and allocations/frame
#     for pass-through and encoding (examples/bench_capture.rs);
#  2. HTTP: /api/status and latest.jpg requests/s under wrk with 64 connections, and the frames
#     a 30 fps job lost while that load ran.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --quiet --bin camjobd --example bench_capture
echo "== capture path"
./target/release/examples/bench_capture "$((secs / 2 > 2 ? secs / 2 : 2))"

echo "== HTTP under wrk -c64 while a 30 fps job runs"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/config.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0", "workers": 4, "queue": 64 },
  "storage": { "dir": "$work/data" },
  "log": { "level": "warn" },
  "cameras": [ { "name": "cam0", "source": { "kind": "synthetic", "width": 640, "height": 480, "fps": 30 },
                 "snapshot_interval_ms": 1000 } ]
}
JSON
./target/release/camjobd --config "$work/config.json" > "$work/out" 2> "$work/err" &
pid=$!
for _ in $(seq 100); do grep -q 'http://' "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's#.*http://\([^/]*\)/.*#\1#p' "$work/out")
[ -n "$addr" ] || { echo "camjobd did not start"; cat "$work/err"; exit 1; }
frames() { curl -s "http://$addr/api/cameras/cam0" | python3 -c 'import json,sys; j=json.load(sys.stdin)["job"]; print(j["frames_captured"], j["frames_dropped"])'; }
until [ "$(curl -s "http://$addr/api/cameras/cam0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["state"])')" = RUNNING ]; do sleep 0.1; done
sleep 1.5  # let the first snapshot exist

for path in /api/status /api/cameras/cam0/latest.jpg; do
  read -r f0 d0 < <(frames)
  t0=$(date +%s.%N)
  wrk -t2 -c64 -d"${secs}s" --latency "http://$addr$path" > "$work/wrk" 2>&1 || true
  t1=$(date +%s.%N)
  read -r f1 d1 < <(frames)
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk")
  errs=$(grep -E 'Non-2xx|Socket errors' "$work/wrk" | tr '\n' ' ' || true)
  python3 - "$path" "$rps" "$p50" "$p99" "$f0" "$f1" "$d0" "$d1" "$t0" "$t1" "$errs" <<'PY'
import sys
path, rps, p50, p99, f0, f1, d0, d1, t0, t1, errs = sys.argv[1:]
expected = 30 * (float(t1) - float(t0))
got = int(f1) - int(f0)
lost = max(0, round(expected - got))
print(f"{path}: {float(rps):.0f} requests/s (p50 {p50}, p99 {p99}) {errs.strip()}")
print(f"  30 fps job during the load: {got} frames in {float(t1)-float(t0):.1f} s (expected {expected:.0f}); "
      f"lost {lost}; dropped {int(d1)-int(d0)}")
PY
done
