#!/usr/bin/env bash
# H.264 figures; asserts nothing. Usage: scripts/bench-h264.sh [SECONDS]   (default 10)
#  1. encode cost on the same raw frames (ffmpeg's testsrc2 with noise, 300 frames) at 640x480
#     and 1280x720: camjobd's OpenH264 (examples/bench_h264.rs, one thread) beside
#     `ffmpeg -c:v libx264 -preset ultrafast -tune zerolatency` at the same 2 Mbit/s, with one
#     thread and with ffmpeg's default threads. Frames per CPU-second, medians of 5. ffmpeg's
#     CPU is its `-benchmark` figure less the same command copying the frames (reading and
#     demuxing are not encoding).
#  2. capture-to-client latency on loopback, a 640x480 30 fps synthetic camera: RTSP (H.264
#     over TCP; the capture time of each access unit from its RTP time and the sender
#     report's wall clock) and MJPEG (`/stream`, each part's X-Timestamp), both read for
#     SECONDS by one client at once. p50 and p99 in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=${1:-10}
command -v ffmpeg >/dev/null || apt_install ffmpeg
cargo build --release --quiet --bin camjobd --example bench_h264
work=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# CPU seconds ffmpeg reports for a run (`bench: utime=1.2s stime=0.1s rtime=...`).
ffmpeg_cpu() {
  ffmpeg -hide_banner -nostdin -benchmark "$@" 2>&1 |
    sed -n 's/.*bench: utime=\([0-9.]*\)s stime=\([0-9.]*\)s.*/\1 \2/p' | awk '{ print $1 + $2 }'
}

echo "== encode cost, frames per CPU-second (300 frames, 2 Mbit/s, medians of 5)"
for size in 640x480 1280x720; do
  w=${size%x*} h=${size#*x}
  frames="$work/$size.yuv"
  ffmpeg -hide_banner -nostdin -loglevel error -f lavfi -i "testsrc2=size=$size:rate=30,noise=alls=12:allf=t" \
    -frames:v 300 -pix_fmt yuv420p -f rawvideo "$frames"
  ./target/release/examples/bench_h264 "$w" "$h" "$frames" 5
  input=(-f rawvideo -pix_fmt yuv420p -s "$size" -r 30 -i "$frames")
  for threads in 1 0; do
    rates=()
    for _ in 1 2 3 4 5; do
      total=$(ffmpeg_cpu "${input[@]}" -c:v libx264 -preset ultrafast -tune zerolatency -b:v 2M -threads "$threads" -f null -)
      copy=$(ffmpeg_cpu "${input[@]}" -c:v copy -f null -)
      rates+=("$(awk -v t="$total" -v c="$copy" 'BEGIN { d = t - c; if (d <= 0) d = 0.001; printf "%.0f", 300 / d }')")
    done
    label=$([ "$threads" = 1 ] && echo "1 thread" || echo "default threads")
    echo "libx264 ultrafast zerolatency $size, $label: $(printf '%s\n' "${rates[@]}" | median) frames per CPU-second (runs: ${rates[*]})"
  done
done

echo "== capture-to-client latency on loopback, ${secs} s, 640x480 at 30 fps"
cat > "$work/config.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0" },
  "rtsp": { "bind": "127.0.0.1:0" },
  "webrtc": { "udp_port": 0 },
  "storage": { "dir": "$work/data" },
  "log": { "level": "warn" },
  "cameras": [ { "name": "cam0", "source": { "kind": "synthetic", "width": 640, "height": 480, "fps": 30 },
                 "store": { "enabled": false }, "video": {} } ]
}
JSON
camjobd_start ./target/release/camjobd "$work/config.json" "$work/out" "$work/err"
http=$addr
PYTHONPATH=scripts python3 - "$http" "$secs" <<'PY'
import json, socket, struct, sys, threading, time, urllib.request
from rtsp_client import Client

http, secs = sys.argv[1], float(sys.argv[2])
status = json.load(urllib.request.urlopen(f"http://{http}/api/status"))
rtsp = status["rtsp"]["bind"]

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] * 1000

def rtsp_latency(out):
    c = Client(rtsp, "cam0")
    sr = None
    pending = []   # (rtp time, arrival) of access units seen before the first sender report
    end = time.time() + secs
    while time.time() < end:
        ch, pkt = c.packet()
        now = time.time()
        if ch == 1 and pkt[1] == 200:
            ntp_s, ntp_f, rtp_t = struct.unpack(">IIi", pkt[8:20])
            sr = (ntp_s - 2208988800 + ntp_f / 2**32, rtp_t & 0xFFFFFFFF)
        elif ch == 0 and pkt[1] & 0x80:   # the marker: an access unit's last packet
            pending.append((struct.unpack(">I", pkt[4:8])[0], now))
            if sr:
                for ts, at in pending:
                    delta = ((ts - sr[1] + 2**31) % 2**32 - 2**31) / 90000
                    out.append(at - (sr[0] + delta))
                pending.clear()
    c.close()

def mjpeg_latency(out):
    h, p = http.rsplit(":", 1)
    s = socket.create_connection((h, int(p)))
    s.sendall(f"GET /stream?camera=cam0 HTTP/1.1\r\nHost: {http}\r\n\r\n".encode())
    f = s.makefile("rb")
    end = time.time() + secs
    while time.time() < end:
        if not f.readline().lower().startswith(b"content-type: image/jpeg"):
            continue
        length = ts = None
        while True:
            line = f.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
            elif k.strip().lower() == b"x-timestamp":
                ts = float(v)
        # A part counts once its JPEG has arrived, as an access unit does at its last packet.
        if length:
            f.read(length)
        if ts:
            out.append(time.time() - ts)
    s.close()

r, m = [], []
ts = [threading.Thread(target=rtsp_latency, args=(r,)), threading.Thread(target=mjpeg_latency, args=(m,))]
[t.start() for t in ts]
[t.join() for t in ts]
for name, v in (("RTSP H.264", r), ("MJPEG /stream", m)):
    if v:
        print(f"{name}: {len(v)} frames, capture to client p50 {pct(v, 0.5):.1f} ms, p99 {pct(v, 0.99):.1f} ms")
    else:
        print(f"{name}: no frames")
PY

echo "== CPU per added RTSP client (camjobd's CPU over ${secs} s: 1 client, then 16; ffmpeg -c copy over TCP)"
url=$(python3 -c "import json,sys,urllib.request; print('rtsp://' + json.load(urllib.request.urlopen('http://$http/api/status'))['rtsp']['bind'] + '/cam0')")
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
run_clients() {
  local n=$1 pids=()
  for _ in $(seq "$n"); do
    ffmpeg -nostdin -v error -rtsp_transport tcp -i "$url" -c copy -f null - </dev/null &
    pids+=($!)
  done
  sleep 3   # all playing
  local t0 p0
  t0=$(cpu_ticks)
  p0=$(curl -s "http://$http/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['rtsp']['packets'])")
  sleep "$secs"
  local t1 p1
  t1=$(cpu_ticks)
  p1=$(curl -s "http://$http/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['rtsp']['packets'])")
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "$n $((t1 - t0)) $((p1 - p0))"
}
hz=$(getconf CLK_TCK)
read -r _ one_ticks one_packets < <(run_clients 1)
sleep 2
read -r _ many_ticks many_packets < <(run_clients 16)
awk -v a="$one_ticks" -v b="$many_ticks" -v hz="$hz" -v s="$secs" -v pa="$one_packets" -v pb="$many_packets" 'BEGIN {
  printf "camjobd CPU: 1 client %.1f %%, 16 clients %.1f %% of one core; per added client %.2f %% of a core (%.1f us per packet sent)\n",
    100 * a / hz / s, 100 * b / hz / s, 100 * (b - a) / hz / s / 15, (pb > pa) ? 1e6 * (b - a) / hz / (pb - pa) : 0
}'
