#!/usr/bin/env bash
# Prints camjobd's figures; asserts nothing. Usage: scripts/bench.sh [SECONDS]   (default 10)
#  1. capture path: pass-through frames/s (100 KB JPEGs, unlimited rate) and allocations/frame
#     (examples/bench_capture.rs); encoding: old vs new time per frame at 640x480 and 1280x720,
#     change-score thumbnails, and the synthetic camera through the capture loop and 1 or 2
#     encoder threads beside tjbench (examples/bench_encode.rs);
#  2. HTTP: /api/status and latest.jpg requests/s under wrk with 64 connections, and the frames
#     a 30 fps job lost while that load ran;
#  3. live view: 32 MJPEG stream clients of a 30 fps 640x480 pass-through camera: camjobd's CPU
#     per delivered frame, frames lost by capture, /api/status requests/s and p99 beside them,
#     and the same camera with no client (the snapshot rate's cost);
#  4. with OLD_BIN=path/to/an/older/camjobd: both binaries side by side in one run, /api/status
#     under wrk -c64 (median of 3 runs each, alternating) and RSS after start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=${1:-10}

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

command -v tjbench >/dev/null || apt_install libjpeg-turbo-progs
cargo build --release --quiet --bin camjobd --example bench_capture --example bench_encode
echo "== capture path"
./target/release/examples/bench_capture "$((secs / 2 > 2 ? secs / 2 : 2))"
echo "== encoding"
./target/release/examples/bench_encode --camera "$((secs / 3 > 2 ? secs / 3 : 2))"

echo "== HTTP under wrk -c64 while a 30 fps job runs"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/config.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0" },
  "storage": { "dir": "$work/data" },
  "log": { "level": "warn" },
  "cameras": [ { "name": "cam0", "source": { "kind": "synthetic", "width": 640, "height": 480, "fps": 30 },
                 "snapshot_interval_ms": 1000 } ]
}
JSON
camjobd_start ./target/release/camjobd "$work/config.json" "$work/out" "$work/err"
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
curl -s -o "$work/frame.jpg" "http://$addr/snapshot"
camjobd_stop "$pid"

# Starts camjobd with $work/$1.json; sets pid and addr.
launch() {
  camjobd_start "${2:-./target/release/camjobd}" "$work/$1.json" "$work/$1.out" "$work/$1.err"
}
cpu_s() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
http_stat() { curl -s "http://$addr/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['http']['$1'])"; }

echo "== live view: a 30 fps 640x480 pass-through camera ($(stat -c %s "$work/frame.jpg") bytes a frame)"
cat > "$work/live.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0", "max_stream_clients": 40 },
  "storage": { "dir": "$work/data-live" },
  "log": { "level": "warn" },
  "cameras": [ { "name": "cam0", "snapshot_interval_ms": 1000,
                 "source": { "kind": "pipe", "command": ["sh", "-c", "while :; do cat $work/frame.jpg; sleep 0.0333; done"] } } ]
}
JSON
launch live
until [ "$(curl -s "http://$addr/api/cameras/cam0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["state"])')" = RUNNING ]; do sleep 0.1; done
sleep 1
for clients in 0 32; do
  cids=()
  for _ in $(seq "$clients"); do
    curl -s -o /dev/null --max-time "$((2 * secs + 4))" "http://$addr/stream" & cids+=($!)
  done
  sleep 1
  # First the clients alone (CPU per frame), then /api/status under wrk beside them.
  read -r f0 d0 < <(frames); c0=$(cpu_s "$pid"); s0=$(http_stat stream_frames); t0=$(date +%s.%N)
  sleep "$secs"
  read -r f1 d1 < <(frames); c1=$(cpu_s "$pid"); s1=$(http_stat stream_frames); t1=$(date +%s.%N)
  wrk -t1 -c4 -d"${secs}s" --latency "http://$addr/api/status" > "$work/wrk" 2>&1 || true
  read -r f2 d2 < <(frames)
  [ ${#cids[@]} -eq 0 ] || wait "${cids[@]}" 2>/dev/null || true
  python3 - "$clients" "$f0" "$f1" "$d0" "$d1" "$c0" "$c1" "$s0" "$s1" "$t0" "$t1" "$work/wrk" "$f2" "$d2" <<'PY'
import sys
n, f0, f1, d0, d1, c0, c1, s0, s1, t0, t1, wrk, f2, d2 = sys.argv[1:]
n = int(n); dt = float(t1) - float(t0); cpu = float(c1) - float(c0)
captured = int(f1) - int(f0); delivered = int(s1) - int(s0)
w = open(wrk).read()
rps = next((l.split()[1] for l in w.splitlines() if l.startswith("Requests/sec")), "?")
p99 = next((l.split()[1] for l in w.splitlines() if l.strip().startswith("99%")), "?")
line = f"{n:2d} stream clients: captured {captured} frames in {dt:.1f} s ({captured/dt:.1f} fps), dropped {int(d1)-int(d0)}; camjobd CPU {cpu:.2f} s ({100*cpu/dt:.0f} %)"
if n:
    line += f"; delivered {delivered} frames ({delivered/n/dt:.1f} fps per client), {1000*cpu/max(delivered,1):.3f} ms CPU per delivered frame"
else:
    line += f"; {1000*cpu/max(captured,1):.3f} ms CPU per captured frame"
print(line)
print(f"   then /api/status under wrk -c4 beside them: {rps} requests/s, p99 {p99}; capture {int(f2)-int(f1)} frames, dropped {int(d2)-int(d1)}")
PY
done
camjobd_stop "$pid"

if [ -n "${OLD_BIN:-}" ]; then
  echo "== before/after: $OLD_BIN and ./target/release/camjobd side by side (default HTTP settings)"
  cat > "$work/ab.json" <<JSON
{ "http": { "bind": "127.0.0.1:0" }, "storage": { "dir": "$work/data-ab" }, "log": { "level": "warn" },
  "cameras": [ { "name": "cam0", "source": { "kind": "synthetic", "width": 640, "height": 480, "fps": 10 } } ] }
JSON
  declare -A rps rss
  for round in 1 2 3; do
    for which in old new; do
      bin=./target/release/camjobd; [ "$which" = old ] && bin=$OLD_BIN
      launch ab "$bin"
      sleep 3
      rss[$which]+="$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status") "
      wrk -t2 -c64 -d5s "http://$addr/api/status" > "$work/wrk" 2>&1 || true
      rps[$which]+="$(awk '/Requests\/sec/ {print $2}' "$work/wrk") "
      camjobd_stop "$pid"
    done
  done
  for which in old new; do
    python3 - "$which" "${rps[$which]}" "${rss[$which]}" <<'PY'
import statistics, sys
which, rps, rss = sys.argv[1], [float(v) for v in sys.argv[2].split()], [int(v) for v in sys.argv[3].split()]
print(f"{which}: /api/status {statistics.median(rps):,.0f} requests/s (runs {', '.join(f'{r:,.0f}' for r in rps)}); "
      f"RSS 3 s after start {statistics.median(rss):,} KiB")
PY
  done
  # The live view side by side: 32 stream clients of the 30 fps pass-through camera, CPU per
  # delivered frame and frames per client, median of 3 alternating runs of $secs each.
  declare -A per fps
  for round in 1 2 3; do
    for which in old new; do
      bin=./target/release/camjobd; [ "$which" = old ] && bin=$OLD_BIN
      launch live "$bin"
      until [ "$(curl -s "http://$addr/api/cameras/cam0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["state"])')" = RUNNING ]; do sleep 0.1; done
      cids=()
      for _ in $(seq 32); do curl -s -o /dev/null --max-time "$((secs + 3))" "http://$addr/stream" & cids+=($!); done
      sleep 1
      c0=$(cpu_s "$pid"); s0=$(http_stat stream_frames); t0=$(date +%s.%N)
      sleep "$secs"
      c1=$(cpu_s "$pid"); s1=$(http_stat stream_frames); t1=$(date +%s.%N)
      wait "${cids[@]}" 2>/dev/null || true
      camjobd_stop "$pid"
      read -r ms f < <(python3 -c "d=$s1-$s0; t=$t1-$t0; print(f'{1000*($c1-$c0)/max(d,1):.4f} {d/32/t:.2f}')")
      per[$which]+="$ms "; fps[$which]+="$f "
    done
  done
  for which in old new; do
    python3 - "$which" "${per[$which]}" "${fps[$which]}" <<'PY'
import statistics, sys
which, per, fps = sys.argv[1], [float(v) for v in sys.argv[2].split()], [float(v) for v in sys.argv[3].split()]
print(f"{which}: 32 stream clients, {statistics.median(per):.4f} ms CPU per delivered frame (runs {', '.join(f'{p:.4f}' for p in per)}), "
      f"{statistics.median(fps):.1f} fps per client (runs {', '.join(f'{f:.1f}' for f in fps)})")
PY
  done
fi
