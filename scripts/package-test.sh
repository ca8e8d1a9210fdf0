#!/usr/bin/env bash
# Installs the amd64 package into a throwaway Debian root made from Debian's packages
# (mmdebstrap, bookworm) and checks what a Debian maintainer would:
#   dpkg -i succeeds; the system user exists in the video group; the files are where they
#   belong; systemd-analyze verify accepts the unit and `systemd-analyze security` scores its
#   exposure at most 3.0; camjobd --check-config passes on the shipped conffile; the root boots
#   (systemd-nspawn) and its systemd starts camjobd.service under the unit's whole sandbox,
#   where it serves, captures, runs a child, exports, talks MQTT and stops cleanly; an upgrade
#   to a newer version keeps a locally changed conffile (no prompt, no .dpkg-dist); remove
#   keeps the config and the data; purge leaves nothing behind (but the system user, as Debian
#   does).
#
#   scripts/package-test.sh            (root; builds the packages with scripts/package.sh)
#
# Prints each step and its time. Needs mmdebstrap and systemd-nspawn (systemd-container; both
# installed when missing) and network access to the Debian mirror apt uses.
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
missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
apt_install "${missing[@]}"

# The boot step. systemd-nspawn boots the root with the package installed: its systemd
# (bookworm's 252) starts camjobd.service as on a Pi, with every restriction of the unit
# (seccomp filter, namespaces, user namespace, device policy, capabilities), and a check unit
# runs after it, writes its findings to $boot/report and powers the container off.
#   --volatile=overlay   the root is read-only below a tmpfs: the boot changes nothing in it
#                        (the purge check below still compares the root with itself)
#   --private-network    a network namespace with only loopback: the container's port 8080 and
#                        MQTT broker are its own, and camjobd can bind 0.0.0.0 safely
#   --register=no --keep-unit   no systemd on the host (this is a container's PID 1 elsewhere)
#   --system-call-filter   nspawn's own filter refuses bpf() and clock_adjtime() by default:
#                        bpf lets the inner systemd load the cgroup device program that enforces
#                        DevicePolicy=closed; clock_adjtime/adjtimex let camjobd's read-only
#                        adjtimex through, as on a Pi (setting the clock still needs
#                        CAP_SYS_TIME, which nspawn drops)
#   SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1   cgroup v2 inside, as on Raspberry Pi OS Bookworm
# The test's config (bound over the conffile): a synthetic camera, a pipe camera whose child
# reads a JPEG only the video group may read (so the supplementary groups survive
# PrivateUsers=), the API on 0.0.0.0 with a token file only the camjobd group may read, and
# MQTT to localhost (name resolution, TCP). One drop-in: a call the filter refuses kills
# (SIGSYS) instead of failing with EPERM, so that nothing refused goes unnoticed here.
# Bounded: 120 s for the whole boot (a run takes about a second), then SIGTERM (the container
# halts), then SIGKILL, and whatever of the container outlived systemd-nspawn is killed.
boot_test() {
  boot_start=$(date +%s.%N)
  local video_gid camjobd_gid status=0
  video_gid=$(in_root getent group video | cut -d: -f3)
  camjobd_gid=$(in_root getent group camjobd | cut -d: -f3)
  chmod 0755 "$boot"
  # A 16x16 grey JPEG (made once with ffmpeg), the pipe camera's frame.
  base64 -d > "$boot/frame.jpg" <<'EOF'
/9j/4AAQSkZJRgABAgAAAQABAAD//gAQTGF2YzU5LjM3LjEwMAD/2wBDAAgUFBcUFxsbGxsbGyAe
ICEhISAgICAhISEkJCQqKiokJCQhISQkKCgqKi4vLisrKisvLzIyMjw8OTlGRkhWVmf/xABKAAEA
AAAAAAAAAAAAAAAAAAAAAQEAAAAAAAAAAAAAAAAAAAAAEAEAAAAAAAAAAAAAAAAAAAAAEQEAAAAA
AAAAAAAAAAAAAAAA/8AAEQgAEAAQAwEiAAIRAAMRAP/aAAwDAQACEQMRAD8AAA//2Q==
EOF
  chgrp "$video_gid" "$boot/frame.jpg" && chmod 0640 "$boot/frame.jpg"
  printf 'test-token-%s\n' "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" > "$boot/token"
  chgrp "$camjobd_gid" "$boot/token" && chmod 0640 "$boot/token"
  # mmdebstrap makes no /etc/hosts; a Pi has one, and camjobd resolves the broker through it.
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$boot/hosts"
  cat > "$boot/config.json" <<'EOF'
{
  "http": { "bind": "0.0.0.0:8080", "token_file": "/etc/camjobd/token" },
  "storage": { "dir": "/var/lib/camjobd" },
  "led": { "kind": "none" },
  "mqtt": { "url": "mqtt://localhost:1883" },
  "cameras": [
    { "name": "cam0", "source": { "kind": "synthetic", "width": 320, "height": 240, "fps": 5 },
      "autostart": true, "snapshot_interval_ms": 500 },
    { "name": "pipe", "source": { "kind": "pipe", "command": ["/bin/sh", "-c",
        "while cat /srv/camjobd-check/frame.jpg; do sleep 0.2; done"] },
      "autostart": true, "snapshot_interval_ms": 500 }
  ]
}
EOF
  mkdir "$boot/camjobd.service.d"
  printf '[Service]\n# The test only: a refused call kills instead of failing with EPERM.\nSystemCallErrorNumber=\n' \
    > "$boot/camjobd.service.d/sigsys.conf"
  cat > "$boot/camjobd-check.service" <<'EOF'
[Unit]
Description=camjobd package test: the service as systemd started it
After=camjobd.service mosquitto.service
SuccessAction=poweroff
FailureAction=poweroff
[Service]
Type=oneshot
ExecStart=/bin/bash /srv/camjobd-check/check.sh
StandardOutput=append:/srv/camjobd-check/report
StandardError=inherit
TimeoutStartSec=90
EOF
  cat > "$boot/check.sh" <<'EOF'
#!/bin/bash
# Runs in the booted root after camjobd.service has started (or failed). Last line: PASS.
set -u
token=$(head -n 1 /srv/camjobd-check/token)
fail() {
  echo "--- journal"; journalctl -b -u camjobd -u mosquitto --no-pager -o short-monotonic | tail -n 40
  systemctl status --no-pager camjobd | head -n 12
  echo "FAIL: $*"; exit 1
}
api() { curl -sS --max-time 5 -H "Authorization: Bearer $token" "$@"; }
# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, every 0.5 s.
wait_for() {
  local n=$(( $1 * 2 )) what=$2; shift 2
  until "$@"; do n=$((n - 1)); [ "$n" -gt 0 ] || fail "$what"; sleep 0.5; done
}
state=$(systemctl is-active camjobd)
[ "$state" = active ] || fail "camjobd.service is $state ($(systemctl show -p Result camjobd))"
pid=$(systemctl show -p MainPID --value camjobd)
echo "camjobd.service active, pid $pid, $(systemctl show -p StatusText camjobd)"

# The sandbox is really there (not skipped by a systemd that could not set it up).
st=/proc/$pid/status
grep -q '^Seccomp:[[:space:]]*2$' $st || fail "no seccomp filter: $(grep Seccomp: $st)"
grep -q '^NoNewPrivs:[[:space:]]*1$' $st || fail "NoNewPrivs is not set"
grep -q '^CapBnd:[[:space:]]*0*$' $st || fail "capabilities left: $(grep CapBnd: $st)"
for ns in user mnt uts; do
  [ "$(readlink /proc/$pid/ns/$ns)" != "$(readlink /proc/1/ns/$ns)" ] || fail "camjobd shares PID 1's $ns namespace"
done
[ "$(wc -l < /proc/$pid/uid_map)" = 2 ] || fail "PrivateUsers: uid_map is $(cat /proc/$pid/uid_map)"
echo "sandbox: seccomp filter, no new privileges, no capabilities; own user (root and camjobd mapped), mount and UTS namespaces; groups $(grep '^Groups:' $st | cut -f2)"

# DevicePolicy=closed: in camjobd's cgroup a device outside DeviceAllow= is refused, /dev/null is not.
cg=/sys/fs/cgroup$(systemctl show -p ControlGroup --value camjobd)
mknod -m 0666 /dev/camjobd-check-misc c 10 237
in_cgroup() { sh -c 'echo $$ > "$1/cgroup.procs" && exec 3<>"$2"' sh "$cg" "$1" 2>/dev/null; }
in_cgroup /dev/null || fail "DevicePolicy: /dev/null refused in camjobd's cgroup"
! in_cgroup /dev/camjobd-check-misc || fail "DevicePolicy: a misc device (10:237) opened in camjobd's cgroup"
sh -c 'exec 3<>/dev/camjobd-check-misc' || fail "the misc device does not open outside camjobd's cgroup either"
rm -f /dev/camjobd-check-misc
echo "device policy: /dev/null opens in camjobd's cgroup, a device outside DeviceAllow= does not"

[ "$(api http://127.0.0.1:8080/healthz)" = ok ] || fail "/healthz does not answer ok"
running() { api http://127.0.0.1:8080/api/status | grep -q "\"camera\":\"$1\",\"job\":{[^}]*\"state\":\"RUNNING\""; }
wait_for 20 "cam0 is not RUNNING" running cam0
wait_for 20 "the pipe camera is not RUNNING (its child reads a file of the video group)" running pipe
echo "healthz ok; cam0 (synthetic) and pipe (a child reading a video-group file) RUNNING"
# /api/status' clock.synchronized is null when adjtimex fails (ProtectClock='s filter does that).
clock=$(api http://127.0.0.1:8080/api/status | grep -o '"synchronized":[a-z]*')
[ "$clock" = '"synchronized":true' ] || [ "$clock" = '"synchronized":false' ] || fail "the adjtimex read failed: $clock"
metrics() { api http://127.0.0.1:8080/metrics; }
mqtt_up() { metrics | grep -q '^camjobd_mqtt_connected 1$'; }
wait_for 15 "MQTT is not connected" mqtt_up
echo "adjtimex read (${clock#*:}: the kernel answered); MQTT connected to localhost:1883"

to=$(( $(date +%s) + 60 ))
id=$(api -X POST -H 'Content-Type: application/json' \
  -d "{\"camera\":\"cam0\",\"from\":0,\"to\":$to,\"kind\":\"archive\"}" http://127.0.0.1:8080/api/exports \
  | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
[ -n "$id" ] || fail "the export was not accepted"
export_done() { api "http://127.0.0.1:8080/api/exports/$id" | grep -q '"state":"SUCCEEDED"'; }
wait_for 15 "export $id did not succeed" export_done
for t in /proc/$pid/task/*; do
  [ "$(cat $t/comm)" = export-0 ] || continue
  [ "$(awk '{print $19}' $t/stat)" = 19 ] || fail "export-0 is not at nice 19"
  ionice -p "${t##*/}" | grep -q '^idle' || fail "export-0 is not in the idle I/O class: $(ionice -p "${t##*/}")"
done
echo "export $id SUCCEEDED; export-0 at nice 19, idle I/O class (setpriority, ioprio_set)"

refused=$(journalctl -b -u camjobd -o cat | grep -iE 'operation not permitted|permission denied|bad system call|could not lower' || true)
[ -z "$refused" ] || fail "camjobd was refused something: $refused"
[ "$(systemctl show -p NRestarts --value camjobd)" = 0 ] || fail "camjobd was restarted"
systemctl stop camjobd
[ "$(systemctl show -p Result --value camjobd)" = success ] || fail "the stop did not end in success"
[ "$(systemctl show -p ExecMainStatus --value camjobd)" = 0 ] || fail "camjobd exited with $(systemctl show -p ExecMainStatus --value camjobd)"
left=$(find /proc -maxdepth 1 -regex '/proc/[0-9]+' -user camjobd)
[ -z "$left" ] || fail "processes of camjobd left after the stop: $left"
echo "stopped: exit 0, no restart, nothing refused in the journal, no process left (the pipe child's group killed)"
echo PASS
EOF
  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 timeout --kill-after=10 120 \
    systemd-nspawn --quiet --register=no --keep-unit --private-network --volatile=overlay \
    --system-call-filter="bpf clock_adjtime adjtimex" --directory="$root" --machine="$machine" \
    --setenv=CAMJOBD_TEST_MACHINE="$machine" \
    --bind="$boot:/srv/camjobd-check" \
    --bind-ro="$boot/config.json:/etc/camjobd/config.json" \
    --bind-ro="$boot/token:/etc/camjobd/token" \
    --bind-ro="$boot/hosts:/etc/hosts" \
    --bind-ro="$boot/camjobd.service.d:/etc/systemd/system/camjobd.service.d" \
    --bind-ro="$boot/camjobd-check.service:/etc/systemd/system/camjobd-check.service" \
    --boot -- systemd.wants=camjobd-check.service >"$boot/console.log" 2>&1 || status=$?
  stop_container
  if [ "$(tail -n 1 "$boot/report" 2>/dev/null)" != PASS ]; then
    if [ -s "$boot/report" ]; then
      cat "$boot/report"
    else
      echo "--- no report (the check did not run); the container's console:"
      sed 's/\x1b\[[0-9;]*m//g' "$boot/console.log" | tail -n 40
    fi
    [ "$status" != 124 ] || fail "the boot did not end within 120 s"
    fail "camjobd under its unit's sandbox: $(grep '^FAIL' "$boot/report" 2>/dev/null || echo "no result (systemd-nspawn exited with $status)")"
  fi
  grep -v '^PASS$' "$boot/report"
}

step "packages: 0.1.0-1 and a newer 0.1.0-2"
scripts/package.sh x86_64 | grep -E '^==|^lintian' 
old=$(ls target/debian/camjobd_*_amd64.deb | grep -v -- '-2_amd64' | head -n 1)
cp "$old" /tmp/camjobd-old.deb
DEB_VERSION=0.1.0-2 scripts/package.sh x86_64 | grep -E '^==|^lintian'
new=target/debian/camjobd_0.1.0-2_amd64.deb
[ -f "$new" ] || fail "no $new"

root=$(mktemp -d /tmp/camjobd-pkgroot.XXXXXX)
boot=$(mktemp -d /tmp/camjobd-boot.XXXXXX)
machine=camjobd-test-$$
# The booted container's PID 1, should systemd-nspawn itself have been killed (it carries
# CAMJOBD_TEST_MACHINE in its environment); killing it ends everything in the container.
stop_container() {
  local p
  for p in /proc/[0-9]*; do
    if { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "CAMJOBD_TEST_MACHINE=$machine"; then
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    fi
  done
}
cleanup() {
  stop_container
  for m in proc dev/pts dev sys; do umountpoint "$root/$m" 2>/dev/null && umount -l "$root/$m" || true; done
  rm -rf "$root" "$boot"
  # What systemd-nspawn keeps under /run for a machine (empty once it has exited), and the
  # cgroups it made below ours with --keep-unit (supervisor, payload: empty once it has exited).
  rmdir "/run/systemd/nspawn/propagate/$machine" 2>/dev/null || true
  local mnt
  for mnt in $(findmnt -rn -t cgroup2 -o TARGET); do
    rm_empty_cgroups "$mnt$(sed -n 's/^0:://p' /proc/self/cgroup)"
  done
  for mnt in $(findmnt -rn -t cgroup -O name=systemd -o TARGET); do
    rm_empty_cgroups "$mnt$(sed -n 's/^[0-9]*:name=systemd://p' /proc/self/cgroup)"
  done
}
rm_empty_cgroups() { # DIR: its supervisor and payload subtrees, where empty
  local sub
  for sub in supervisor payload; do
    [ ! -d "${1%/}/$sub" ] || find "${1%/}/$sub" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}
umountpoint() { mountpoint -q "$1"; }
trap cleanup EXIT

step "a Debian bookworm root (mmdebstrap, from the mirror apt uses)"
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
# curl and mosquitto are for the boot step: what talks to camjobd inside, and its MQTT broker.
mmdebstrap --quiet --variant=apt --include=adduser,systemd,init-system-helpers,ca-certificates,curl,mosquitto \
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

step "systemd-analyze security: the unit's exposure"
# The installed unit, scored by the root's own systemd (Debian bookworm's 252, as on Raspberry
# Pi OS Bookworm); --offline scores the file without a running systemd.
security=$(in_root systemd-analyze security --offline=true /usr/lib/systemd/system/camjobd.service 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for camjobd.service: \([0-9.]*\).*/\1/p' <<<"$security")
[ -n "$score" ] || { echo "$security"; fail "systemd-analyze security gave no score"; }
if ! awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }'; then
  grep '✗' <<<"$security" || true
  fail "the unit's exposure is $score, above 3.0"
fi
echo "exposure $score (at most 3.0); still counted: $(grep -c '✗' <<<"$security") settings, each commented in the unit"

step "camjobd --check-config on the conffile, and against the installed unit's limits"
in_root camjobd --check-config --config /etc/camjobd/config.json >/dev/null || fail "--check-config"
in_root camjobd --version
# Run from a shell, --check-config answers for the service: a config the unit's MemoryMax=
# would kill at start (8 cameras with a million-file index each) is exit 2, naming the key.
printf '{"storage":{"dir":"/var/lib/camjobd"},"cameras":[%s]}\n' "$(for i in 0 1 2 3 4 5 6 7; do printf '{"name":"c%d","store":{"max_files":1000000}}' "$i"; [ "$i" = 7 ] || printf ','; done)" > "$root/tmp/big.json"
set +e
out=$(in_root camjobd --check-config --config /tmp/big.json 2>&1 >/dev/null); code=$?
set -e
[ "$code" = 2 ] || fail "a config over the unit's MemoryMax= checked with status $code: $out"
grep -q 'store.max_files: this config needs' <<<"$out" && grep -q 'MemoryMax=' <<<"$out" \
  || fail "the refusal does not name the key and the unit's limit: $out"
echo "refused against the unit's MemoryMax=: ${out#camjobd: config error: }" | cut -c1-200

step "the root boots: systemd starts camjobd.service under its sandbox (systemd-nspawn)"
boot_test
echo "booted, checked and powered off in $(awk -v a="$boot_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"

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
