//! A Pi without a real-time clock: the wall clock moved under the real binary with libfaketime
//! (Debian's `faketime`), read from a file on every call so the test can make it jump while
//! camjobd runs. The monotonic clock is left alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`), as on
//! the board, where only the wall clock jumps when NTP syncs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::*;
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);
const WEEKS_3: f64 = 21.0 * 86_400.0;

/// libfaketime, or `None` where it is not installed (then the tests say so and pass, except
/// under scripts/test.sh, which installs it and sets CAMJOBD_REQUIRE_FAKETIME).
fn libfaketime() -> Option<&'static str> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    if lib.is_none() {
        assert!(
            std::env::var_os("CAMJOBD_REQUIRE_FAKETIME").is_none(),
            "libfaketime is required here (apt install faketime)"
        );
        eprintln!("libfaketime not installed (apt install faketime): skipped");
    }
    lib
}

fn real_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Starts camjobd with its wall clock offset by what `clock_file` says (`-21d`, `+0`, `+123`).
fn start_faked(tag: &str, cam: Value, offset: &str) -> Option<(Daemon, PathBuf)> {
    let lib = libfaketime()?;
    let dir = temp_dir(tag);
    let clock_file = dir.path().join("faketime");
    std::fs::write(&clock_file, offset).unwrap();
    let cfg = config(&dir, json!([cam]), json!({}));
    let data = dir.path().join("data");
    let env = [
        ("LD_PRELOAD", lib),
        ("FAKETIME_TIMESTAMP_FILE", clock_file.to_str().unwrap()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let d = Daemon::builder(dir, &cfg).envs(&env).start();
    let _ = clock_file;
    Some((d, data))
}

fn clock_file(d: &Daemon) -> PathBuf {
    d.dir.path().join("faketime")
}

fn stored(d: &Daemon) -> Vec<Value> {
    let page = d.get("/api/cameras/cam0/snapshots?limit=500").json();
    page["snapshots"].as_array().unwrap().iter().filter(|s| s["stored"] == true).cloned().collect()
}

fn wait_stored(d: &Daemon, n: usize) {
    let deadline = Instant::now() + 20 * SEC;
    while stored(d).len() < n {
        assert!(Instant::now() < deadline, "fewer than {n} snapshots stored: {}", d.camera("cam0")["store"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_jump(d: &Daemon, by: &str) -> Value {
    d.wait_event(10 * SEC, |e| {
        e["message"].as_str().is_some_and(|m| m.contains("the wall clock jumped by") && m.contains(by))
    })
}

fn day_dirs(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("cam0"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_forward_jump_of_three_weeks_deletes_nothing_and_today_s_export_finds_the_snapshots_before_it() {
    // max_age_s one day: the snapshots taken before the jump look three weeks old to a naive
    // store and would all go at once.
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 100, "store": {"max_age_s": 86_400}}));
    let Some((d, data)) = start_faked("clock-forward", cam, "-21d") else { return };
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    wait_stored(&d, 12);
    let before = stored(&d);
    let stamped = before[0]["captured_at"].as_f64().unwrap();
    assert!((real_now() - WEEKS_3 - stamped).abs() < 60.0, "the faked clock is not three weeks back: {stamped}");
    let status = d.get("/api/status").json();
    assert_eq!(status["clock"]["jumps"], 0, "{}", status["clock"]);
    let old_days = day_dirs(&data);

    // NTP syncs.
    std::fs::write(clock_file(&d), "+0").unwrap();
    let ev = wait_jump(&d, "+21 d");
    assert_eq!(ev["kind"], "info");
    let status = d.get("/api/status").json();
    assert_eq!(status["clock"]["jumps"], 1, "{}", status["clock"]);
    assert!(status["clock"]["settled"] == true && status["clock"]["note"].is_null(), "{}", status["clock"]);
    let metrics = d.get("/metrics").text();
    assert!(metrics.contains("camjobd_clock_jumps_total 1"), "{metrics}");

    // Nothing was deleted, and every snapshot from before the jump is dated on the real timeline.
    wait_stored(&d, before.len() + 5);
    let store = d.camera("cam0")["store"].clone();
    assert_eq!(store["deleted"], 0, "retention deleted snapshots because of the jump: {store}");
    let now = real_now();
    let after = stored(&d);
    for s in &after {
        let at = s["captured_at"].as_f64().unwrap();
        assert!(now - at < 120.0 && at <= now + 1.0, "snapshot {} dated {at}, now {now}", s["seq"]);
    }
    for b in &before {
        assert!(after.iter().any(|a| a["seq"] == b["seq"]), "snapshot {} is gone", b["seq"]);
    }
    assert_eq!(d.camera("cam0")["job"]["state"], "RUNNING");
    // The files stay where they were written: under the day the wrong clock said.
    assert!(day_dirs(&data).contains(&old_days[0]), "{:?}", day_dirs(&data));

    // An export of the last ten minutes, asked for after the jump, holds them.
    let r = d.post(
        "/api/exports",
        &json!({"camera": "cam0", "from": now - 600.0, "to": now + 60.0, "kind": "archive"}).to_string(),
    );
    let id = r.json()["id"].as_u64().unwrap_or_else(|| panic!("{}", r.text()));
    let deadline = Instant::now() + 20 * SEC;
    while d.get(&format!("/api/exports/{id}")).json()["state"] != "SUCCEEDED" {
        assert!(Instant::now() < deadline, "export: {}", d.get(&format!("/api/exports/{id}")).text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let tar = d.get(&format!("/api/exports/{id}/file")).body;
    for b in &before {
        let name = format!("{}/{}.jpg", old_days[0], b["seq"]);
        assert!(tar.windows(name.len()).any(|w| w == name.as_bytes()), "the export lacks {name}");
    }
}

#[test]
fn a_backward_jump_leaves_nothing_dated_in_the_future_and_the_budget_deletes_by_capture_order() {
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 100, "store": {"max_files": 30}}));
    let Some((d, _data)) = start_faked("clock-backward", cam, "+21d") else { return };
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    wait_stored(&d, 15);
    let before = stored(&d);
    assert!(before[0]["captured_at"].as_f64().unwrap() > real_now() + WEEKS_3 - 60.0, "not three weeks ahead");
    std::fs::write(clock_file(&d), "+0").unwrap();
    wait_jump(&d, "-21 d");
    // Right after the jump (nothing deleted yet: fewer than 30 files), every snapshot from before
    // it is back on the real timeline.
    let now = real_now();
    let after = stored(&d);
    for b in &before {
        let a = after.iter().find(|a| a["seq"] == b["seq"]).unwrap_or_else(|| panic!("snapshot {} is gone", b["seq"]));
        let at = a["captured_at"].as_f64().unwrap();
        assert!(at <= now + 1.0 && now - at < 120.0, "snapshot {} dated {at}, now {now}", a["seq"]);
    }
    // The budget keeps going: 40 more snapshots through a 30-file budget, oldest first (the
    // listing is newest first).
    let first = before[0]["seq"].as_u64().unwrap();
    let deadline = Instant::now() + 20 * SEC;
    while stored(&d)[0]["seq"].as_u64().unwrap() < first + 40 {
        assert!(Instant::now() < deadline, "{}", d.camera("cam0")["store"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let list = stored(&d);
    assert!(list.len() <= 30, "{} files listed", list.len());
    let seqs: Vec<u64> = list.iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "not the newest run by seq: {seqs:?}");
    assert_eq!(d.get("/api/status").json()["clock"]["jumps"], 1);
}

#[test]
fn midnight_utc_while_running_opens_a_new_day_directory_and_loses_nothing() {
    let now = real_now();
    let to_midnight = 86_400.0 - now.rem_euclid(86_400.0);
    // Fifteen seconds before midnight UTC, on the faked clock (start-up takes a few).
    let offset = format!("{:+.3}", to_midnight - 15.0);
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 100}));
    let Some((d, data)) = start_faked("clock-midnight", cam, &offset) else { return };
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let deadline = Instant::now() + 45 * SEC;
    while day_dirs(&data).len() < 2 || stored(&d).len() < 180 {
        assert!(Instant::now() < deadline, "days {:?}, {} stored", day_dirs(&data), stored(&d).len());
        std::thread::sleep(Duration::from_millis(100));
    }
    let store = d.camera("cam0")["store"].clone();
    assert_eq!(store["errors"], 0, "{store}");
    assert_eq!(store["deleted"], 0, "{store}");
    let days = day_dirs(&data);
    let on_disk: usize = days.iter().map(|day| std::fs::read_dir(data.join("cam0").join(day)).unwrap().count()).sum();
    let listed = d.camera("cam0")["store"]["files"].as_u64().unwrap() as usize;
    // Written while we counted: allow the files of the last moment.
    assert!(on_disk >= listed && on_disk <= listed + 3, "{on_disk} files on disk, {listed} listed");
    assert_eq!(d.get("/api/status").json()["clock"]["jumps"], 0, "a new day is not a jump");
}
