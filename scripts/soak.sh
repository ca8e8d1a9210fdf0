#!/usr/bin/env bash
# Soak: the release binary at a high frame rate for DURATION seconds (default 300), with
#   - a synthetic camera at 1,000 fps, a snapshot kept and stored every 20 ms under retention,
#     and a 1.5 s stall every 2 minutes (recovered by the watchdog);
#   - MQTT on: a mosquitto started here on a free loopback port (installed from Debian if
#     missing), stopped at the end;
#   - an API poller that opens a new connection for every request (status, events, the latest
#     image, one camera, metrics: 25 requests/s), as dashboards and Home Assistant do;
#   - live-view clients: one streaming throughout, one or two more coming and going at random
#     (1-10 s each, a fixed seed, so every run sees the same sequence);
#   - RTSP clients of the camera's H.264 (every frame encoded while one watches): one over TCP
#     throughout, one coming and going at random the same way.
# Every second it samples RssAnon, VmRSS, threads and open fds (from /proc/PID) into a CSV,
# prints them per minute (maxima), and draws a PNG. It FAILS if
#   - any run:         the thread count moves after warm-up (the first fifth, at least 60 s),
#                      the fd count moves by more than 8, no stall was recovered, MQTT is not
#                      connected at the end or published nothing, or a poll failed;
#   - DURATION < 900:  RSS grows by more than 1 MiB per million frames after warm-up (a least-
#                      squares slope; a short run cannot tell a high-water mark from a creep);
#   - DURATION >= 900: the largest RssAnon sample of the last third of the run exceeds the
#                      largest of the middle third by more than 8 KiB (memory must have stopped
#                      growing by the middle of the run; a page or two of slack, not a trend).
#   scripts/soak.sh [DURATION_S]      output: target/soak/soak.csv, target/soak/soak.png
#   CAMJOBD_BIN=path/to/camjobd scripts/soak.sh ...   soaks that binary instead of building
#   SOAK_OUT=dir scripts/soak.sh ...                   writes there (two soaks side by side)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
duration=${1:-300}
out=${SOAK_OUT:-target/soak}
mkdir -p "$out"
PATH=$PATH:/usr/sbin:/sbin

need=()
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v mosquitto >/dev/null || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
bin=${CAMJOBD_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet ${CAMJOBD_FEATURES:+--features "$CAMJOBD_FEATURES"} --bin camjobd
  bin=./target/release/camjobd
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/camjobd-soak.XXXXXX")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# MQTT: a broker of our own on a free loopback port.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" 2> "$work/mosquitto.log" &
pids+=($!)
for _ in $(seq 100); do (: < "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

cat > "$work/config.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0", "workers": 2 },
  "rtsp": { "bind": "127.0.0.1:0" },
  "storage": { "dir": "$work/data", "max_bytes": 20000000 },
  "log": { "level": "warn" },
  "mqtt": { "url": "mqtt://127.0.0.1:$port", "client_id": "camjobd-soak", "topic_prefix": "camjobd/soak",
            "discovery_prefix": "homeassistant", "snapshot_interval_s": 1 },
  "webrtc": { "udp_port": 0 },
  "cameras": [ { "name": "cam0",
    "source": { "kind": "synthetic", "width": 160, "height": 120, "fps": 1000, "quality": 50,
                "fault": { "stall_every_s": 120, "stall_for_ms": 1500 } },
    "snapshot_interval_ms": 20,
    "video": { "bitrate_kbps": 1000 },
    "store": { "max_bytes": 20000000, "max_files": 20000 },
    "watchdog": { "stall_timeout_ms": 500, "backoff_initial_ms": 100, "backoff_max_ms": 400, "max_recoveries": 1000 } } ]
}
JSON
camjobd_start "$bin" "$work/config.json" "$work/out" "$work/err"
pids+=("$pid")

# The clients and the sampler, in one Python process (threads): one new connection per request.
status=0
PYTHONPATH=scripts python3 - "$addr" "$pid" "$duration" "$out/soak.csv" <<'PY' || status=$?
import http.client, os, random, sys, threading, time

addr, pid, duration, csv_path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
host, port = addr.rsplit(":", 1)
start = time.monotonic()
end = start + duration
failures = []
polls = [0]

def get(path, stream_s=None):
    """One request on a connection of its own; a stream is read for stream_s seconds."""
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        if stream_s is None:
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: {r.status}")
            return body
        until = time.monotonic() + stream_s
        while time.monotonic() < until and time.monotonic() < end and r.read(16384):
            pass
    finally:
        c.close()

def poller():
    paths = ["/api/status", "/api/events?limit=256", "/api/cameras/cam0/latest.jpg", "/api/cameras/cam0", "/metrics"]
    while time.monotonic() < end:
        for p in paths:
            try:
                get(p)
                polls[0] += 1
            except Exception as e:
                failures.append(f"poll {p}: {e}")
        time.sleep(0.2)

def viewer(seed, staying):
    rnd = random.Random(seed)
    while time.monotonic() < end:
        try:
            get("/stream?fps=10" if staying else "/?action=stream&fps=5", duration if staying else rnd.uniform(1, 10))
        except Exception as e:
            failures.append(f"stream: {e}")
            time.sleep(1)
        if not staying:
            time.sleep(rnd.uniform(0, 5))

def rtsp_viewer(seed, staying):
    """Plays the camera over RTSP (TCP interleaved) and reads what comes; the staying one for
    the whole run, the other for 1-10 s at a time."""
    import json
    from rtsp_client import Client
    rnd = random.Random(seed)
    bind = json.loads(get("/api/status"))["rtsp"]["bind"]
    while time.monotonic() < end:
        try:
            c = Client(bind, "cam0")
            until = min(end, time.monotonic() + (duration if staying else rnd.uniform(1, 10)))
            alive = time.monotonic()
            while time.monotonic() < until:
                c.packet()
                if time.monotonic() - alive > 20:   # within the 60 s session timeout
                    c.keepalive()
                    alive = time.monotonic()
            c.close()
        except Exception as e:
            failures.append(f"rtsp: {e}")
            time.sleep(1)
        if not staying:
            time.sleep(rnd.uniform(0, 5))

def proc(name):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])

def metric(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return line.split()[-1]

threads = [threading.Thread(target=poller, daemon=True),
           threading.Thread(target=viewer, args=(1, True), daemon=True),
           threading.Thread(target=viewer, args=(2, False), daemon=True),
           threading.Thread(target=viewer, args=(3, False), daemon=True),
           threading.Thread(target=rtsp_viewer, args=(4, True), daemon=True),
           threading.Thread(target=rtsp_viewer, args=(5, False), daemon=True)]
for t in threads:
    t.start()
with open(csv_path, "w") as f:
    f.write("t_s,frames,rss_anon_kib,rss_kib,threads,fds,state,recoveries,mqtt_published\n")
    offset = last = 0
    tick = start
    while True:
        tick += 1.0
        time.sleep(max(0.0, tick - time.monotonic()))
        if tick > end:
            break
        try:
            m = get("/metrics").decode()
        except Exception as e:
            failures.append(f"metrics: {e}")
            continue
        frames = int(float(metric(m, 'camjobd_frames_captured_total{camera="cam0"}') or 0))
        if frames < last:  # a new job restarts the counter: keep a running total
            offset += last
        last = frames
        state = next((l.split('"')[3] for l in m.splitlines()
                      if l.startswith('camjobd_job_state{camera="cam0",state=') and l.endswith(" 1")), "?")
        rec = metric(m, 'camjobd_recoveries_total{camera="cam0"}') or "0"
        pub = metric(m, "camjobd_mqtt_messages_published_total") or "0"
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        f.write(f"{tick - start:.0f},{offset + frames},{proc('RssAnon')},{proc('VmRSS')},{proc('Threads')},{fds},"
                f"{state},{rec},{pub}\n")
        f.flush()
print(f"soak: {polls[0]:,} polls, each on a new connection; {len(failures)} failed")
for e in failures[:10]:
    print(f"soak: {e}")
sys.exit(1 if failures else 0)
PY
connected=$(curl -s "http://$addr/metrics" | awk '/^camjobd_mqtt_connected/ { print $2 }')

python3 - "$out/soak.csv" "$duration" "${connected:-0}" <<'PY' || status=$?
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
duration, connected = float(sys.argv[2]), sys.argv[3]
if len(rows) < 20:
    sys.exit(f"soak: only {len(rows)} samples")
t = lambda r: float(r["t_s"])
anon = lambda r: int(r["rss_anon_kib"])
print("soak: minute  RssAnon max  VmRSS max  threads  fds max  frames (KiB; maxima of 1 s samples)")
for minute in range(int(t(rows[-1])) // 60 + 1):
    m = [r for r in rows if minute * 60 < t(r) <= (minute + 1) * 60]
    if m:
        print(f"soak: {minute + 1:6d}  {max(map(anon, m)):11,}  {max(int(r['rss_kib']) for r in m):9,}"
              f"  {','.join(sorted({r['threads'] for r in m})):>7}  {max(int(r['fds']) for r in m):7}"
              f"  {int(m[-1]['frames']):,}")
# Warm-up: the first fifth of the run, at least 60 s (buffers, arenas and rings reach their
# high-water marks; the frame pool, the copies and the index are committed at start).
warm = [r for r in rows if t(r) >= max(60, duration / 5)] or rows[len(rows) // 5:]
frames = float(rows[-1]["frames"])
threads = sorted({int(r["threads"]) for r in warm})
fds = [int(r["fds"]) for r in warm]
recoveries = int(float(rows[-1]["recoveries"]))
published = int(float(rows[-1]["mqtt_published"]))
print(f"soak: {frames:,.0f} frames in {t(rows[-1]):.0f} s ({frames / t(rows[-1]):,.0f} fps); recoveries {recoveries}; "
      f"threads {threads}; fds {min(fds)}..{max(fds)}; MQTT connected {connected}, {published:,} messages published")
ok = len(threads) == 1 and max(fds) - min(fds) <= 8 and recoveries >= 1 and connected == "1" and published > 0
if duration >= 900:
    third = [[anon(r) for r in rows if k * duration / 3 < t(r) <= (k + 1) * duration / 3] for k in range(3)]
    first, middle, last = (max(s) for s in third)
    grew = last - middle
    print(f"soak: RssAnon max per third {first:,} / {middle:,} / {last:,} KiB; last - middle {grew:+,} KiB (limit +8)")
    ok = ok and grew <= 8
else:
    x = [float(r["frames"]) for r in warm]
    y = [anon(r) * 1024.0 for r in warm]
    n = len(x); mx = sum(x) / n; my = sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    per_million = (sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx else 0.0) * 1e6
    print(f"soak: RssAnon {anon(rows[0]):,} -> {anon(rows[-1]):,} KiB; slope after warm-up "
          f"{per_million / 1024:+.1f} KiB per million frames (limit 1024; the third-vs-third check needs >= 900 s)")
    ok = ok and per_million <= 1024 * 1024
print("soak: PASS" if ok else "soak: FAIL")
sys.exit(0 if ok else 1)
PY
# Headroom above the thread and fd lines, so neither hides under the frame's top edge.
y2max=$(awk -F, 'NR > 1 { if ($5 > m) m = $5; if ($6 > m) m = $6 } END { print int(m * 1.5) + 1 }' "$out/soak.csv")
gnuplot <<GP || true
set terminal pngcairo size 900,420 font ",10"
set output "$out/soak.png"
set datafile separator ","
set key bottom right
set xlabel "minutes"
set ylabel "RssAnon (KiB)"
set y2label "threads, open fds"
set y2tics
set ytics nomirror
set y2range [0:$y2max]
set title "camjobd soak: $(tail -n 1 "$out/soak.csv" | cut -d, -f2) frames at 1,000 fps, a stall every 2 min, API polling, live views, RTSP, MQTT"
plot "$out/soak.csv" using (\$1/60):3 every ::1 with lines lw 2 title "RssAnon", \
     "" using (\$1/60):5 every ::1 axes x1y2 with lines title "threads", \
     "" using (\$1/60):6 every ::1 axes x1y2 with lines title "open fds"
GP
[ -f "$out/soak.png" ] && echo "soak: plot $out/soak.png, samples $out/soak.csv"
exit $status
