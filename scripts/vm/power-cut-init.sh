#!/bin/sh
# PID 1 of the power-cut test (scripts/power-cut-test.sh packs it into the initramfs as /init).
# Mounts the virtio disk (ext4, noatime, as Raspberry Pi OS mounts its card) at /data and runs
# camjobd on it, writing 10 snapshots a second; the host reaches the API through qemu's user
# network (host loopback port → guest 8080; that network is reachable only through the forward,
# hence allow_open) and cuts the power by killing qemu. Console lines
# start with "CUT ": "CUT up", "CUT log <camjobd's warnings and start-up lines>", "CUT io
# <sectors written>" (from /sys/block/vda/stat, after a sync asked for on port 9000), "CUT FAIL".
# Port 9000 takes one word per connection: "sync" (flush everything, then report the sectors
# written) or "halt" (stop camjobd with SIGTERM, unmount, power off: a clean shutdown).
export PATH=/bin:/sbin:/usr/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
say() { echo "CUT $*"; }
off() { sync; poweroff -f; }
arg() { sed -n "s/.*$1=\([a-z0-9]*\).*/\1/p" /proc/cmdline; }
fsync=$(arg CUT_FSYNC)

for m in virtio_pci virtio_blk virtio_net crc32c_generic ext4; do
  modprobe "$m" 2>/dev/null || say "info modprobe $m failed"
done
n=100
while { [ ! -e /dev/vda ] || [ ! -e /sys/class/net/eth0 ]; } && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
mkdir -p /data
if ! mount -t ext4 -o noatime /dev/vda /data; then
  say "FAIL mount: /dev/vda does not mount as ext4 (see the console)"; off
fi

cat > /tmp/camjobd.json <<JSON
{
  "http": { "bind": "0.0.0.0:8080", "workers": 1, "allow_open": true },
  "storage": { "dir": "/data/camjobd", "fsync": "$fsync", "min_free_bytes": 16777216,
               "journal": { "batch_ms": 1000, "max_file_bytes": 65536, "max_files": 4 } },
  "exports": { "max_files_per_s": 50, "max_bytes": 33554432 },
  "log": { "level": "info" },
  "cameras": [ { "name": "cam0",
    "source": { "kind": "synthetic", "width": 320, "height": 240, "fps": 10 },
    "snapshot_interval_ms": 100,
    "store": { "max_files": 300, "max_bytes": 8388608 } } ]
}
JSON
camjobd --config /tmp/camjobd.json > /tmp/camjobd.out 2> /tmp/camjobd.err &
CAMJOBD=$!
# What the host checks in camjobd's log: the start-up scan, the journal, reaped exports.
tail -f /tmp/camjobd.err | while IFS= read -r l; do
  case "$l" in *journal*|*exports*|*deleted*|*found*|*WARN*|*ERROR*|*panick*) echo "CUT log $l" ;; esac
done &
sectors() { awk '{print $7}' /sys/block/vda/stat; }
say "info $(ifconfig eth0 2>&1 | grep -o 'inet addr:[0-9.]*' || echo 'eth0 has no address')"
sleep 1
kill -0 "$CAMJOBD" 2>/dev/null || { say "FAIL camjobd exited at start:"; tail -n 20 /tmp/camjobd.err /tmp/camjobd.out; }
say up
while :; do
  cmd=$(nc -l -p 9000 < /dev/null | head -n 1)
  case "$cmd" in
    sync) sync; say "io $(sectors)" ;;
    halt)
      kill -TERM "$CAMJOBD"
      n=100; while kill -0 "$CAMJOBD" 2>/dev/null && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
      kill -0 "$CAMJOBD" 2>/dev/null && say "FAIL halt: camjobd did not stop within 10 s of SIGTERM"
      wait "$CAMJOBD"; say "exit $?"
      umount /data || say "FAIL umount"
      say halted
      off ;;
  esac
done
