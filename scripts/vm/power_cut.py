#!/usr/bin/env python3
"""Power cuts on a real filesystem (driven by scripts/power-cut-test.sh, which builds the kernel,
initramfs and disk). Boots the VM, lets camjobd write 10 snapshots a second with its journal and
exports running, cuts the power at a random moment (SIGKILL to qemu: the guest's page cache is
lost, as on a real cut), runs e2fsck on the image, boots again and checks what camjobd says it
has. The last boot ends with a clean shutdown, then the disk itself is checked from the host.

Prints one line per cut and a summary whose last line is
`power cuts: N, ..., lost listed snapshots: 0`. Exit status 0 only if every cut passed.
"""
import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

# The init script's cameras[0].store.max_files and max_bytes: 30 s of snapshots, so retention
# works in most boots, while the 20 s measurement at the end deletes nothing (bytes written per
# snapshot must count files that stay, as on a card that keeps days of them).
MAX_FILES = 300
MAX_BYTES = 8 * 1024 * 1024
BOOT_TIMEOUT_S = 240  # TCG boots the stock kernel in 20-60 s
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class CheckFailed(Exception):
    pass


class Vm:
    def __init__(self, a, boot):
        self.a = a
        self.console = os.path.join(a.work, f"power-cut-console-{a.fsync}-{boot}.log")
        self.out = open(self.console, "wb")
        self.started = time.time()
        cmd = [
            "qemu-system-x86_64", "-machine", f"q35,accel={a.accel}", "-cpu", "max", "-smp", "2", "-m", "512",
            "-nographic", "-no-reboot",
            "-kernel", a.kernel, "-initrd", a.initrd,
            "-append", f"console=ttyS0 quiet loglevel=3 panic=-1 CUT_FSYNC={a.fsync}",
            "-drive", f"file={a.disk},format=raw,if=virtio,cache=writeback",
            "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{a.port}-:8080,hostfwd=tcp:127.0.0.1:{a.port + 1}-:9000",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT)

    def lines(self):
        with open(self.console, "rb") as f:
            return [l.decode("utf-8", "replace").replace("\r", "") for l in f.read().splitlines()]

    def cut(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.out.close()

    def command(self, word, expect, within):
        """Sends a word to the init script's port 9000 and waits for the console line `expect`."""
        seen = len(self.lines())
        deadline = time.time() + within
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.a.port + 1), timeout=5) as s:
                    s.sendall(word.encode() + b"\n")
                break
            except OSError:
                if time.time() > deadline:
                    raise CheckFailed(f"port 9000 did not answer to {word!r}")
                time.sleep(0.2)
        while time.time() < deadline:
            for l in self.lines()[seen:]:
                if l.startswith(expect):
                    return l
            if self.proc.poll() is not None and expect != "CUT halted":
                break
            time.sleep(0.1)
        raise CheckFailed(f"no {expect!r} on the console after {word!r}")


class Api:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def raw(self, path, method="GET", body=None, timeout=10):
        req = urllib.request.Request(self.base + path, method=method, data=body)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path, method="GET", body=None):
        status, data = self.raw(path, method, None if body is None else json.dumps(body).encode())
        return status, (json.loads(data) if data else None)

    def cam(self):
        return self.json("/api/cameras/cam0")[1]

    def wait(self, pred, within, what):
        deadline = time.time() + within
        last = None
        while time.time() < deadline:
            try:
                last = self.cam()
                if pred(last):
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise CheckFailed(f"{what} not within {within} s (last view: {json.dumps(last)[:300]})")

    def stored(self):
        """Every stored snapshot, newest first, paging through the listing."""
        out, before = [], None
        for _ in range(100):
            q = "/api/cameras/cam0/snapshots?limit=500" + (f"&before={before}" if before else "")
            status, page = self.json(q)
            if status != 200:
                raise CheckFailed(f"GET {q}: {status}")
            out += [s for s in page["snapshots"] if s.get("stored")]
            before = page.get("before_next")
            if not before:
                return out
        raise CheckFailed("the snapshot listing did not end within 100 pages")


def exports(api):
    _, ex = api.json("/api/exports")
    return ex["active"] + ex["finished"]


def decodes(jpeg, work):
    """A whole JPEG that libjpeg-turbo's djpeg decodes (a truncated file fails or warns)."""
    if len(jpeg) < 4 or jpeg[:2] != b"\xff\xd8" or jpeg[-2:] != b"\xff\xd9":
        return False
    path = os.path.join(work, "check.jpg")
    with open(path, "wb") as f:
        f.write(jpeg)
    r = subprocess.run(["djpeg", "-pnm", "-outfile", os.devnull, path], capture_output=True)
    return r.returncode == 0 and not r.stderr


def console_failures(vm):
    """camjobd must not have panicked, and the init script must not have reported a failure."""
    bad = [l for l in vm.lines() if l.startswith("CUT FAIL") or "panick" in l]
    if bad:
        raise CheckFailed("on the console: " + " | ".join(bad[:3]))


def fsck(a, final=False):
    """e2fsck on the image (as a Pi does at boot): 0 clean, 1 repaired (or the journal replayed);
    4 and up is a filesystem camjobd's writes could not have left."""
    r = subprocess.run(["e2fsck", "-fn" if final else "-fy", a.disk], capture_output=True, text=True)
    if r.returncode >= 4 or (final and r.returncode != 0):
        raise CheckFailed(f"e2fsck exit {r.returncode}: {r.stdout[-600:]}")
    return r.returncode


class Totals:
    def __init__(self):
        self.failed = 0
        self.checked = 0
        self.broken = 0
        self.newest_lost = []
        self.torn = 0
        self.interrupted = 0
        self.reaped = 0
        self.repaired = 0
        self.exports_checked = 0
        self.max_job = 0
        self.recorded_interrupted = 0


def check_boot(a, vm, api, t, before):
    """What must hold after a cut (or a clean start): returns a short report."""
    notes = []
    try:
        api.wait(lambda c: c["job"]["state"] == "RUNNING", BOOT_TIMEOUT_S, "job RUNNING after boot")
    except CheckFailed:
        tail = "\n".join(vm.lines()[-15:])
        raise CheckFailed(f"camjobd did not start a RUNNING job; console tail:\n{tail}")
    c = api.cam()
    job = c["job"]["id"]
    if before is not None:
        t.max_job = max(t.max_job, before["job"])  # the job the cut killed
    if job <= t.max_job:
        raise CheckFailed(f"job id went back: {job} after {t.max_job}")
    t.max_job = job
    notes.append(f"job {job}")
    # Quiesce, so the listing holds still while it is checked.
    api.json("/api/cameras/cam0/stop", "POST", {})
    api.wait(lambda c: c["job"]["state"] == "STOPPED", 60, "STOPPED")
    # ... and the store has written what was queued before the stop (retention then holds still).
    api.wait(lambda c: c["store"]["queued"] == 0, 60, "the store queue drained")
    for l in vm.lines():
        if l.startswith("CUT log ") and "panick" in l:
            raise CheckFailed(f"camjobd panicked: {l}")
    # What this start repaired, as the API states it (not log wording).
    startup = api.json("/api/status")[1]["startup"]
    t.torn += startup["journal_lines_skipped"]
    t.reaped += startup["export_partials_deleted"]
    # Every listed snapshot is a whole JPEG.
    stored = api.stored()
    broken = []
    for s in stored:
        status, body = api.raw(f"/api/cameras/cam0/snapshots/{s['seq']}.jpg")
        if status != 200 or not decodes(body, a.work):
            broken.append((s["seq"], status, len(body)))
    t.checked += len(stored)
    t.broken += len(broken)
    if broken:
        raise CheckFailed(f"{len(broken)} listed snapshot(s) are not whole JPEGs: {broken[:5]}")
    c = api.cam()
    st = c["store"]
    if st["files"] > MAX_FILES or st["bytes"] > MAX_BYTES:
        raise CheckFailed(f"over budget: {st['files']} files, {st['bytes']} bytes")
    notes.append(f"{len(stored)} listed, all decode; {st['files']} files {st['bytes']} bytes")
    # The newest snapshots listed before the cut that are gone now. What the restart found on the
    # disk is what the store's start-up scan reports (the new job numbers on after its newest
    # seq; dates cannot tell them apart: the guest clock drifts under TCG).
    if before is not None:
        at_start = st.get("at_start")
        if at_start is None:
            raise CheckFailed(f"the camera's store has no at_start report: {st}")
        newest_found = at_start["newest_seq"]
        old = {s["seq"] for s in stored if s["seq"] <= newest_found}
        floor = min(old) if old else 0
        lost = sorted(s for s in before["listed"] if s >= floor and s not in old)
        t.newest_lost.append(len(lost))
        notes.append(f"newest lost {len(lost)}")
        if lost and a.fsync == "always":
            raise CheckFailed(f"{len(lost)} snapshot(s) listed before the cut are gone: {lost[:10]}")
        # The job the cut interrupted is recorded as such when its start reached the journal.
        _, jobs = api.json("/api/jobs?camera=cam0&limit=100")
        ended = {j["id"]: j for j in jobs.get("ended", [])}
        last = ended.get(before["job"])
        if last and "interrupted" in (last.get("reason") or ""):
            t.recorded_interrupted += 1
        elif a.fsync == "always":
            raise CheckFailed(f"job {before['job']}, killed by the cut, is not recorded as interrupted: {last}")
        # Exports running at the cut: finished or failed as interrupted, never left RUNNING.
        now = {e["id"]: e for e in exports(api)}
        for eid in before["running_exports"]:
            e = now.get(eid)
            if e is None:
                continue  # forgotten, or its record never reached the disk
            # Its RUNNING record is written without fsync; where that was lost it is QUEUED again.
            again = a.fsync == "never" and e["state"] in ("QUEUED", "RUNNING")
            if e["state"] not in TERMINAL and not again:
                raise CheckFailed(f"export {eid}, running at the cut, is {e['state']} after it")
            if e["state"] == "FAILED" and e.get("step") == "interrupted":
                t.interrupted += 1
    # Every finished export is a whole archive of the size it says.
    for e in exports(api):
        if e["state"] != "SUCCEEDED":
            continue
        status, body = api.raw(f"/api/exports/{e['id']}/file", timeout=60)
        if status != 200 or len(body) != e["bytes"]:
            raise CheckFailed(f"export {e['id']}: {status}, {len(body)} bytes of {e['bytes']}")
        path = os.path.join(a.work, "check.tar")
        with open(path, "wb") as f:
            f.write(body)
        try:
            with tarfile.open(path) as tf:
                names = tf.getnames()
        except tarfile.TarError as err:
            raise CheckFailed(f"export {e['id']} is not a whole tar: {err}")
        if "manifest.json" not in names:
            raise CheckFailed(f"export {e['id']} has no manifest")
        t.exports_checked += 1
    return "; ".join(notes)


def write_phase(a, api, seconds):
    """Job running, an export asked for every 2 s, the listing watched every 0.2 s until the cut;
    returns what was last seen listed."""
    api.json("/api/cameras/cam0/start", "POST", {})
    api.wait(lambda c: c["job"]["state"] == "RUNNING", 60, "RUNNING again")
    seen = {"listed": set(), "job": 0, "running_exports": set()}
    ok_at = time.time()
    end = time.time() + seconds
    next_export = time.time()
    while time.time() < end:
        try:
            if time.time() >= next_export:
                next_export += 2
                api.json("/api/exports", "POST", {"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"})
            _, page = api.json("/api/cameras/cam0/snapshots?limit=100")
            listed = {s["seq"] for s in page["snapshots"] if s.get("stored")}
            job = api.cam()["job"]["id"]
            running = {e["id"] for e in exports(api) if e["state"] == "RUNNING"}
            seen = {"listed": listed, "job": job, "running_exports": running}
            ok_at = time.time()
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    if time.time() - ok_at > 3:
        raise CheckFailed(f"the API stopped answering {time.time() - ok_at:.1f} s before the cut")
    return seen


def bench(a, vm, api):
    """Bytes written to the disk per snapshot and write time, 20 s of the job alone."""
    api.json("/api/cameras/cam0/stop", "POST", {})
    api.wait(lambda c: c["job"]["state"] in ("STOPPED", "COMPLETED"), 60, "STOPPED")
    s0 = int(vm.command("sync", "CUT io", 60).split()[2])
    c0 = api.cam()["store"]
    api.json("/api/cameras/cam0/start", "POST", {})
    time.sleep(a.bench_s)
    api.json("/api/cameras/cam0/stop", "POST", {})
    api.wait(lambda c: c["job"]["state"] == "STOPPED", 60, "STOPPED")
    s1 = int(vm.command("sync", "CUT io", 60).split()[2])
    c1 = api.cam()["store"]
    n = c1["written"] - c0["written"]
    mean = (c1["write_ms_mean"] * c1["written"] - (c0["write_ms_mean"] or 0) * c0["written"]) / max(n, 1)
    per = (s1 - s0) * 512 / max(n, 1)
    return f"bench fsync={a.fsync}: {n} snapshots in {a.bench_s} s, {per / 1024:.1f} KiB written to the disk per snapshot, write {mean:.2f} ms mean, {c1['write_ms_max']:.1f} ms max"


def final_disk_check(a):
    """After the clean shutdown: the filesystem is clean and the files on it are what camjobd
    promises (no temp, part or empty file; every snapshot decodes; within the budget)."""
    fsck(a, final=True)
    out = tempfile.mkdtemp(dir=a.work, prefix="rdump-")
    subprocess.run(["debugfs", "-R", f"rdump /camjobd {out}", a.disk], capture_output=True, check=True)
    top = os.path.join(out, "camjobd")
    if not os.path.isdir(os.path.join(top, "cam0")) or not os.path.isdir(os.path.join(top, "journal")):
        raise CheckFailed(f"debugfs did not dump storage.dir (no cam0/ or journal/ under {top})")
    n = size = 0
    bad_lines = lines = 0
    for root, _, files in os.walk(top):
        for name in files:
            p = os.path.join(root, name)
            if name.endswith((".tmp", ".part")):
                raise CheckFailed(f"left on the disk after a clean shutdown: {p}")
            if os.path.getsize(p) == 0 and not name.endswith(".jsonl"):
                raise CheckFailed(f"an empty file on the disk: {p}")
            if name.endswith(".jsonl"):
                with open(p, "rb") as f:
                    for line in f.read().splitlines():
                        lines += 1
                        try:
                            json.loads(line)
                        except ValueError:
                            bad_lines += 1
            if "/cam0/" in p + "/" and name.endswith(".jpg"):
                with open(p, "rb") as f:
                    if not decodes(f.read(), a.work):
                        raise CheckFailed(f"{p} on the disk is not a whole JPEG")
                n += 1
                size += os.path.getsize(p)
    subprocess.run(["rm", "-rf", out])
    if n == 0:
        raise CheckFailed("no snapshot on the disk after a clean shutdown")
    if n > MAX_FILES or size > MAX_BYTES:
        raise CheckFailed(f"the disk holds {n} snapshots, {size} bytes: over the budget")
    # A cut can tear the journal's last line once per cut; nothing else may be damaged.
    if bad_lines > a.cuts:
        raise CheckFailed(f"{bad_lines} journal lines do not parse after {a.cuts} cuts")
    return (f"disk after a clean shutdown: fsck clean, {n} snapshots ({size} bytes), all decode, no temp, part or "
            f"empty file; journal {lines} lines, {bad_lines} torn")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cuts", type=int, required=True)
    p.add_argument("--fsync", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--disk", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--accel", default="tcg")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bench-s", type=int, default=20)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    api = Api(a.port)
    t = Totals()
    before = None
    print(f"power-cut: fsync {a.fsync}, {a.cuts} cut(s), seed {seed}", flush=True)
    t0 = time.time()
    for boot in range(a.cuts + 1):
        last = boot == a.cuts
        label = f"cut {boot}/{a.cuts}" if boot else "first boot"
        vm = None
        try:
            repaired = fsck(a) if boot else 0
            t.repaired += repaired == 1
            vm = Vm(a, boot)
            report = check_boot(a, vm, api, t, before)
            if last:
                line = f"{label}: fsck {repaired}; {report}"
                if a.bench_s:
                    line += "\n" + bench(a, vm, api)
                vm.command("halt", "CUT halted", 60)
                vm.proc.wait(timeout=60)
                console_failures(vm)
                if "CUT exit 0" not in vm.lines():
                    raise CheckFailed("camjobd did not exit 0 on SIGTERM: " + str([l for l in vm.lines() if l.startswith("CUT exit")]))
                print(line + "\n" + final_disk_check(a), flush=True)
                break
            at = rng.uniform(2.0, 12.0)
            before = write_phase(a, api, at)
            vm.cut()
            console_failures(vm)
            print(f"{label}: fsck {repaired}; {report}; power cut {at:.1f} s into writing", flush=True)
        except Exception as e:  # every failure is a failed cut, reported, and the run goes on
            t.failed += 1
            print(f"{label}: FAIL {type(e).__name__}: {e}", flush=True)
            before = None
        finally:
            if vm is not None and vm.proc.poll() is None:
                vm.cut()
    lost = t.newest_lost or [0]
    print(
        f"power-cut: {time.time() - t0:.0f} s; fsync {a.fsync}; {t.checked} listed snapshots fetched and decoded; "
        f"newest snapshots lost per cut: median {statistics.median(lost):g}, max {max(lost)}; "
        f"torn journal lines skipped: {t.torn}; killed jobs recorded as interrupted: {t.recorded_interrupted}/{len(t.newest_lost)}; "
        f"exports interrupted: {t.interrupted}, partial files reaped: {t.reaped}, finished exports verified: {t.exports_checked}; "
        f"e2fsck repairs: {t.repaired}; job ids rose to {t.max_job}",
        flush=True,
    )
    # Listed and then lost: not a whole JPEG after the restart, or listed before the cut and gone
    # after it (what fsync "never" gives up; with "always" each is also a failed cut).
    lost_listed = t.broken + sum(t.newest_lost)
    print(f"power cuts: {a.cuts}, failed: {t.failed}, fsync: {a.fsync}, broken listed snapshots: {t.broken}, "
          f"lost listed snapshots: {lost_listed}", flush=True)
    sys.exit(0 if t.failed == 0 and t.broken == 0 else 1)


if __name__ == "__main__":
    main()
