//! The `pipe` source against real child processes: pass-through bytes, bad frames dropped and
//! counted, a child that exits, and no zombie or orphan after stop or shutdown.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);

fn pipe_cam(name: &str, script: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut cam = json!({
        "name": name,
        "source": { "kind": "pipe", "command": ["sh", "-c", script] },
        "snapshot_interval_ms": 0,
    });
    merge(&mut cam, extra);
    cam
}

/// Pids whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) {
                found.push(pid);
            }
        }
    }
    found
}

/// Children of `pid` (any thread), zombies included.
fn children(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(c.split_whitespace().map(String::from));
        }
    }
    out
}

fn wait_until(within: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn frames_pass_through_byte_for_byte_and_the_child_is_reaped_on_stop() {
    let dir = temp_dir("pipe");
    let frame = jpeg(320, 240, 7);
    std::fs::write(dir.path().join("f.jpg"), &frame).unwrap();
    // The marker makes this test's children findable in /proc.
    let script = format!("while :; do cat {}; sleep 0.0271828; done", dir.path().join("f.jpg").display());
    let cfg = config(&dir, json!([pipe_cam("cam0", &script, json!({}))]), json!({}));
    let mut d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    d.wait_job("cam0", 10 * SEC, |j| j["frames_captured"].as_u64().unwrap() >= 5);
    let r = d.get("/api/cameras/cam0/latest.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, frame, "MJPEG frames are passed through untouched");
    let c = d.camera("cam0");
    assert_eq!((c["latest"]["width"].as_u64(), c["latest"]["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(c["job"]["frames_dropped"], 0);
    assert!(!children(d.pid()).is_empty());

    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    d.wait_state("cam0", "STOPPED", 5 * SEC);
    wait_until(3 * SEC, "the child (or its sleep) outlived the stop", || {
        processes_with("0.0271828").is_empty() && children(d.pid()).is_empty()
    });

    // And on shutdown too.
    assert_eq!(d.post("/api/cameras/cam0/start", "").status, 202);
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    assert!(d.terminate(2 * SEC).expect("exits within 2 s").success());
    wait_until(3 * SEC, "children outlived the daemon", || processes_with("0.0271828").is_empty());
}

#[test]
fn oversize_and_garbage_frames_are_dropped_and_counted() {
    let dir = temp_dir("pipebad");
    std::fs::write(dir.path().join("small.jpg"), jpeg(64, 48, 1)).unwrap();
    let big = jpeg(1024, 768, 2);
    assert!(big.len() > 8192);
    std::fs::write(dir.path().join("big.jpg"), &big).unwrap();
    std::fs::write(dir.path().join("junk"), b"this is not a jpeg \xff\x00\xff").unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let script = format!(
        "while :; do cat {} {} {} {}; sleep 0.01; done",
        p("small.jpg"),
        p("big.jpg"),
        p("junk"),
        p("small.jpg")
    );
    let cfg = config(&dir, json!([pipe_cam("cam0", &script, json!({"max_frame_bytes": 8192}))]), json!({}));
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let j = d.wait_job("cam0", 10 * SEC, |j| {
        j["frames_dropped"].as_u64().unwrap() >= 4 && j["frames_captured"].as_u64().unwrap() >= 4
    });
    assert_eq!(j["state"], "RUNNING", "bad frames do not interrupt the job");
    let r = d.get("/api/cameras/cam0/latest.jpg");
    let img = image::load_from_memory_with_format(&r.body, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48), "only good frames are published");
    // Drops are summarised in events, not one per frame.
    let e = d.wait_event(5 * SEC, |e| e["kind"] == "drop");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("larger than max_frame_bytes 8192"), "{m}");
}

#[test]
fn a_child_that_exits_is_a_source_error_with_its_status() {
    let dir = temp_dir("pipeexit");
    std::fs::write(dir.path().join("f.jpg"), jpeg(64, 48, 3)).unwrap();
    let script = format!("cat {0} {0}; echo 'camera: no device' >&2; exit 3", dir.path().join("f.jpg").display());
    let cfg = config(
        &dir,
        json!([pipe_cam("cam0", &script, json!({"watchdog": {"max_recoveries": 2, "backoff_initial_ms": 50}}))]),
        json!({}),
    );
    let d = Daemon::builder(dir, &cfg).start();
    let j = d.wait_state("cam0", "FAILED", 10 * SEC);
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("exited with status 3") && reason.contains("camera: no device"), "{reason}");
    assert_eq!(j["recoveries"], 2);
    assert!(j["frames_captured"].as_u64().unwrap() >= 2);
    wait_until(3 * SEC, "a zombie was left", || children(d.pid()).is_empty());
}

#[test]
fn a_missing_program_fails_with_a_helpful_reason() {
    let cam = pipe_cam(
        "cam0",
        "",
        json!({"source": {"command": ["/nonexistent/rpicam-vid"]}, "watchdog": {"max_recoveries": 0}}),
    );
    let d = Daemon::start("pipemissing", json!([cam]), json!({}));
    let j = d.wait_state("cam0", "FAILED", 10 * SEC);
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("/nonexistent/rpicam-vid") && reason.contains("not found"), "{reason}");
    assert!(reason.ends_with("recovery is off (max_recoveries 0)"), "{reason}");
}

#[test]
fn children_die_with_a_killed_daemon() {
    let dir = temp_dir("pipekill");
    std::fs::write(dir.path().join("f.jpg"), jpeg(64, 48, 9)).unwrap();
    let script = format!("while :; do cat {}; sleep 0.0314159; done", dir.path().join("f.jpg").display());
    let cfg = config(&dir, json!([pipe_cam("cam0", &script, json!({}))]), json!({}));
    let mut d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    assert!(!processes_with("0.0314159").is_empty());
    // SIGKILL: no destructor runs; the kernel's parent-death signal must take the child.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    wait_until(3 * SEC, "the pipe command outlived a SIGKILLed camjobd", || processes_with("0.0314159").is_empty());
}
