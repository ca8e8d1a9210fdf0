#!/usr/bin/env bash
# The real V4L2 path, tested without a camera: boots Debian's stock kernel in qemu with the
# kernel's virtual camera driver (vivid) and camjobd (built with the v4l2 feature) in a busybox
# initramfs, runs scripts/vm/init.sh inside, and checks what it reports on the serial console.
# Also benchmarks camjobd against ustreamer on the same vivid device (640x480 with 8 MJPEG stream
# clients, 1280x720 with one; both encoding on 2 threads): CPU per delivered frame and delivered
# fps (printed, not asserted), and camjobd's CPU per thread.
#
#   scripts/vm-test.sh            (BENCH_S=20: seconds per benchmark run inside the VM)
#
# Installs on a fresh Debian machine: qemu-system-x86, busybox-static, cpio, kmod, v4l-utils,
# ustreamer, libjpeg-turbo-progs (djpeg, to decode the snapshot) and libclang1-14 (the v4l
# crate's bindgen). KVM is used when /dev/kvm works, else TCG (software emulation).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/target/vm"
start=$(date +%s)
log() { printf '\n== %s\n' "$*"; }

log "packages"
. scripts/lib.sh
need=()
for pair in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio depmod:kmod v4l2-ctl:v4l-utils \
            ustreamer:ustreamer djpeg:libjpeg-turbo-progs; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
read -r -a clang <<< "$(libclang_packages)"
need+=("${clang[@]}")
apt_install "${need[@]}"
echo "qemu: $(qemu-system-x86_64 --version | head -n 1)"

log "build (release, --features v4l2)"
cargo build --locked --release --features v4l2 --bin camjobd 2>&1 | tail -n 1

log "kernel"
kver=$(vm_kernel "$work" | tail -n 1)
echo "kernel: $kver"

log "initramfs"
ir="$work/initramfs"
vm_initramfs "$work" "$kver" "$ir" scripts/vm/init.sh vivid \
  "$root/target/release/camjobd" /usr/bin/v4l2-ctl /usr/bin/ustreamer
vm_pack "$ir" "$work/initrd.gz"
echo "initrd: $(du -h "$work/initrd.gz" | cut -f1)"

log "boot"
accel=$(vm_accel)
echo "accelerator: $accel"
console="$work/console.log"
t0=$(date +%s)
status=0
timeout 900 qemu-system-x86_64 -machine q35,accel="$accel" -cpu max -smp 2 -m 1024 -nographic -no-reboot \
  -kernel "$work/kernel/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 BENCH_S=${BENCH_S:-20}" > "$console" 2>&1 || status=$?
echo "VM ran $(( $(date +%s) - t0 )) s (qemu exit $status)"

log "results"
tr -d '\r' < "$console" > "$console.txt"
grep '^VMTEST \(ok\|FAIL\|info\)' "$console.txt" || true
pass=$(grep -c '^VMTEST ok' "$console.txt" || true)
failed=$(grep -c '^VMTEST FAIL' "$console.txt" || true)
# The snapshot must decode at the configured size.
sed -n '/^VMTEST jpeg-begin/,/^VMTEST jpeg-end/p' "$console.txt" | grep -v '^VMTEST' | base64 -d > "$work/latest.jpg" 2>/dev/null || true
size=$(djpeg -pnm "$work/latest.jpg" 2>/dev/null | head -c 20 | sed -n 2p || true)
if [ "$size" = "640 480" ]; then
  echo "VMTEST ok jpeg latest.jpg decodes at 640x480 ($(stat -c %s "$work/latest.jpg") bytes)"; pass=$((pass + 1))
else
  echo "VMTEST FAIL jpeg latest.jpg does not decode at 640x480 (got '${size}')"; failed=$((failed + 1))
fi
grep -q '^VMTEST done' "$console.txt" || { echo "VMTEST FAIL done: the scenario did not finish (see $console)"; failed=$((failed + 1)); tail -n 30 "$console.txt"; }
# The benchmark, like with like: CPU per delivered frame, and delivered frames per second.
awk '/^VMTEST bench/ {
  split("", kv); for (i = 3; i <= NF; i++) { n = index($i, "="); if (n) kv[substr($i, 1, n - 1)] = substr($i, n + 1) }
  cpu = kv["cpu_ticks"] / kv["tck"]; d = kv["delivered"] + 0
  dash = index($3, "-"); prog = substr($3, 1, dash - 1); size = substr($3, dash + 1); key = prog " " size
  sizes[size] = 1
  per[key] = d > 0 ? 1000 * cpu / d : 0; fps[key] = d / kv["seconds"] / (kv["clients"] > 0 ? kv["clients"] : 1)
  printf "bench %-20s %d client(s): %.2f CPU s in %d s, %d frames captured, %d delivered (%.1f fps per client), %.2f ms CPU per delivered frame\n", \
    $3, kv["clients"], cpu, kv["seconds"], kv["frames"], d, fps[key], per[key]
} END {
  for (s in sizes)
    if (per["ustreamer " s] > 0 && fps["ustreamer " s] > 0)
      printf "bench ratio camjobd/ustreamer at %s: CPU per delivered frame %.2f, delivered fps %.2f\n", s, per["camjobd " s] / per["ustreamer " s], fps["camjobd " s] / fps["ustreamer " s]
}' "$console.txt"
echo "vm-test: $pass passed, $failed failed in $(( $(date +%s) - start )) s"
[ "$failed" -eq 0 ] && [ "$pass" -gt 0 ]
