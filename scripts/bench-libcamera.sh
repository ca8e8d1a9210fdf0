#!/usr/bin/env bash
# What reading a libcamera camera raw saves; asserts nothing.
# Usage: scripts/bench-libcamera.sh [SECONDS] [SIZE]   (default 10, 1280x720)
# camjobd (release) runs a libcamera camera through the test stand-in rpicam-vid
# (tests/support/rpicam-vid: ffmpeg's testsrc2 at SIZE, 30 fps) with `video` on, a snapshot
# every second and one RTSP client (ffmpeg over TCP) for SECONDS, five times each way,
# alternating:
#   mjpeg  — rpicam-vid writes JPEGs; camjobd decodes each for H.264 (the path before).
#   yuv420 — rpicam-vid writes raw I420; camjobd encodes H.264 from it and a JPEG when due.
# Printed: camjobd's CPU (user + system, from /proc) per H.264 frame it encoded, median of 5.
# The stand-in's own CPU is not counted: on a Pi the ISP and JPEG block do that work.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=${1:-10}
size=${2:-1280x720}
w=${size%x*} h=${size#*x}
command -v ffmpeg >/dev/null || apt_install ffmpeg
cargo build --release --quiet --bin camjobd
work=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/bin"
cp tests/support/rpicam-vid "$work/bin/rpicam-vid"
tick=$(getconf CLK_TCK)

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
field() { curl -s "http://127.0.0.1:$1/api/status" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"; }

run() { # codec → "ms-per-frame frames"
  local codec=$1 port=$((18000 + RANDOM % 2000)) rport=$((20000 + RANDOM % 2000))
  cat >"$work/c.json" <<EOF
{"cameras": [{"name": "csi", "source": {"kind": "libcamera", "width": $w, "height": $h, "fps": 30,
  "quality": 80, "codec": "$codec"}, "snapshot_interval_ms": 1000, "max_frame_bytes": 4194304,
  "store": {"enabled": false}, "video": {}}],
 "http": {"bind": "127.0.0.1:$port"}, "rtsp": {"bind": "127.0.0.1:$rport"},
 "storage": {"dir": "$work/store"}}
EOF
  PATH="$work/bin:$PATH" FAKE_RPICAM_SOURCE=testsrc2 ./target/release/camjobd --config "$work/c.json" \
    >"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  # The client watches for 2 s of warm-up, then SECONDS measured.
  timeout $((secs + 30)) ffmpeg -nostdin -v error -rtsp_transport tcp -i "rtsp://127.0.0.1:$rport/csi" \
    -t $((secs + 2)) -fps_mode passthrough -enc_time_base -1 -f null - 2>/dev/null &
  local client=$!
  sleep 2
  local t0 f0 t1 f1
  t0=$(cpu_ticks $pid) f0=$(field $port "d['cameras'][0]['video']['frames']")
  sleep "$secs"
  t1=$(cpu_ticks $pid) f1=$(field $port "d['cameras'][0]['video']['frames']")
  wait $client || true
  kill $pid; wait $pid 2>/dev/null || true; pid=""
  awk -v t=$((t1 - t0)) -v f=$((f1 - f0)) -v hz="$tick" 'BEGIN { printf "%.3f %d\n", t * 1000 / hz / f, f }'
}

echo "== camjobd CPU per H.264 frame, libcamera camera at ${size} 30 fps, one RTSP client, ${secs} s, median of 5"
mj=() yu=()
for _ in 1 2 3 4 5; do
  mj+=("$(run mjpeg)")
  yu+=("$(run yuv420)")
done
for pair in "mjpeg:${mj[*]}" "yuv420:${yu[*]}"; do
  name=${pair%%:*}
  vals=${pair#*:}
  printf '%-7s %s ms per frame (frames per run: %s)\n' "$name" \
    "$(printf '%s\n' $vals | awk 'NR % 2 == 1' | median)" "$(printf '%s\n' $vals | awk 'NR % 2 == 0' | tr '\n' ' ')"
done
