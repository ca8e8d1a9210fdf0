#!/usr/bin/env bash
# Soak: the release binary at a high frame rate for DURATION seconds (default 300) with
# snapshots kept and stored under retention, a dashboard-like poller, two live-view clients (one
# staying, one coming and going), wrk load on the API, and
# a stall/recover fault every 2 minutes. Samples RSS, threads and fds every second into a CSV,
# fits the RSS slope after warm-up, draws a PNG, and FAILS if RSS grows by more than 1 MiB per
# million frames, or if the thread or fd count moves after warm-up.
#   scripts/soak.sh [DURATION_S]      output: target/soak/soak.csv, target/soak/soak.png
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-300}
out=target/soak
mkdir -p "$out"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet ${CAMJOBD_FEATURES:+--features "$CAMJOBD_FEATURES"} --bin camjobd

work=$(mktemp -d "${TMPDIR:-/var/tmp}/camjobd-soak.XXXXXX")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/config.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0", "workers": 2 },
  "storage": { "dir": "$work/data", "max_bytes": 20000000 },
  "log": { "level": "warn" },
  "cameras": [ { "name": "cam0",
    "source": { "kind": "synthetic", "width": 160, "height": 120, "fps": 1200, "quality": 50,
                "fault": { "stall_every_s": 120, "stall_for_ms": 1500 } },
    "snapshot_interval_ms": 20,
    "store": { "max_bytes": 20000000, "max_files": 20000 },
    "watchdog": { "stall_timeout_ms": 500, "backoff_initial_ms": 100, "backoff_max_ms": 400, "max_recoveries": 1000 } } ]
}
JSON
./target/release/camjobd --config "$work/config.json" > "$work/out" 2> "$work/err" &
pid=$!
pids+=("$pid")
for _ in $(seq 100); do grep -q 'http://' "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's#.*http://\([^/]*\)/.*#\1#p' "$work/out")
[ -n "$addr" ] || { echo "camjobd did not start"; cat "$work/err"; exit 1; }

# A dashboard-like poller: status, events, the latest image, 5 times a second.
( while :; do
    curl -s -o /dev/null "http://$addr/api/status"
    curl -s -o /dev/null "http://$addr/api/events?limit=256"
    curl -s -o /dev/null "http://$addr/api/cameras/cam0/latest.jpg"
    sleep 0.2
  done ) &
pids+=($!)
# A live view watching all along, and one that comes and goes every 10 s (a phone app).
curl -s -o /dev/null --max-time "$duration" "http://$addr/stream?fps=10" &
pids+=($!)
( while :; do curl -s -o /dev/null --max-time 5 "http://$addr/?action=stream&fps=5"; sleep 5; done ) &
pids+=($!)
# Steady API load with few connections, so capture still gets its share of the 2 cores.
wrk -t1 -c4 -d"${duration}s" "http://$addr/api/status" > "$work/wrk" 2>&1 &
pids+=($!)

echo "t_s,frames,rss_kib,threads,fds,state,recoveries" > "$out/soak.csv"
start=$(date +%s.%N)
offset=0; last=0
elapsed() { awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f", a - b }'; }
while awk -v t="$(elapsed)" -v d="$duration" 'BEGIN { exit !(t < d) }'; do
  sleep 1
  # /metrics is cheap to parse with awk: no interpreter start-up per sample.
  m=$(curl -s "http://$addr/metrics") || continue
  frames=$(awk '/^camjobd_frames_captured_total[{]camera="cam0"[}]/ { print $2 }' <<<"$m")
  rec=$(awk '/^camjobd_recoveries_total[{]camera="cam0"[}]/ { print $2 }' <<<"$m")
  state=$(awk '/^camjobd_job_state[{]camera="cam0",state=/ && $2 == 1 { split($1, p, "\""); print p[4] }' <<<"$m")
  [ -n "$frames" ] || continue
  # A new job restarts the counter; keep a running total.
  if [ "$frames" -lt "$last" ]; then offset=$((offset + last)); fi
  last=$frames
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
  threads=$(awk '/^Threads/ { print $2 }' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  echo "$(elapsed),$((offset + frames)),$rss,$threads,$fds,$state,$rec" >> "$out/soak.csv"
done

status=0
python3 - "$out/soak.csv" "$work/wrk" <<'PY' || status=$?
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
if len(rows) < 20:
    sys.exit(f"soak: only {len(rows)} samples")
# Warm-up: the first fifth of the run, at least 60 s (malloc arenas of the HTTP workers, the
# journal's buffers and the event ring reach their high-water marks; the pool and the index are
# committed at start).
warm = [r for r in rows[len(rows) // 5:] if float(r["t_s"]) >= 60] or rows[len(rows) // 5:]
x = [float(r["frames"]) for r in warm]
y = [float(r["rss_kib"]) * 1024 for r in warm]
n = len(x); mx = sum(x) / n; my = sum(y) / n
sxx = sum((a - mx) ** 2 for a in x)
slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx else 0.0
per_million = slope * 1e6
frames = float(rows[-1]["frames"])
threads = sorted({int(r["threads"]) for r in warm}); fds = [int(r["fds"]) for r in warm]
states = {}
for r in rows:
    states[r["state"]] = states.get(r["state"], 0) + 1
wrk = open(sys.argv[2]).read()
rps = next((l.split()[1] for l in wrk.splitlines() if l.startswith("Requests/sec")), "?")
print(f"soak: {frames:,.0f} frames in {float(rows[-1]['t_s']):.0f} s ({frames / float(rows[-1]['t_s']):,.0f} fps); "
      f"recoveries {rows[-1]['recoveries']}; samples by state {states}")
print(f"soak: RSS {int(rows[0]['rss_kib'])} -> {int(rows[-1]['rss_kib'])} KiB; slope after warm-up {per_million / 1024:+.1f} KiB per million frames "
      f"(limit 1024); threads {threads}; fds {min(fds)}..{max(fds)}; wrk {rps} requests/s")
ok = per_million <= 1024 * 1024 and len(threads) == 1 and max(fds) - min(fds) <= 8
print("soak: PASS" if ok else "soak: FAIL")
sys.exit(0 if ok else 1)
PY
# Headroom above the thread and fd lines, so neither hides under the frame's top edge.
y2max=$(awk -F, 'NR > 1 { if ($4 > m) m = $4; if ($5 > m) m = $5 } END { print int(m * 1.5) + 1 }' "$out/soak.csv")
gnuplot <<GP || true
set terminal pngcairo size 900,420 font ",10"
set output "$out/soak.png"
set datafile separator ","
set key bottom right
set xlabel "frames (millions)"
set ylabel "RSS (MiB)"
set y2label "threads, open fds"
set y2tics
set ytics nomirror
set yrange [0:*]
set y2range [0:$y2max]
set title "camjobd soak: $(tail -n 1 "$out/soak.csv" | cut -d, -f2) frames, 1 stall/recover every 2 min, API load"
plot "$out/soak.csv" using (\$2/1e6):(\$3/1024) every ::1 with lines lw 2 title "RSS", \
     "" using (\$2/1e6):4 every ::1 axes x1y2 with lines title "threads", \
     "" using (\$2/1e6):5 every ::1 axes x1y2 with lines title "open fds"
GP
[ -f "$out/soak.png" ] && echo "soak: plot $out/soak.png, samples $out/soak.csv"
exit $status
