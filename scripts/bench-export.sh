#!/usr/bin/env bash
# Exports against capture (issue 6's benchmark): how fast a timelapse and an archive of stored
# 640x480 snapshots are made, and what a 30 fps job captures and drops meanwhile, compared with
# the same job with no export running (ratios in one run). Prints figures; asserts nothing.
# Usage: scripts/bench-export.sh [FILL_SECONDS]   (default 40: ~1,200 snapshots stored at 30 a second)
set -euo pipefail
cd "$(dirname "$0")/.."
fill=${1:-40}
cargo build --release --quiet --bin camjobd
work=$(mktemp -d "${TMPDIR:-/var/tmp}/camjobd-bench-export.XXXXXX")
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
cat > "$work/c.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0" },
  "storage": { "dir": "$work/data" },
  "log": { "level": "warn" },
  "exports": { "timelapse": { "max_frames": 600 } },
  "cameras": [ { "name": "cam0", "source": { "kind": "synthetic", "width": 640, "height": 480, "fps": 30 },
                 "snapshot_interval_ms": 0, "frame_buffers": 8 } ]
}
JSON
./target/release/camjobd --config "$work/c.json" > "$work/out" 2> "$work/err" &
pid=$!
python3 - "$pid" "$work" "$fill" <<'PY'
import json, sys, time, urllib.request, re, os
pid, work, fill = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
deadline = time.time() + 20
while not re.search(r"http://(\S+)/", open(f"{work}/out").read()):
    assert time.time() < deadline, "camjobd did not start: " + open(f"{work}/err").read()
    time.sleep(0.1)
addr = re.search(r"http://(\S+)/", open(f"{work}/out").read()).group(1)

def get(path):
    return json.load(urllib.request.urlopen(f"http://{addr}{path}", timeout=10))

def post(path, body):
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(), method="POST")
    return json.load(urllib.request.urlopen(req, timeout=10))

def job():
    j = get("/api/cameras/cam0")["job"]
    return j["frames_captured"], j["frames_dropped"], time.time()

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def capture_cpu():
    # utime + stime of the capture thread, in clock ticks.
    for t in os.listdir(f"/proc/{pid}/task"):
        if open(f"/proc/{pid}/task/{t}/comm").read().strip().startswith("capture-"):
            f = open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

time.sleep(fill)
assert post("/api/cameras/cam0/stop", {})["state"] in ("STOPPING", "STOPPED")
time.sleep(1)
stored = get("/api/cameras/cam0")["store"]
print(f"stored: {stored['files']} snapshots, {stored['bytes'] / 2**20:.1f} MiB (640x480, 30 fps, every frame kept)")
# The capture job that must not notice: 30 fps, every frame kept and stored (the store keeps
# writing while the exports read).
req = urllib.request.Request(f"http://{addr}/api/cameras/cam0/start", data=b"", method="POST")
urllib.request.urlopen(req, timeout=10)
time.sleep(2)
now = time.time()

def measure(label, seconds=None, export=None, repeat=1):
    f0, d0, t0 = job(); c0 = capture_cpu(); rss0 = rss_kib(); rss_max = rss0
    done = []
    for _ in range(repeat if export else 0):
        x = post("/api/exports", export)
        while True:
            x = get(f"/api/exports/{x['id']}")
            rss_max = max(rss_max, rss_kib())
            if x["state"] not in ("QUEUED", "RUNNING"):
                break
            time.sleep(0.1)
        done.append(x)
    if not export:
        time.sleep(seconds)
    f1, d1, t1 = job(); c1 = capture_cpu()
    fps = (f1 - f0) / (t1 - t0)
    line = f"{label:<22} {t1 - t0:6.1f} s  capture {fps:5.2f} frames/s, dropped {d1 - d0}, capture CPU {100 * (c1 - c0) / (t1 - t0):4.1f}%, RSS {rss0} -> max {rss_max} KiB"
    for x in done:
        took = x["ended_at"] - x["started_at"]
        line += f"\n{'':<22} export {x['state']}: {x['done']} of {x['snapshots']} snapshots -> {x['bytes'] / 2**20:.1f} MiB in {took:.1f} s ({x['done'] / took:.0f} items/s, {x['bytes'] / 2**20 / took:.1f} MiB/s)"
    print(line)
    return fps

rng = {"camera": "cam0", "from": now - 3600, "to": now - 2}
base = measure("no export", seconds=10)
tl = measure("timelapse running", export=dict(rng, kind="timelapse"))
ar = measure("10 archives in a row", export=dict(rng, kind="archive"), repeat=10)
print(f"capture rate during export / without: timelapse {tl / base:.3f}, archive {ar / base:.3f}")
PY
