#!/usr/bin/env bash
# Power cuts on a real filesystem: camjobd in a qemu VM (Debian's stock kernel, busybox
# initramfs) on a virtio disk formatted ext4 as a Pi's SD card is, writing 10 snapshots a second
# with its journal and exports running; the power is cut at a random moment (qemu killed with
# SIGKILL: the guest's page cache is lost), e2fsck runs, the VM boots again and what camjobd
# lists is checked (scripts/vm/power_cut.py says what). The last boot shuts down cleanly and the
# disk is checked from the host (debugfs), with a 20 s measurement of bytes written per
# snapshot and write time.
#
#   scripts/power-cut-test.sh [CUTS]        (default 3, storage.fsync "always", the default;
#                                            docs/testing.md reports a run of 50)
#   FSYNC=never scripts/power-cut-test.sh 20
#   FSYNC=never,always scripts/power-cut-test.sh 10     (both, one after the other, fresh disks)
#
# Last line: "power cuts: N, failed: 0, fsync: MODE, broken listed snapshots: 0, lost listed
# snapshots: 0"; exit 0 only if every cut passed (with "never", snapshots listed before a cut
# and gone after it are counted as lost, not failed: that is what "never" gives up). Installs on a fresh Debian machine: qemu-system-x86, busybox-static, cpio,
# kmod, e2fsprogs, libjpeg-turbo-progs (djpeg), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cuts=${1:-3}
modes=${FSYNC:-always}
work="$root/target/vm"
mkdir -p "$work"
. scripts/lib.sh

need=()
for pair in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio depmod:kmod \
            mkfs.ext4:e2fsprogs debugfs:e2fsprogs djpeg:libjpeg-turbo-progs python3:python3; do
  command -v "${pair%%:*}" >/dev/null || PATH="$PATH:/sbin:/usr/sbin" command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
apt_install $(printf '%s\n' "${need[@]}" | sort -u)
export PATH="$PATH:/sbin:/usr/sbin"

# The same release binary as the other VM and soak scripts (scripts/test.sh sets the features).
cargo build --locked --release ${CAMJOBD_FEATURES:+--features "$CAMJOBD_FEATURES"} --bin camjobd
kver=$(vm_kernel "$work" | tail -n 1)
vm_initramfs "$work" "$kver" "$work/power-cut-initramfs" scripts/vm/power-cut-init.sh \
  "virtio_pci virtio_blk virtio_net crc32c_generic ext4" "$root/target/release/camjobd"
vm_pack "$work/power-cut-initramfs" "$work/power-cut-initrd.gz"

# A free loopback port pair for the API (P) and the init script's command port (P+1).
port=$(python3 -c 'import socket
for p in range(20000, 30000, 2):
    try:
        a, b = socket.socket(), socket.socket()
        a.bind(("127.0.0.1", p)); b.bind(("127.0.0.1", p + 1)); a.close(); b.close(); print(p); break
    except OSError: pass')

status=0
for mode in ${modes//,/ }; do
  disk="$work/power-cut-$mode.img"
  rm -f "$disk"
  truncate -s 256M "$disk"
  mkfs.ext4 -q -F "$disk"
  python3 scripts/vm/power_cut.py --cuts "$cuts" --fsync "$mode" --kernel "$work/kernel/boot/vmlinuz-$kver" \
    --initrd "$work/power-cut-initrd.gz" --disk "$disk" --work "$work" --accel "$(vm_accel)" --port "$port" \
    ${BENCH_S:+--bench-s "$BENCH_S"} || status=$?
  rm -f "$disk"
done
exit "$status"
