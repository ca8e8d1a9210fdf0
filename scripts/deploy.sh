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
host=${1:?usage: scripts/deploy.sh HOST [PROFILE]}
profile=${2:-}
[ -z "$profile" ] || [ -f "board/$profile.json" ] || { echo "no board profile board/$profile.json" >&2; exit 2; }
run() { if [ "${DRY_RUN:-0}" = 1 ]; then echo "+ $*"; else "$@"; fi; }

arch=$(if [ "${DRY_RUN:-0}" = 1 ]; then echo aarch64; else ssh "$host" uname -m; fi)
case "$arch" in
  aarch64) t=aarch64; debarch=arm64 ;;
  armv7l|armv6l) t=armv7; debarch=armhf ;;
  x86_64) t=x86_64; debarch=amd64 ;;
  *) echo "$host is $arch; camjobd packages exist for arm64, armhf and amd64" >&2; exit 2 ;;
esac
echo "== $host is $arch: building the $debarch package"
run scripts/package.sh "$t"
version=$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)
deb="camjobd_${version}-1_${debarch}.deb"

# What runs on the Pi, as root: install, maybe the profile, check, restart.
remote=$(mktemp)
trap 'rm -f "$remote"' EXIT
cat > "$remote" <<'REMOTE'
set -eu
deb=$1 profile=${2:-}
DEBIAN_FRONTEND=noninteractive apt-get install -y "/tmp/$deb"
if [ -n "$profile" ]; then
  packaged=$(dpkg-query -W -f='${Conffiles}\n' camjobd | awk '$1 == "/etc/camjobd/config.json" {print $2}')
  if [ "$(md5sum < /etc/camjobd/config.json | cut -d' ' -f1)" = "$packaged" ]; then
    camjobd --board "$profile" --check-config > /etc/camjobd/config.json
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
run scp "target/debian/$deb" "$remote" "$host:/tmp/"
echo "== installing, checking /healthz on $host"
run ssh "$host" sudo sh "/tmp/$(basename "$remote")" "$deb" "$profile"
echo "deployed: ssh -L 8080:127.0.0.1:8080 $host, then open http://127.0.0.1:8080/"
