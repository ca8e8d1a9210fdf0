#!/usr/bin/env bash
# Builds the Debian package for a Pi and installs it there over ssh, then checks /healthz.
#
#   scripts/deploy.sh HOST [PROFILE]     HOST: what ssh takes (pi@beehive.local);
#                                        PROFILE: rpi3, rpi4, rpi5, rpi-zero2w (optional)
#
# Needs ssh access with sudo on the Pi. `apt-get install ./camjobd_<version>_<arch>.deb` there
# installs /usr/bin/camjobd, the systemd unit (enabled and started), the LED udev rule and
# /etc/camjobd/config.json (a conffile: a local change survives upgrades). With PROFILE the
# config is written from that board profile, but only while it is still the packaged one
# (never over a local change). DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
host=${1:?usage: scripts/deploy.sh HOST [PROFILE]}
profile=${2:-}
[ -z "$profile" ] || [ -f "board/$profile.json" ] || { echo "no board profile board/$profile.json" >&2; exit 2; }
run() { if [ "${DRY_RUN:-0}" = 1 ]; then echo "+ $*"; else "$@"; fi; }

# The package architecture of the Pi's userland (a 32-bit Raspberry Pi OS on a Pi 4 or 5 runs a
# 64-bit kernel: `uname -m` would say aarch64) and its CPU (ARMv6 boards cannot run armv7 code).
if [ "${DRY_RUN:-0}" = 1 ]; then debarch=arm64 cpu=aarch64; else
  debarch=$(ssh "$host" dpkg --print-architecture); cpu=$(ssh "$host" uname -m); fi
t=$(target_of_debian_arch "$debarch") ||
  { echo "$host runs $debarch; camjobd packages exist for arm64, armhf and amd64" >&2; exit 2; }
[ "$cpu" != armv6l ] || { echo "$host is an ARMv6 board (Pi 1, Zero, Zero W): camjobd's armhf build needs ARMv7 (Pi 2 and later, Zero 2 W)" >&2; exit 2; }
echo "== $host runs $debarch: building the package"
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "+ scripts/package.sh $t"
  path="target/debian/camjobd_$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)-1_$debarch.deb"
else
  # package.sh prints "== <path>: ..." for the package it made.
  path=$(scripts/package.sh "$t" | tee /dev/stderr | sed -n 's/^== \(.*\.deb\): .*/\1/p' | tail -n 1)
  [ -f "$path" ] || { echo "no package was made" >&2; exit 1; }
fi
deb=$(basename "$path")

# What runs on the Pi, as root: install, maybe the profile, check, restart.
remote=$(mktemp)
trap 'rm -f "$remote"' EXIT
cat > "$remote" <<'REMOTE'
set -eu
deb=$1 profile=${2:-}
# A config changed here (or written from a profile below) is kept at upgrades, without a prompt.
DEBIAN_FRONTEND=noninteractive apt-get install -y \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "/tmp/$deb"
if [ -n "$profile" ]; then
  packaged=$(dpkg-query -W -f='${Conffiles}\n' camjobd | awk '$1 == "/etc/camjobd/config.json" {print $2}')
  if [ "$(md5sum < /etc/camjobd/config.json | cut -d' ' -f1)" = "$packaged" ]; then
    camjobd --board "$profile" --check-config > /etc/camjobd/config.json.new
    mv /etc/camjobd/config.json.new /etc/camjobd/config.json
    echo "config written from board profile $profile"
  else
    echo "/etc/camjobd/config.json was changed here: kept (profile $profile not applied)"
  fi
fi
camjobd --config /etc/camjobd/config.json --check-config > /dev/null
systemctl restart camjobd
for i in $(seq 30); do
  if curl -fsS http://127.0.0.1:8080/healthz >/dev/null 2>&1; then systemctl status camjobd --no-pager | head -n 5; exit 0; fi
  sleep 1
done
systemctl status camjobd --no-pager; journalctl -u camjobd -n 30 --no-pager; exit 1
REMOTE

echo "== copying $deb"
run scp "$path" "$remote" "$host:/tmp/"
echo "== installing, checking /healthz on $host"
run ssh "$host" sudo sh "/tmp/$(basename "$remote")" "$deb" "$profile"
echo "deployed: ssh -L 8080:127.0.0.1:8080 $host, then open http://127.0.0.1:8080/"
