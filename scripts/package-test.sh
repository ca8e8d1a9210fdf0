#!/usr/bin/env bash
# Installs the amd64 package into a throwaway Debian root made from Debian's packages
# (mmdebstrap, bookworm) and checks what a Debian maintainer would:
#   dpkg -i succeeds; the system user exists in the video group; the files are where they
#   belong; systemd-analyze verify accepts the unit; camjobd --check-config passes on the
#   shipped conffile; an upgrade to a newer version keeps a locally changed conffile (no
#   prompt, no .dpkg-dist); remove keeps the config and the data; purge leaves nothing behind
#   (but the system user, as Debian does).
#
#   scripts/package-test.sh            (root; builds the packages with scripts/package.sh)
#
# Prints each step and its time. Needs mmdebstrap (installed when missing) and network access
# to the Debian mirror apt uses.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
start=$(date +%s)
step() { printf '== %s  (%d s)\n' "$*" "$(( $(date +%s) - start ))"; }
fail() { echo "PACKAGE TEST FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  # chroot and dpkg in the throwaway root need root; keep the caller's cargo and rustup.
  command -v sudo >/dev/null || { echo "scripts/package-test.sh needs root (chroot, dpkg in the root)" >&2; exit 2; }
  exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME bash "$0" "$@"
fi
command -v mmdebstrap >/dev/null || apt_install mmdebstrap

step "packages: 0.1.0-1 and a newer 0.1.0-2"
scripts/package.sh x86_64 | grep -E '^==|^lintian' 
old=$(ls target/debian/camjobd_*_amd64.deb | grep -v -- '-2_amd64' | head -n 1)
cp "$old" /tmp/camjobd-old.deb
DEB_VERSION=0.1.0-2 scripts/package.sh x86_64 | grep -E '^==|^lintian'
new=target/debian/camjobd_0.1.0-2_amd64.deb
[ -f "$new" ] || fail "no $new"

root=$(mktemp -d /tmp/camjobd-pkgroot.XXXXXX)
cleanup() {
  for m in proc dev/pts dev sys; do umountpoint "$root/$m" 2>/dev/null && umount -l "$root/$m" || true; done
  rm -rf "$root"
}
umountpoint() { mountpoint -q "$1"; }
trap cleanup EXIT

step "a Debian bookworm root (mmdebstrap, from the mirror apt uses)"
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
mmdebstrap --quiet --variant=apt --include=adduser,systemd,init-system-helpers,ca-certificates \
  bookworm "$root" "$mirror" 2>&1 | tail -n 3
mount -t proc proc "$root/proc"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
snapshot() {
  # Every path and its type, owner and mode, except what changes on its own.
  (cd "$root" && find . -xdev \( -path ./proc -o -path ./tmp -o -path ./var/log -o -path ./var/cache \
    -o -path ./var/lib/dpkg -o -path ./var/lib/apt -o -path ./run \) -prune -o -printf '%p %y %u %m\n' | sort)
}
snapshot > "$root/../before.$$"
cp /tmp/camjobd-old.deb "$root/tmp/old.deb"; cp "$new" "$root/tmp/new.deb"

step "dpkg -i $(basename "$old")"
in_root dpkg -i /tmp/old.deb </dev/null || fail "dpkg -i"
in_root getent passwd camjobd >/dev/null || fail "no camjobd user"
in_root id -nG camjobd | grep -qw video || fail "camjobd is not in the video group: $(in_root id -nG camjobd)"
for f in /usr/bin/camjobd /etc/camjobd/config.json /usr/lib/systemd/system/camjobd.service \
         /usr/lib/udev/rules.d/99-camjobd-leds.rules /usr/share/doc/camjobd/copyright \
         /usr/share/doc/camjobd/changelog.Debian.gz /usr/share/doc/camjobd/examples/csi-camera.json; do
  [ -e "$root$f" ] || fail "$f missing"
done
in_root dpkg-query -W -f='${Conffiles}\n' camjobd | grep -q '/etc/camjobd/config.json' || fail "config.json is not a conffile"
[ -L "$root/etc/systemd/system/multi-user.target.wants/camjobd.service" ] || fail "the unit is not enabled"
echo "installed: user camjobd ($(in_root id -nG camjobd)), unit enabled, conffile /etc/camjobd/config.json"

step "systemd-analyze verify"
# systemd refuses to start a unit naming a group the system lacks (216/GROUP), and nothing
# here starts it: check the names.
for g in $(sed -n 's/^\(SupplementaryGroups\|Group\)=//p' "$root/usr/lib/systemd/system/camjobd.service"); do
  in_root getent group "$g" >/dev/null || fail "the unit names group $g, which a plain Debian lacks"
done
out=$(in_root systemd-analyze verify /usr/lib/systemd/system/camjobd.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || { echo "$out"; grep -qi 'camjobd.service' <<<"$out" && fail "systemd-analyze verify complained about the unit"; }
echo "systemd-analyze verify: accepted"

step "camjobd --check-config on the conffile"
in_root camjobd --check-config --config /etc/camjobd/config.json >/dev/null || fail "--check-config"
in_root camjobd --version

step "a local change to the conffile survives the upgrade"
sed -i 's/127.0.0.1:8080/127.0.0.1:8089/' "$root/etc/camjobd/config.json"
mkdir -p "$root/var/lib/camjobd/cam0" && echo data > "$root/var/lib/camjobd/cam0/keep.jpg"
in_root dpkg -i /tmp/new.deb </dev/null || fail "upgrade"
[ "$(in_root dpkg-query -W -f='${Version}' camjobd)" = 0.1.0-2 ] || fail "not upgraded"
grep -q '127.0.0.1:8089' "$root/etc/camjobd/config.json" || fail "the local change was lost"
[ ! -e "$root/etc/camjobd/config.json.dpkg-dist" ] && [ ! -e "$root/etc/camjobd/config.json.dpkg-old" ] || fail "dpkg left .dpkg-* files"
effective=$(in_root camjobd --check-config --config /etc/camjobd/config.json) || fail "the changed config does not check"
grep -q 8089 <<<"$effective" || fail "the changed config is not the one in effect"
echo "upgraded to 0.1.0-2; /etc/camjobd/config.json kept its local change"

step "dpkg --remove keeps config and data; dpkg --purge leaves nothing"
in_root dpkg --remove camjobd </dev/null >/dev/null || fail "remove"
[ -f "$root/etc/camjobd/config.json" ] || fail "remove deleted the conffile"
[ -f "$root/var/lib/camjobd/cam0/keep.jpg" ] || fail "remove deleted the data"
[ ! -e "$root/usr/bin/camjobd" ] || fail "remove left the binary"
in_root dpkg --purge camjobd </dev/null >/dev/null || fail "purge"
snapshot > "$root/../after.$$"
left=$(diff "$root/../before.$$" "$root/../after.$$" | grep '^[<>]' | grep -vE ' \./etc/(passwd|group|shadow|gshadow)-? ' || true)
rm -f "$root/../before.$$" "$root/../after.$$"
[ -z "$left" ] || fail "purge left (or changed) these: $left"
echo "purged: nothing left but the camjobd entries in /etc/passwd, group, shadow and gshadow"
step "package test passed"
