#!/usr/bin/env bash
# Slow readers, at length: an export archive of about MB megabytes (default 40) downloaded by
# `curl --limit-rate RATE` (default 20k: about 35 minutes for 40 MB) and, beside it, the live
# stream of a 30 fps camera read by curl at the same rate. Prints whether
# each download completed byte for byte, how long it took, what the stream reader got, and the
# frames capture dropped meanwhile. The CI form of the same checks is shorter (tests/it/exports.rs,
# tests/it/live_view.rs).
#   scripts/slow-readers.sh [MB] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
mb=${1:-40}
rate=${2:-20k}
cargo build --release --quiet ${CAMJOBD_FEATURES:+--features "$CAMJOBD_FEATURES"} --bin camjobd
work=$(mktemp -d "${TMPDIR:-/var/tmp}/camjobd-slow.XXXXXX")
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/config.json" <<JSON
{
  "http": { "bind": "127.0.0.1:0" },
  "storage": { "dir": "$work/data" },
  "log": { "level": "warn" },
  "cameras": [ { "name": "fill", "snapshot_interval_ms": 0,
    "source": { "kind": "synthetic", "width": 1280, "height": 720, "fps": 30, "quality": 90 },
    "store": { "max_bytes": $(( (mb + 64) << 20 )), "max_files": 100000 } },
    { "name": "cam0", "source": { "kind": "synthetic", "width": 640, "height": 480, "fps": 30 } } ],
  "exports": { "max_bytes": $(( (mb + 64) << 20 )) }
}
JSON
camjobd_start ./target/release/camjobd "$work/config.json" "$work/out" "$work/err"
pids+=("$pid")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
echo "== storing about $mb MB of snapshots"
until [ "$(curl -s "http://$addr/api/cameras/fill" | json 'd["store"]["bytes"]')" -ge $((mb * 1000000)) ]; do sleep 1; done
# The filler stops: the disk stays quiet while the readers read; cam0 goes on at 30 fps.
curl -s -o /dev/null -X POST "http://$addr/api/cameras/fill/stop"
id=$(curl -s -X POST "http://$addr/api/exports" -d '{"camera": "fill", "from": 0, "to": "2100-01-01", "kind": "archive"}' | json 'd["id"]')
until [ "$(curl -s "http://$addr/api/exports/$id" | json 'd["state"]')" = SUCCEEDED ]; do sleep 1; done
size=$(curl -s "http://$addr/api/exports/$id" | json 'd["bytes"]')
curl -s -o "$work/fast.tar" "http://$addr/api/exports/$id/file"
echo "export $id: $size bytes; now read at $rate by curl, with a stream reader at the same rate beside it"
read -r f0 d0 < <(curl -s "http://$addr/api/cameras/cam0" | json 'd["job"]["frames_captured"], d["job"]["frames_dropped"]' | tr -d '(),')
t0=$(date +%s)
curl -s --limit-rate "$rate" -o "$work/slow.tar" -w '%{http_code} %{size_download}\n' "http://$addr/api/exports/$id/file" > "$work/curl" &
dl=$!
curl -s --limit-rate "$rate" -o "$work/stream.mjpeg" "http://$addr/stream?camera=cam0" &
pids+=($!)
stream=$!
wait "$dl" || true
t1=$(date +%s)
kill "$stream" 2>/dev/null || true
read -r f1 d1 < <(curl -s "http://$addr/api/cameras/cam0" | json 'd["job"]["frames_captured"], d["job"]["frames_dropped"]' | tr -d '(),')
parts=$(grep -c 'Content-Type: image/jpeg' "$work/stream.mjpeg" || true)
if cmp -s "$work/fast.tar" "$work/slow.tar"; then same=whole; else same="CUT ($(stat -c %s "$work/slow.tar") of $size bytes)"; fi
echo "download at $rate: $same in $((t1 - t0)) s; curl: $(cat "$work/curl")"
echo "stream reader at $rate for the same time: $parts parts, $(stat -c %s "$work/stream.mjpeg") bytes, still connected: $([ -d "/proc/$stream" ] && echo yes || echo "until the end")"
echo "capture meanwhile: $((f1 - f0)) frames, dropped $((d1 - d0))"
[ "$same" = whole ]
