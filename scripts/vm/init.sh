#!/bin/sh
# PID 1 of the VM test (scripts/vm-test.sh packs it into the initramfs as /init). Runs the
# scenario against the kernel's vivid driver and camjobd built with the v4l2 feature, and reports
# on the serial console: one "VMTEST ok|FAIL <check> <details>" line per check, the latest
# snapshot between "VMTEST jpeg-begin"/"VMTEST jpeg-end" (base64), "VMTEST bench ..." lines,
# then "VMTEST done". Every wait is bounded; the VM powers off at the end in any case.
export PATH=/bin:/sbin:/usr/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ifconfig lo 127.0.0.1 up
cd /tmp
V=$(uname -r)
API=http://127.0.0.1:8080

ok() { echo "VMTEST ok $*"; }
fail() { echo "VMTEST FAIL $*"; }
# HTTP with nc (busybox-static's wget crashes in its resolver): the response, headers and all;
# Host is an address, as camjobd refuses writes that name another host (DNS rebinding).
http() { # METHOD PATH [PORT]
  printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n' "$1" "$2" | nc -w 5 127.0.0.1 "${3:-8080}" 2>/dev/null
}
# The body of a response saved in file $1 (by its Content-Length; binary-safe).
body() { tail -c "$(grep -a -m 1 -i '^content-length:' "$1" | tr -dc 0-9)" "$1"; }
get() { http GET "$1" > /tmp/resp; body /tmp/resp; }
# PUT with a JSON body: the status line and the body.
put() { # PATH JSON
  printf 'PUT %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
    "$1" "${#2}" "$2" | nc -w 5 127.0.0.1 8080 2>/dev/null > /tmp/resp
  head -n 1 /tmp/resp; body /tmp/resp
}
# A control's value on the device (a menu's is printed as "4 (Menu Item 4)": the number).
ctrl() { v4l2-ctl -d /dev/video0 --get-ctrl="$1" 2>&1 | sed 's/.*: //; s/ .*//'; }
post() { http POST "$1" > /tmp/resp; body /tmp/resp; }
state() { get /api/cameras/cam0 | grep -o '"state":"[A-Z]*"' | head -n 1 | cut -d'"' -f4; }
field() { get /api/cameras/cam0 | grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }
reason() { get /api/cameras/cam0 | grep -o '"reason":"[^"]*"' | head -n 1; }
# wait_state STATE SECONDS: polls every 0.2 s.
wait_state() {
  n=$(( $2 * 5 ))
  while [ "$n" -gt 0 ]; do
    [ "$(state)" = "$1" ] && return 0
    sleep 0.2
    n=$((n - 1))
  done
  return 1
}
vivid_up() {
  # One capture node, the webcam input first.
  modprobe vivid n_devs=1 node_types=0x1 || return 1
  n=50
  while [ ! -e /dev/video0 ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
  [ -e /dev/video0 ]
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
finish() { echo "VMTEST done"; sync; poweroff -f; }

echo "VMTEST boot kernel $V, $(nproc) cpu(s), $(awk '/MemTotal/ {print $2}' /proc/meminfo) KiB"
if vivid_up; then ok vivid "/dev/video0 appeared"; else fail vivid "modprobe vivid failed"; finish; fi
echo "VMTEST info formats: $(v4l2-ctl -d /dev/video0 --list-formats 2>&1 | grep -o "'[A-Z0-9 ]*'" | tr '\n' ' ')"
v4l2-ctl -d /dev/video0 -L 2>&1 | grep -iE 'disconnect|error|dropped' | sed 's/^/VMTEST info control: /'

cat > /tmp/camjobd.json <<JSON
{
  "http": { "bind": "127.0.0.1:8080", "workers": 2 },
  "storage": { "dir": "/tmp/data" },
  "log": { "level": "info" },
  "cameras": [ { "name": "cam0",
    "source": { "kind": "v4l2", "device": "/dev/video0", "width": 640, "height": 480, "fps": 15, "format": "auto" },
    "snapshot_interval_ms": 500, "video": {},
    "watchdog": { "stall_timeout_ms": 3000, "max_recoveries": 3, "backoff_initial_ms": 300, "backoff_max_ms": 1000 } } ]
}
JSON
camjobd --config /tmp/camjobd.json > /tmp/camjobd.out 2> /tmp/camjobd.err &
CAMJOBD=$!

# 1. RUNNING, with what the driver granted.
if wait_state RUNNING 60; then
  ok running "job $(field id) RUNNING"
else
  fail running "state '$(state)' $(reason); healthz: $(http GET /healthz | tail -n 1)"
  tail -n 20 /tmp/camjobd.err | sed 's/^/VMTEST info log: /'
  get /api/cameras/cam0 | head -c 600 | sed 's/^/VMTEST info view: /'; echo
  finish
fi
grep -o 'granted.*' /tmp/camjobd.err | head -n 1 | sed 's/^/VMTEST info /'
# The H.264 encoder was looked for on the real kernel (QUERYCAP on every /dev/video*): vivid is
# a camera, not a memory-to-memory codec, so auto says so and encodes in software.
view=$(get /api/cameras/cam0)
case "$view" in
  *"chosen by auto: no V4L2 H.264 encoder among the video devices"*"memory-to-memory codec"*)
    ok m2m-scan "software by auto; $(echo "$view" | grep -o '[0-9]* others* [a-z]* not \(a \)\?memory-to-memory codecs*')" ;;
  *) fail m2m-scan "$(echo "$view" | grep -o '"encoder":.\{0,160\}')" ;;
esac

# 2. The latest snapshot, for the host to decode.
sleep 1
if get /api/cameras/cam0/latest.jpg > /tmp/latest.jpg && [ -s /tmp/latest.jpg ]; then
  echo "VMTEST jpeg-begin"; base64 /tmp/latest.jpg; echo "VMTEST jpeg-end"
else
  fail latest "no latest.jpg"
fi

# 3. Frames keep coming.
f0=$(field frames_captured); sleep 4; f1=$(field frames_captured)
if [ "${f1:-0}" -gt "${f0:-0}" ]; then ok frames "$f0 -> $f1 in 4 s"; else fail frames "$f0 -> $f1 in 4 s"; fi

# 4. vivid drops half of its buffers: fewer frames, still RUNNING.
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=50 2>/dev/null
f0=$(field frames_captured); sleep 4; f1=$(field frames_captured)
if [ "$(state)" = RUNNING ] && [ "${f1:-0}" -gt "${f0:-0}" ]; then ok dropped-buffers "RUNNING, $f0 -> $f1 in 4 s with 50% dropped"; else fail dropped-buffers "$(state) $f0 -> $f1"; fi
v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=0 2>/dev/null

# 5. A buffer with V4L2_BUF_FLAG_ERROR: dropped and counted, still RUNNING.
d0=$(field frames_dropped)
v4l2-ctl -d /dev/video0 -c inject_v4l2_buf_flag_error=1 2>/dev/null
n=25; while [ "$(field frames_dropped)" = "$d0" ] && [ "$n" -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
if [ "$(field frames_dropped)" != "$d0" ] && [ "$(state)" = RUNNING ]; then ok buf-flag-error "frames_dropped $d0 -> $(field frames_dropped), RUNNING"; else fail buf-flag-error "$(state) dropped $(field frames_dropped)"; fi

# 6. A fatal streaming error (the driver stops the queue; DQBUF fails) → RECOVERING → RUNNING.
r0=$(field recoveries)
v4l2-ctl -d /dev/video0 -c inject_fatal_streaming_error=1 2>/dev/null
n=75; while [ "$(field recoveries)" = "$r0" ] && [ "$n" -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
if [ "$(field recoveries)" != "$r0" ] && wait_state RUNNING 20; then ok fatal-streaming-error "recoveries $r0 -> $(field recoveries), RUNNING again"; else fail fatal-streaming-error "$(state) recoveries $(field recoveries) $(reason)"; fi

# 7. Stop and start.
post /api/cameras/cam0/stop > /dev/null
if wait_state STOPPED 10; then ok stop "STOPPED"; else fail stop "$(state)"; fi
post /api/cameras/cam0/start > /dev/null
if wait_state RUNNING 30; then ok start "job $(field id) RUNNING"; else fail start "$(state) $(reason)"; fi

# 7b. Controls: the driver's int, bool, menu and button controls listed; a change set on the
#     device (read back with v4l2-ctl, not through camjobd); a bad value refused naming it.
list=$(get /api/cameras/cam0/controls)
kinds=""
for k in int bool menu button; do echo "$list" | grep -q "\"type\":\"$k\"" && kinds="$kinds $k"; done
if [ "$kinds" = " int bool menu button" ] && echo "$list" | grep -q '"name":"brightness"'; then
  ok controls-list "$(echo "$list" | grep -o '"label":' | wc -l) controls, kinds:$kinds"
else
  fail controls-list "kinds:$kinds $(echo "$list" | head -c 300)"
fi
r=$(put /api/cameras/cam0/controls '{"brightness": 200, "boolean": false, "menu": "Menu Item 4", "button": true}')
if echo "$r" | head -n 1 | grep -q ' 200 ' && [ "$(ctrl brightness)" = 200 ] && [ "$(ctrl boolean)" = 0 ] && [ "$(ctrl menu)" = 4 ]; then
  ok controls-set "brightness $(ctrl brightness), boolean $(ctrl boolean), menu $(ctrl menu) on the device"
else
  fail controls-set "$(echo "$r" | head -c 300); device: brightness $(ctrl brightness) boolean $(ctrl boolean) menu $(ctrl menu)"
fi
r=$(put /api/cameras/cam0/controls '{"brightness": 300}')
if echo "$r" | head -n 1 | grep -q ' 400 ' && echo "$r" | grep -q 'brightness' && [ "$(ctrl brightness)" = 200 ]; then
  ok controls-refused "400: brightness $(echo "$r" | grep -o 'takes an integer from [0-9]* to [0-9]*')"
else
  fail controls-refused "$(echo "$r" | head -c 300)"
fi

# 8. Disconnect (vivid's USB-unplug simulation): ENODEV → RECOVERING; vivid registers the
#    device again once the last handle is closed, so the reopen succeeds → RUNNING.
r0=$(field recoveries)
v4l2-ctl -d /dev/video0 -c disconnect=1 2>/dev/null
n=75; while [ "$(field recoveries)" = "$r0" ] && [ "$n" -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
if [ "$(field recoveries)" != "$r0" ] && wait_state RUNNING 20; then ok disconnect "recoveries $r0 -> $(field recoveries), RUNNING again"; else fail disconnect "$(state) recoveries $(field recoveries) $(reason)"; fi

# 9. The camera gone for good (module unloaded): a start goes STARTING → RECOVERING → FAILED
#    with the reason once the 3 recoveries are spent. Plugged back: a new start runs.
post /api/cameras/cam0/stop > /dev/null
wait_state STOPPED 10
rmmod vivid 2>/dev/null
post /api/cameras/cam0/start > /dev/null
if wait_state FAILED 40; then ok gone "FAILED: $(reason)"; else fail gone "$(state) $(reason)"; fi
vivid_up
post /api/cameras/cam0/start > /dev/null
if wait_state RUNNING 30; then ok replug "job $(field id) RUNNING after the device came back"; else fail replug "$(state) $(reason)"; fi
# The reloaded driver starts at its defaults (brightness 128): camjobd set the saved values at
# the open.
n=25; while [ "$(ctrl brightness)" != 200 ] && [ "$n" -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
if [ "$(ctrl brightness)" = 200 ] && [ "$(ctrl menu)" = 4 ]; then ok controls-reapplied "brightness 200, menu 4 after the driver was reloaded"; else fail controls-reapplied "brightness $(ctrl brightness) menu $(ctrl menu)"; fi
kill -TERM "$CAMJOBD"; wait "$CAMJOBD"; rc=$?
if [ "$rc" -eq 0 ]; then ok sigterm "exit 0"; else fail sigterm "exit $rc"; fi
grep -iE 'panick|error' /tmp/camjobd.err | head -n 5 | sed 's/^/VMTEST info log: /'

# 10. Benchmark: camjobd and ustreamer on the same device, format (YUYV: both encode), size and
#    rate, one after the other; at 640x480 15 fps each serves 8 MJPEG stream clients (busybox
#    wget), at 1280x720 (asked for 30 fps: the highest rate each sustains) one client. Both
#    encode on 2 threads (camjobd encoder_threads 2; ustreamer's default workers on 2 CPUs).
#    Printed: CPU ticks, frames captured and frames delivered to the clients, BENCH_S seconds
#    each. camjobd counts delivered parts itself (http.stream_frames); ustreamer's /state gives
#    each client's current fps, summed and averaged over 3 samples.
BENCH_S=${BENCH_S:-20}
TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
http_field() { get /api/status | grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }
# "name ticks" per thread of process $1, for a CPU breakdown.
threads() { for t in /proc/$1/task/*; do echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done; }
clients() { # PORT PATH N: starts N stream readers, their pids in $CLIENTS
  CLIENTS=""
  n=$3
  while [ "$n" -gt 0 ]; do
    wget -q -O /dev/null "http://127.0.0.1:$1$2" 2>/dev/null &
    CLIENTS="$CLIENTS $!"
    n=$((n - 1))
  done
}
bench_camjobd() { # $1 W, $2 H, $3 fps, $4 clients
  sed -e 's/"snapshot_interval_ms": 500/"snapshot_interval_ms": 1000, "encoder_threads": 2/' \
      -e "s/\"width\": 640, \"height\": 480, \"fps\": 15, \"format\": \"auto\"/\"width\": $1, \"height\": $2, \"fps\": $3, \"format\": \"YUYV\"/" \
      -e 's/"watchdog"/"store": { "enabled": false }, "max_frame_bytes": 2097152, "watchdog"/' /tmp/camjobd.json > /tmp/bench.json
  camjobd --config /tmp/bench.json > /dev/null 2> /tmp/bench.err &
  p=$!
  wait_state RUNNING 60 || { fail "bench-$1" "not RUNNING: $(tail -n 3 /tmp/bench.err)"; kill $p; wait $p; return; }
  grep -o 'granted [^(]*' /tmp/bench.err | head -n 1 | sed 's/^/VMTEST info camjobd /'
  clients 8080 /stream "$4"
  sleep 3
  c0=$(cpu_ticks $p); f0=$(field frames_captured); d0=$(http_field stream_frames); a0=$(http_field streams_active)
  threads $p > /tmp/threads0
  sleep "$BENCH_S"
  c1=$(cpu_ticks $p); f1=$(field frames_captured); d1=$(http_field stream_frames); k=$(field frames_skipped)
  threads $p > /tmp/threads1
  echo "VMTEST info camjobd-${1}x$2 CPU ticks per thread: $(awk 'NR == FNR { t0[$1] += $2; next } { t1[$1] += $2 } END { for (n in t1) if (t1[n] - t0[n] > 0) printf "%s=%d ", n, t1[n] - t0[n] }' /tmp/threads0 /tmp/threads1)"
  kill $CLIENTS 2>/dev/null; kill -TERM $p; wait $p
  echo "VMTEST bench camjobd-${1}x$2 cpu_ticks=$((c1 - c0)) tck=$TCK seconds=$BENCH_S frames=$((f1 - f0)) delivered=$((d1 - d0)) clients=$a0 skipped=$k"
}
bench_ustreamer() { # $1 W, $2 H, $3 fps, $4 clients
  ustreamer --device /dev/video0 --format YUYV --resolution "${1}x$2" --desired-fps "$3" --host 127.0.0.1 --port 8081 > /dev/null 2> /tmp/ustreamer.err &
  p=$!
  n=100; while ! http GET /state 8081 | grep -q '"ok"' && [ "$n" -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
  clients 8081 /stream "$4"
  sleep 3
  c0=$(cpu_ticks $p)
  fps=0
  for i in 1 2 3; do
    sleep "$((BENCH_S / 3))"
    s=$(http GET /state 8081 | grep -o '"fps": *[0-9]*' | tr -dc '0-9\n' | awk '{ t += $1 } END { print t + 0 }')
    fps=$((fps + s))
  done
  sleep "$((BENCH_S - 3 * (BENCH_S / 3)))"
  c1=$(cpu_ticks $p)
  st=$(http GET /state 8081 | grep -o '"captured_fps": *[0-9]*' | head -n 1 | tr -dc '0-9')
  kill $CLIENTS 2>/dev/null; kill -TERM $p; wait $p
  echo "VMTEST bench ustreamer-${1}x$2 cpu_ticks=$((c1 - c0)) tck=$TCK seconds=$BENCH_S frames=$(( ${st:-0} * BENCH_S )) delivered=$(( fps * BENCH_S / 3 )) clients=$4"
}
bench_camjobd 640 480 15 8
bench_ustreamer 640 480 15 8
bench_camjobd 1280 720 30 1
bench_ustreamer 1280 720 30 1
finish
