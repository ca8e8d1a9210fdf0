#!/usr/bin/env bash
# What MQTT costs: binary size and idle RSS, side by side in one run.
#   scripts/mqtt-cost.sh [BASE_COMMIT]
# Builds the release binary (and, with BASE_COMMIT, the one of that commit in a worktree),
# starts mosquitto on a free loopback port, and runs each binary 3 times on the default
# synthetic camera for 10 s: the build of BASE_COMMIT, this build without `mqtt`, this build
# connected to the broker. Prints the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
work=$(mktemp -d /tmp/camjobd-mqtt-cost.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; git worktree prune; }
trap cleanup EXIT

cargo build --release --quiet
now=target/release/camjobd
base=""
if [ -n "${1:-}" ]; then
  git worktree add -f "$work/base" "$1" >/dev/null 2>&1
  (cd "$work/base" && CARGO_TARGET_DIR="$work/base-target" cargo build --release --quiet)
  base="$work/base-target/release/camjobd"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/mosq.conf"
"$MOSQ" -c "$work/mosq.conf" 2>/dev/null & pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# rss BINARY MQTT(0|1) -> KiB after 10 s idle on the default synthetic camera
rss() {
  local dir="$work/run$RANDOM"; mkdir -p "$dir"
  local mqtt='null'
  [ "$2" = 1 ] && mqtt="{\"url\": \"mqtt://127.0.0.1:$port\", \"client_id\": \"cost$RANDOM\"}"
  printf '{"http": {"bind": "127.0.0.1:0"}, "storage": {"dir": "%s/data"}, "mqtt": %s}\n' "$dir" "$mqtt" > "$dir/c.json"
  [ "$2" = base ] && printf '{"http": {"bind": "127.0.0.1:0"}, "storage": {"dir": "%s/data"}}\n' "$dir" > "$dir/c.json"
  "$1" --config "$dir/c.json" >/dev/null 2>"$dir/err" & local pid=$!
  sleep 10
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "binary size: $(stat -c %s "$now") bytes (this build)${base:+, $(stat -c %s "$base") bytes ($1)}"
if [ -n "$base" ]; then
  b=$(for _ in 1 2 3; do rss "$base" base; done | median)
  echo "idle RSS, $1: $b KiB"
fi
off=$(for _ in 1 2 3; do rss "$now" 0; done | median)
on=$(for _ in 1 2 3; do rss "$now" 1; done | median)
echo "idle RSS, this build without mqtt: $off KiB; connected to a broker: $on KiB (+$((on - off)) KiB)"
