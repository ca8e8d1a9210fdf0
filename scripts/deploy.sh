#!/usr/bin/env bash
# Cross-builds camjobd for a Pi, copies it there, installs the systemd unit and a config, restarts
# the service and checks /healthz on the Pi.
#
#   scripts/deploy.sh HOST [PROFILE]     HOST: what ssh takes (pi@beehive.local);
#                                        PROFILE: rpi3, rpi4 (default), rpi5, rpi-zero2w
#
# Needs ssh access with sudo on the Pi. The first deploy writes /etc/camjobd/config.json from the
# board profile; later deploys keep it (edit it there, then `sudo systemctl restart camjobd`).
# DRY_RUN=1 prints the remote commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
host=${1:?usage: scripts/deploy.sh HOST [PROFILE]}
profile=${2:-rpi4}
[ -f "board/$profile.json" ] || { echo "no board profile board/$profile.json" >&2; exit 2; }
run() { if [ "${DRY_RUN:-0}" = 1 ]; then echo "+ $*"; else "$@"; fi; }

arch=$(if [ "${DRY_RUN:-0}" = 1 ]; then echo aarch64; else ssh "$host" uname -m; fi)
case "$arch" in
  aarch64) t=aarch64; triple=aarch64-unknown-linux-gnu ;;
  armv7l|armv6l) t=armv7; triple=armv7-unknown-linux-gnueabihf ;;
  *) echo "$host is $arch; camjobd builds for aarch64 and armv7" >&2; exit 2 ;;
esac
echo "== $host is $arch: building $triple"
run scripts/cross-build.sh "$t"

echo "== copying"
run scp "target/$triple/release/camjobd" board/camjobd.service board/99-camjobd-leds.rules "$host:/tmp/"

echo "== installing (user camjobd in video and gpio, unit, config from board/$profile.json)"
run ssh "$host" sudo sh -eu -c "'
  id camjobd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/camjobd --shell /usr/sbin/nologin camjobd
  usermod -aG video camjobd
  if getent group gpio >/dev/null; then usermod -aG gpio camjobd; fi
  install -m 755 /tmp/camjobd /usr/local/bin/camjobd
  install -d -m 755 /etc/camjobd
  [ -f /etc/camjobd/config.json ] || /usr/local/bin/camjobd --board $profile --check-config > /etc/camjobd/config.json
  /usr/local/bin/camjobd --config /etc/camjobd/config.json --check-config > /dev/null
  install -m 644 /tmp/camjobd.service /etc/systemd/system/camjobd.service
  install -m 644 /tmp/99-camjobd-leds.rules /etc/udev/rules.d/99-camjobd-leds.rules
  udevadm control --reload && udevadm trigger --subsystem-match=leds || true
  systemctl daemon-reload
  systemctl enable --quiet camjobd
  systemctl restart camjobd
'"

echo "== checking /healthz on $host"
run ssh "$host" sh -c "'
  for i in \$(seq 30); do
    if curl -fsS http://127.0.0.1:8080/healthz >/dev/null 2>&1; then systemctl status camjobd --no-pager | head -n 5; exit 0; fi
    sleep 1
  done
  systemctl status camjobd --no-pager; journalctl -u camjobd -n 30 --no-pager; exit 1
'"
echo "deployed: ssh -L 8080:127.0.0.1:8080 $host, then open http://127.0.0.1:8080/"
