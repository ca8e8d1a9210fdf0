//! Snapshots on disk, through the real binary: files and their API, seq continuity across
//! restarts, retention under a long accelerated run, and kill -9 at random moments.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

/// Every file below `dir` (snapshot files and temp files), tolerating files that vanish
/// while we look (retention runs concurrently).
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out
}

fn snapshot_files(root: &Path) -> Vec<(PathBuf, u64)> {
    files(root).into_iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "jpg")).collect()
}

/// Waits (at most 10 s) until camera cam0 has written `n` snapshot files.
fn wait_written(d: &Daemon, n: u64) {
    let deadline = Instant::now() + 10 * SEC;
    while d.camera("cam0")["store"]["written"].as_u64().unwrap() < n {
        assert!(Instant::now() < deadline, "fewer than {n} snapshots written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn snapshots_are_files_listed_served_and_numbered_across_restarts() {
    let dir = temp_dir("store");
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 50}));
    let cfg = config(&dir, json!([cam]), json!({}));
    let data = dir.path().join("data");
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_job("cam0", 10 * SEC, |_| true);
    wait_written(&d, 10);
    let list = d.get("/api/cameras/cam0/snapshots?limit=5").json();
    let snaps = list["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 5);
    assert!(snaps.windows(2).all(|w| w[0]["seq"].as_u64() > w[1]["seq"].as_u64()), "newest first");
    let stored = snaps.iter().find(|s| s["stored"] == true).expect("a stored snapshot").clone();
    let seq = stored["seq"].as_u64().unwrap();
    let r = d.get(&format!("/api/cameras/cam0/snapshots/{seq}.jpg"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(format!("\"{seq}\"").as_str()));
    let on_disk: Vec<_> =
        snapshot_files(&data).into_iter().filter(|(p, _)| p.ends_with(format!("{seq}.jpg"))).collect();
    assert_eq!(on_disk.len(), 1, "one file per snapshot, in a day directory");
    assert_eq!(std::fs::read(&on_disk[0].0).unwrap(), r.body, "served bytes are the file's");
    let day = on_disk[0].0.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    assert!(day.len() == 10 && day.as_bytes()[4] == b'-', "{day}");
    // Bad seqs never reach the filesystem.
    for bad in ["../../state.json", "abc.jpg", "-1.jpg", "1.png", "99999999999999999999999.jpg"] {
        let r = d.get(&format!("/api/cameras/cam0/snapshots/{bad}"));
        assert_eq!(r.status, 404, "{bad}");
    }
    d.get("/api/cameras/cam0/snapshots/123456789.jpg").error_code(404);
    d.get("/api/cameras/cam0/snapshots?limit=0").error_code(400);

    // After a restart the numbering continues: an ETag never names two different images.
    let last_before = d.camera("cam0")["latest"]["seq"].as_u64().unwrap();
    let mut d = d;
    assert!(d.terminate(2 * SEC).unwrap().success());
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    drop(d);
    let d = Daemon::builder(dir, &cfg).start();
    let j = d.wait_job("cam0", 10 * SEC, |_| true);
    let _ = j;
    let deadline = Instant::now() + 10 * SEC;
    let first_new = loop {
        if let Some(s) = d.camera("cam0")["latest"]["seq"].as_u64() {
            break s;
        }
        assert!(Instant::now() < deadline, "no snapshot after restart");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(first_new > last_before, "seq restarted: {first_new} after {last_before}");
    // The old snapshot is still listed and served.
    assert_eq!(d.get(&format!("/api/cameras/cam0/snapshots/{seq}.jpg")).status, 200);
}

#[test]
fn files_deleted_outside_camjobd_leave_the_list_at_the_first_read() {
    let dir = temp_dir("store-gone");
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 50}));
    let cfg = config(&dir, json!([cam]), json!({}));
    let data = dir.path().join("data");
    let d = Daemon::builder(dir, &cfg).start();
    wait_written(&d, 10);
    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    d.wait_state("cam0", "STOPPED", 5 * SEC);
    std::thread::sleep(Duration::from_millis(300)); // the store writes what was queued
    let files_before = d.camera("cam0")["store"]["files"].as_u64().unwrap();
    // The oldest snapshot's whole day directory is removed by hand.
    let list = d.get("/api/cameras/cam0/snapshots?limit=500").json();
    let oldest = list["snapshots"].as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap();
    let file = snapshot_files(&data).into_iter().find(|(p, _)| p.ends_with(format!("{oldest}.jpg"))).unwrap().0;
    let day_dir = file.parent().unwrap().to_path_buf();
    let in_day = std::fs::read_dir(&day_dir).unwrap().count() as u64;
    std::fs::remove_dir_all(&day_dir).unwrap();

    let r = d.get(&format!("/api/cameras/cam0/snapshots/{oldest}.jpg"));
    assert_eq!(r.error_code(404), "no_snapshot");
    assert!(r.text().contains("deleted outside camjobd"), "{}", r.text());
    // The whole day left the list and the counters at once, with one event.
    let store = d.camera("cam0")["store"].clone();
    assert_eq!(store["files"].as_u64().unwrap(), files_before - in_day, "{store}");
    let events = d.get("/api/events?limit=500").json().to_string();
    assert_eq!(events.matches("were deleted outside camjobd").count(), 1, "{events}");
    let r = d.get(&format!("/api/cameras/cam0/snapshots/{}.jpg", oldest + 1));
    assert_eq!(r.error_code(404), "no_snapshot");
    assert!(!r.text().contains("outside"), "already unlisted: {}", r.text());
}

#[test]
fn planted_links_and_fifos_are_never_followed_served_archived_or_deleted() {
    let dir = temp_dir("store-links");
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 50}));
    let cfg = config(&dir, json!([cam]), json!({}));
    let data = dir.path().join("data");
    let mut d = Daemon::builder(dir, &cfg).start();
    wait_written(&d, 5);
    let r = d
        .post("/api/exports", &json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"}).to_string());
    let real_export = r.json()["id"].as_u64().unwrap();
    let deadline = Instant::now() + 10 * SEC;
    while d.get(&format!("/api/exports/{real_export}")).json()["state"] != "SUCCEEDED" {
        assert!(Instant::now() < deadline, "the export did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.terminate(2 * SEC).unwrap().success());
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    drop(d);

    // What someone with write access to storage.dir plants, and a canary outside it.
    let canary = dir.path().join("canary");
    std::fs::write(&canary, b"CANARY-outside").unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("5.jpg"), b"keep me").unwrap();
    std::fs::write(outside.join("6.jpg"), b"").unwrap();
    std::fs::write(outside.join("x.tmp"), b"keep me too").unwrap();
    let day_dir = snapshot_files(&data)[0].0.parent().unwrap().to_path_buf();
    std::os::unix::fs::symlink(&canary, day_dir.join("999999.jpg")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("cam0/2020-01-01")).unwrap();
    let fifo = std::ffi::CString::new(day_dir.join("999998.jpg").to_str().unwrap()).unwrap();
    // SAFETY: a valid path; makes a FIFO (reading it would block forever).
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let exports = data.join("exports");
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(exports.join(format!("{real_export}.json"))).unwrap()).unwrap();
    record["id"] = json!(99);
    std::fs::write(exports.join("99.json"), record.to_string()).unwrap();
    std::os::unix::fs::symlink(&canary, exports.join("99.tar")).unwrap();
    // The export id counter and a journal file (named as the newest) are links to the canary:
    // neither is read, written through or truncated.
    std::fs::remove_file(exports.join("next_id")).unwrap();
    std::os::unix::fs::symlink(&canary, exports.join("next_id")).unwrap();
    std::os::unix::fs::symlink(&canary, data.join("journal/events-999999.jsonl")).unwrap();

    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let events = d.get("/api/events?limit=500").json().to_string();
    assert!(events.contains("are links or not regular files and were left alone"), "{events}");
    assert!(
        events.contains("in storage.dir/exports are links or not regular files") && events.contains("next_id"),
        "{events}"
    );
    // The journal goes on in a new file after the planted one (what a restart reads back).
    let next_journal = data.join("journal/events-1000000.jsonl");
    let deadline = Instant::now() + 10 * SEC;
    while !std::fs::metadata(&next_journal).is_ok_and(|m| m.len() > 0) {
        assert!(Instant::now() < deadline, "the journal did not go on after the planted file");
        std::thread::sleep(Duration::from_millis(20));
    }
    for seq in [999_999, 999_998] {
        let r = d.get(&format!("/api/cameras/cam0/snapshots/{seq}.jpg"));
        assert_eq!(r.status, 404, "planted {seq} was served");
    }
    let latest = d.camera("cam0")["latest"]["seq"].as_u64().unwrap_or(0);
    assert!(latest < 999_998, "seq continued after a planted name: {latest}");
    let file = d.get("/api/exports/99/file");
    assert!(file.status != 200 && !file.text().contains("CANARY"), "{} {}", file.status, file.text());
    let r = d
        .post("/api/exports", &json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"}).to_string());
    let id = r.json()["id"].as_u64().unwrap();
    let deadline = Instant::now() + 10 * SEC;
    while d.get(&format!("/api/exports/{id}")).json()["state"] != "SUCCEEDED" {
        assert!(
            Instant::now() < deadline,
            "the export did not finish: {}",
            d.get(&format!("/api/exports/{id}")).text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let tar = d.get(&format!("/api/exports/{id}/file"));
    assert!(!tar.body.windows(6).any(|w| w == b"CANARY"), "the archive carried the canary");
    // Nothing outside was touched: not the canary, not the files behind the linked day.
    assert_eq!(std::fs::read(&canary).unwrap(), b"CANARY-outside");
    assert_eq!(std::fs::read(outside.join("5.jpg")).unwrap(), b"keep me");
    assert!(outside.join("6.jpg").exists() && outside.join("x.tmp").exists());
    // The new export's id came after every id on disk, the planted record's among them.
    assert!(id > 99, "export id {id} after a planted record 99");
    assert!(std::fs::symlink_metadata(exports.join("next_id")).unwrap().is_file(), "the link was replaced");
}

#[test]
fn a_linked_exports_or_journal_directory_stops_the_start_with_the_path_named() {
    for linked in ["exports", "journal"] {
        let dir = temp_dir(&format!("store-linked-{linked}"));
        let cfg = config(&dir, json!([synthetic("cam0", json!({}))]), json!({}));
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("1.json"), b"{}").unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("data").join(linked)).unwrap();
        std::fs::write(dir.path().join("c.json"), cfg.to_string()).unwrap();
        let o = std::process::Command::new(bin()).arg("--config").arg(dir.path().join("c.json")).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{linked}: {err}");
        assert!(err.contains(&format!("data/{linked}")), "{linked}: {err}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "{linked}: something was written outside");
    }
}

#[test]
fn a_day_directory_swapped_for_a_link_is_not_written_through() {
    let dir = temp_dir("store-swap");
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 50}));
    let cfg = config(&dir, json!([cam]), json!({}));
    let data = dir.path().join("data");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let d = Daemon::builder(dir, &cfg).start();
    let store = |d: &Daemon| d.camera("cam0")["store"].clone();
    wait_written(&d, 3);
    // Today's directory is moved away and a link to elsewhere put in its place.
    let day_dir = snapshot_files(&data).last().unwrap().0.parent().unwrap().to_path_buf();
    std::fs::rename(&day_dir, data.join("moved-away")).unwrap();
    std::os::unix::fs::symlink(&outside, &day_dir).unwrap();
    let errors0 = store(&d)["errors"].as_u64().unwrap();
    let deadline = Instant::now() + 10 * SEC;
    while store(&d)["errors"].as_u64().unwrap() < errors0 + 3 {
        assert!(Instant::now() < deadline, "writes through the link were not refused: {}", store(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "a file was written through the link");
    // The camera directory swapped for a link: not even a day directory is made behind it.
    let outside2 = data.parent().unwrap().join("outside2");
    std::fs::create_dir_all(&outside2).unwrap();
    std::fs::rename(data.join("cam0"), data.join("cam0-moved")).unwrap();
    std::os::unix::fs::symlink(&outside2, data.join("cam0")).unwrap();
    let errors1 = store(&d)["errors"].as_u64().unwrap();
    let deadline = Instant::now() + 10 * SEC;
    while store(&d)["errors"].as_u64().unwrap() < errors1 + 3 {
        assert!(Instant::now() < deadline, "writes through the linked camera directory were not refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_dir(&outside2).unwrap().count(),
        0,
        "something was made behind the linked camera directory"
    );
    let events = d.get("/api/events?limit=500").json().to_string();
    assert!(events.contains("camjobd never writes through links"), "{events}");
    assert_eq!(d.camera("cam0")["job"]["state"], "RUNNING", "capture goes on");
}

#[test]
fn retention_holds_the_budget_through_a_long_accelerated_run() {
    let target = env_usize("CAMJOBD_RETENTION_SNAPSHOTS", 100_000) as u64;
    let budget: u64 = 20_000_000;
    let dir = temp_dir("retention");
    let cam = synthetic(
        "cam0",
        json!({"snapshot_interval_ms": 0, "source": {"width": 64, "height": 48, "fps": 5000, "quality": 50},
               "store": {"max_bytes": budget, "max_files": 200_000}}),
    );
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["log"]["level"] = json!("warn");
    // Budgets, not durability, are tested here: 100,000 fsyncs would only make it slower.
    cfg["storage"]["fsync"] = json!("never");
    let data = dir.path().join("data");
    let d = Daemon::builder(dir, &cfg).start();
    let t0 = Instant::now();
    let (mut samples, mut peak, mut biggest) = (0u64, 0u64, 0u64);
    let written = |d: &Daemon| d.camera("cam0")["store"]["written"].as_u64().unwrap();
    let total = loop {
        // A directory walk is not atomic: files written during it are seen while some
        // deletions are not. The slack is exactly the files written meanwhile.
        let w0 = written(&d);
        let now: Vec<_> = snapshot_files(&data);
        let w1 = written(&d);
        let used: u64 = now.iter().map(|(_, n)| n).sum();
        biggest = biggest.max(now.iter().map(|(_, n)| *n).max().unwrap_or(0));
        peak = peak.max(used);
        samples += 1;
        let slack = (w1 - w0 + 1) * biggest;
        assert!(
            used <= budget + slack,
            "disk use {used} over budget {budget} + {slack} (files written during the walk)"
        );
        if w1 >= target {
            break w1;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "only {w1} of {target} snapshots written");
        std::thread::sleep(Duration::from_millis(100));
    };
    // At rest the sample is exact: budget plus at most the newest file.
    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    d.wait_state("cam0", "STOPPED", 5 * SEC);
    std::thread::sleep(Duration::from_millis(200)); // the store drains its short queue
    let at_rest: u64 = snapshot_files(&data).iter().map(|(_, n)| n).sum();
    assert!(at_rest <= budget + biggest, "at rest: {at_rest} bytes, budget {budget}");
    let written = total;
    let c = d.camera("cam0");
    println!(
        "retention: {written} snapshots written in {:.1} s, {} deleted, {} dropped (queue full); {samples} samples, peak {peak} bytes of budget {budget}; at rest {at_rest}; largest file {biggest}",
        t0.elapsed().as_secs_f64(),
        c["store"]["deleted"],
        c["store"]["dropped"]
    );
    assert!(c["store"]["bytes"].as_u64().unwrap() <= budget);
    assert_eq!(c["store"]["errors"], 0);
    assert_eq!(c["store"]["bytes"].as_u64().unwrap(), at_rest, "the index agrees with the disk");
}

#[test]
fn kill_9_at_random_moments_leaves_a_consistent_store() {
    let cycles = env_usize("CAMJOBD_CRASH_CYCLES", 100);
    let budget: u64 = 256 * 1024;
    let dir = temp_dir("crash");
    let cam = synthetic(
        "cam0",
        json!({"autostart": false, "snapshot_interval_ms": 0, "source": {"width": 96, "height": 64, "fps": 2000},
               "store": {"max_bytes": budget, "max_files": 400}}),
    );
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["log"]["level"] = json!("warn");
    let data = dir.path().join("data");
    let mut dir = dir;
    let mut last_id = 0;
    let mut killed_id = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut checked_files = 0;
    for cycle in 0..cycles {
        let mut d = Daemon::builder(dir, &cfg).start();
        if cycle > 0 {
            // The killed job is on record as interrupted, and a new one resumed capture.
            let jobs = d.get("/api/jobs").json();
            let killed = jobs["ended"].as_array().unwrap().iter().find(|j| j["id"] == last_id).cloned();
            let killed = killed.unwrap_or_else(|| panic!("cycle {cycle}: job {last_id} not in the history: {jobs:#}"));
            assert_eq!(killed["reason"], "interrupted: process restarted", "cycle {cycle}");
            killed_id = last_id;
            let j = d.wait_job("cam0", 10 * SEC, |j| j["id"].as_u64() > Some(last_id));
            last_id = j["id"].as_u64().unwrap();
            // Stop it so that the disk holds still while we look.
            let r = d.post("/api/cameras/cam0/stop", "");
            assert!(r.status == 202 || r.status == 409, "{}", r.text());
            d.wait_job("cam0", 5 * SEC, |j| {
                !["STARTING", "RUNNING", "RECOVERING", "STOPPING"].contains(&j["state"].as_str().unwrap())
            });
            // Then the store drains its queue (snapshots taken before the stop).
            let deadline = Instant::now() + 10 * SEC;
            while d.camera("cam0")["store"]["queued"] != 0 {
                assert!(Instant::now() < deadline, "cycle {cycle}: the store did not drain its queue");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // What the last crash left behind, as the restart cleaned it up.
        let all = files(&data.join("cam0"));
        let temps: Vec<_> = all.iter().filter(|(p, _)| p.extension().is_none_or(|e| e != "jpg")).collect();
        assert!(temps.is_empty(), "cycle {cycle}: temp or stray files after restart: {temps:?}");
        let jpgs = snapshot_files(&data.join("cam0"));
        let used: u64 = jpgs.iter().map(|(_, n)| n).sum();
        let biggest = jpgs.iter().map(|(_, n)| *n).max().unwrap_or(0);
        assert!(used <= budget + biggest, "cycle {cycle}: {used} bytes on disk, budget {budget}");
        for (p, _) in &jpgs {
            // The daemon runs on: retention may delete a file between the listing and here.
            let bytes = match std::fs::read(p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("cycle {cycle}: {}: {e}", p.display()),
            };
            image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
                .unwrap_or_else(|e| panic!("cycle {cycle}: {} is not a JPEG: {e}", p.display()));
            checked_files += 1;
        }
        let listed = d.camera("cam0")["store"]["files"].as_u64().unwrap();
        assert_eq!(listed as usize, jpgs.len(), "cycle {cycle}: index and disk disagree");
        if cycle > 0 {
            // The journal parses (a torn last line is allowed) and knows the last job.
            let lines = journal_lines(&data);
            assert!(
                lines.iter().any(|e| e["job_id"] == killed_id),
                "cycle {cycle}: job {killed_id} not in the journal"
            );
        }

        let r = d.post("/api/cameras/cam0/start", "");
        assert_eq!(r.status, 202, "{}", r.text());
        let id = r.json()["id"].as_u64().unwrap();
        assert!(id > last_id, "cycle {cycle}: job id {id} after {last_id}");
        last_id = id;
        // The promise is about a job whose start reached the journal (the store thread writes
        // state changes at its next wake, a few ms; longer on a loaded machine): wait for
        // that, bounded, so that a kill before it does not count as a lost job.
        let deadline = Instant::now() + 5 * SEC;
        while !journal_lines(&data).iter().any(|e| e["job_id"] == id) {
            assert!(Instant::now() < deadline, "cycle {cycle}: job {id}'s start not in the journal within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Run for a pseudo-random 30..300 ms, then SIGKILL mid-write.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(30 + seed % 270));
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    }
    println!("crash test: {cycles} kill -9 cycles, {checked_files} snapshot files decoded after restarts");
    drop(dir);
}

/// The journal's lines, parsed; panics on a damaged line anywhere but at the very end.
fn journal_lines(data: &Path) -> Vec<serde_json::Value> {
    let dir = data.join("journal");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    names.sort();
    let mut out = Vec::new();
    for (fi, p) in names.iter().enumerate() {
        let text = std::fs::read(p).unwrap();
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        for (li, line) in lines.iter().enumerate() {
            match serde_json::from_slice(line) {
                Ok(v) => out.push(v),
                Err(e) => {
                    let last = fi + 1 == names.len() && li + 1 == lines.len();
                    assert!(last, "{}: damaged line {li} that is not the last: {e}", p.display());
                }
            }
        }
    }
    out
}

#[test]
fn a_killed_job_is_recorded_as_interrupted_and_resumed_a_clean_stop_is_not() {
    let dir = temp_dir("interrupt");
    let cam = synthetic("cam0", json!({"autostart": false}));
    let cfg = config(&dir, json!([cam]), json!({}));
    let data = dir.path().join("data");
    let mut d = Daemon::builder(dir, &cfg).start();
    let id = d.post("/api/cameras/cam0/start", "").json()["id"].as_u64().unwrap();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    // State changes reach the journal within a second.
    let deadline = Instant::now() + 5 * SEC;
    while !journal_lines(&data).iter().any(|e| e["job_id"] == id && e["state"] == "RUNNING") {
        assert!(Instant::now() < deadline, "RUNNING never reached the journal");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    drop(d);

    let mut d = Daemon::builder(dir, &cfg).start();
    let jobs = d.get("/api/jobs").json();
    let old =
        jobs["ended"].as_array().unwrap().iter().find(|j| j["id"] == id).unwrap_or_else(|| panic!("{jobs:#}")).clone();
    assert_eq!(old["state"], "FAILED");
    assert_eq!(old["reason"], "interrupted: process restarted");
    assert!(old["started_at"].is_number());
    // It was running, so a new job starts although autostart is off.
    let j = d.wait_state("cam0", "RUNNING", 10 * SEC);
    let resumed = j["id"].as_u64().unwrap();
    assert!(resumed > id);
    let active = d.get("/api/jobs?camera=cam0").json();
    assert_eq!(active["active"][0]["id"], resumed);
    d.get("/api/jobs?camera=nope").error_code(404);
    d.get("/api/jobs?limit=0").error_code(400);

    // A clean stop is not an interruption.
    assert!(d.terminate(2 * SEC).unwrap().success());
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    drop(d);
    let d = Daemon::builder(dir, &cfg).start();
    let jobs = d.get("/api/jobs").json();
    let ended = jobs["ended"].as_array().unwrap();
    let r = ended.iter().find(|j| j["id"] == resumed).unwrap_or_else(|| panic!("{jobs:#}"));
    assert_eq!(r["state"], "STOPPED", "{jobs:#}");
    assert_eq!(ended.iter().filter(|j| j["reason"] == "interrupted: process restarted").count(), 1, "{jobs:#}");
    assert_eq!(d.camera("cam0")["job"]["state"], "IDLE", "stopped cleanly and no autostart: stays idle");
}

#[test]
fn keep_changed_writes_a_static_scene_rarely_and_a_changing_one_always() {
    let dir = temp_dir("changed");
    let (a, b) = (jpeg(160, 120, 10), jpeg(160, 120, 240));
    std::fs::write(dir.path().join("a.jpg"), &a).unwrap();
    std::fs::write(dir.path().join("b.jpg"), &b).unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    // Every frame kept, so the moving camera's kept frames alternate a, b, a, ...
    let cam = |name: &str, script: String| {
        json!({"name": name, "source": {"kind": "pipe", "command": ["sh", "-c", script]}, "snapshot_interval_ms": 0,
               "store": {"keep": "changed", "keepalive_s": 1, "change_threshold": 5.0}})
    };
    let cfg = config(
        &dir,
        json!([
            cam("still", format!("while :; do cat {}; sleep 0.05; done", p("a.jpg"))),
            cam("moving", format!("while :; do cat {}; sleep 0.05; cat {}; sleep 0.05; done", p("a.jpg"), p("b.jpg"))),
        ]),
        json!({}),
    );
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("still", "RUNNING", 10 * SEC);
    std::thread::sleep(3 * SEC); // ~50 snapshots each
    let still = d.camera("still")["store"].clone();
    let moving = d.camera("moving")["store"].clone();
    println!("keep changed, 3 s: still {still}, moving {moving}");
    let (sw, su) = (still["written"].as_u64().unwrap(), still["unchanged"].as_u64().unwrap());
    assert!((2..=6).contains(&sw), "a static scene is written about once per keepalive_s: {still}");
    assert!(su >= 30, "{still}");
    assert!(still["last_change"].as_f64().unwrap() < 1.0, "{still}");
    // The moving camera alternates between two frames: every snapshot differs and is written.
    let mw = moving["written"].as_u64().unwrap();
    assert!(mw > 10 && mw > 3 * sw, "{moving}");
    let e = d.wait_event(5 * SEC, |e| e["kind"] == "change" && e["camera"] == "moving");
    assert!(e["message"].as_str().unwrap().starts_with("scene changed: score "), "{e}");
    // Scores are in the listing.
    let list = d.get("/api/cameras/moving/snapshots?limit=10").json();
    assert!(
        list["snapshots"].as_array().unwrap().iter().any(|s| s["change"].as_f64().is_some_and(|c| c >= 5.0)),
        "{list:#}"
    );
}

/// A tmpfs mounted for one test; unmounted on drop. `None` where mounting is not allowed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&path).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(path))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A daemon whose storage.dir is on a fresh tmpfs of `size`, writing 320x240 snapshots as fast
/// as it can, with only the disk (not a budget) to stop it. `fill` bytes of another file are
/// written first. `None` (and a SKIPPED line) where mounting is not allowed.
fn on_small_disk(tag: &str, size: &str, min_free: u64, fill: usize) -> Option<(Tmpfs, Daemon, PathBuf)> {
    let dir = temp_dir(tag);
    let Some(fs) = Tmpfs::mount(dir.path().join("small"), size) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the small-disk paths are untested in this run");
        return None;
    };
    let data = fs.0.join("data");
    let cam = synthetic(
        "cam0",
        json!({"snapshot_interval_ms": 0, "source": {"width": 320, "height": 240, "fps": 200},
               "store": {"max_bytes": 100_000_000, "max_files": 100_000}}),
    );
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["storage"] = json!({"dir": data, "max_bytes": 100_000_000, "min_free_bytes": min_free});
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![1u8; fill]).unwrap();
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    Some((fs, d, filler))
}

#[test]
fn a_full_disk_is_counted_and_survived_and_space_coming_back_heals_it() {
    // Another program fills most of the disk.
    let Some((fs, d, filler)) = on_small_disk("diskfull", "4m", 0, 3 * 1024 * 1024) else { return };
    let j = d.wait_job("cam0", 20 * SEC, |_| d.camera("cam0")["store"]["errors"].as_u64().unwrap() >= 5);
    assert_eq!(j["state"], "RUNNING", "a full disk does not stop the job");
    let e = d
        .wait_event(5 * SEC, |e| e["kind"] == "error" && e["message"].as_str().unwrap_or("").contains("No space left"));
    println!("disk full: {}", e["message"]);
    assert!(e["message"].as_str().unwrap().contains("capture goes on"), "{e}");
    let frames0 = d.camera("cam0")["job"]["frames_captured"].as_u64().unwrap();

    // Space comes back: writes succeed again by themselves.
    std::fs::remove_file(&filler).unwrap();
    let s0 = d.camera("cam0")["store"].clone();
    let deadline = Instant::now() + 10 * SEC;
    loop {
        let s = d.camera("cam0")["store"].clone();
        if s["written"].as_u64() > s0["written"].as_u64().map(|w| w + 20) {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let j = d.camera("cam0")["job"].clone();
    assert_eq!(j["state"], "RUNNING");
    assert!(j["frames_captured"].as_u64().unwrap() > frames0);
    drop(d);
    drop(fs);
}

#[test]
fn low_free_space_gives_back_the_oldest_snapshots() {
    let Some((fs, d, _)) = on_small_disk("lowfree", "8m", 4 * 1024 * 1024, 0) else { return };
    let e = d.wait_event(20 * SEC, |e| e["message"].as_str().unwrap_or("").contains("below storage.min_free_bytes"));
    println!("low free space: {}", e["message"]);
    let s = d.camera("cam0")["store"].clone();
    assert!(s["deleted"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(d.camera("cam0")["job"]["state"], "RUNNING");
    drop(d);
    drop(fs);
}

#[test]
fn what_the_start_up_repaired_is_in_the_api() {
    // A first run leaves snapshots, a journal and an exports directory; then what a crash
    // leaves is planted: a temp file and an empty file among the snapshots, a torn journal
    // line, a partial export. The restart states each repair in the API.
    let dir = temp_dir("at-start");
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 50}));
    let cfg = config(&dir, json!([cam]), json!({}));
    let data = dir.path().join("data");
    let mut d = Daemon::builder(dir, &cfg).start();
    d.wait_job("cam0", 10 * SEC, |_| true);
    wait_written(&d, 5);
    let first = d.camera("cam0")["store"]["at_start"].clone();
    assert_eq!(first["found"], 0, "{first}");
    assert!(d.terminate(2 * SEC).unwrap().success());
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    drop(d);
    let jpgs = snapshot_files(&data.join("cam0"));
    let newest = jpgs
        .iter()
        .filter_map(|(p, _)| p.file_stem()?.to_str()?.parse::<u64>().ok())
        .max()
        .expect("snapshots of the first run");
    let day = jpgs[0].0.parent().unwrap().to_path_buf();
    std::fs::write(day.join(format!("{}.jpg.3.tmp", newest + 1)), b"half a jpeg").unwrap();
    std::fs::write(day.join(format!("{}.jpg", newest + 2)), b"").unwrap();
    let journal = std::fs::read_dir(data.join("journal")).unwrap().flatten().map(|e| e.path()).max().unwrap();
    let mut j = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    std::io::Write::write_all(&mut j, b"{\"seq\":99999,\"ki").unwrap();
    std::fs::create_dir_all(data.join("exports")).unwrap();
    std::fs::write(data.join("exports/7.tar.part"), b"cut short").unwrap();

    let d = Daemon::builder(dir, &cfg).start();
    d.wait_job("cam0", 10 * SEC, |_| true);
    let at_start = d.camera("cam0")["store"]["at_start"].clone();
    assert_eq!(
        at_start,
        json!({"found": jpgs.len(), "newest_seq": newest, "temp_files_removed": 1, "empty_files_removed": 1,
               "over_max_files_removed": 0}),
        "{at_start}"
    );
    let startup = d.get("/api/status").json()["startup"].clone();
    assert_eq!(startup, json!({"journal_lines_skipped": 1, "export_partials_deleted": 1}), "{startup}");
}
