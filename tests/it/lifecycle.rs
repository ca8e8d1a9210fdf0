//! The job lifecycle through the real binary: start/stop, faults, limits, restarts, signals.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn start_stop_conflicts_and_ids_that_survive_restarts() {
    let mut d = Daemon::start("startstop", json!([synthetic("cam0", json!({"autostart": false}))]), json!({}));
    let j = d.camera("cam0")["job"].clone();
    assert_eq!(j["state"], "IDLE");
    assert_eq!(d.post("/api/cameras/cam0/stop", "").error_code(409), "conflict");

    let r = d.post("/api/cameras/cam0/start", "");
    assert_eq!(r.status, 202, "{}", r.text());
    let first = r.json()["id"].as_u64().unwrap();
    assert_eq!(r.json()["state"], "STARTING");
    assert_eq!(d.post("/api/cameras/cam0/start", "").error_code(409), "conflict");
    let j = d.wait_state("cam0", "RUNNING", 10 * SEC);
    assert!(j["started_at"].as_f64().unwrap() > 1.6e9);
    d.wait_job("cam0", 10 * SEC, |j| j["frames_captured"].as_u64().unwrap() > 3 && j["last_frame_at"].is_number());

    let r = d.post("/api/cameras/cam0/stop", "");
    assert_eq!(r.status, 202, "{}", r.text());
    let j = d.wait_state("cam0", "STOPPED", 5 * SEC);
    assert!(j["ended_at"].as_f64().unwrap() >= j["started_at"].as_f64().unwrap());
    assert_eq!(j["reason"], "stop requested");
    assert_eq!(d.post("/api/cameras/cam0/stop", "").error_code(409), "conflict");
    // The history keeps the ended job with its counters.
    let jobs = d.get("/api/jobs").json();
    let h = &jobs["ended"][0];
    assert_eq!((h["id"].as_u64(), h["state"].as_str()), (Some(first), Some("STOPPED")), "{jobs:#}");
    assert_eq!(h["frames_captured"], j["frames_captured"], "{jobs:#}");

    let r = d.post("/api/cameras/cam0/start", "");
    let second = r.json()["id"].as_u64().unwrap();
    assert!(second > first);
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    assert!(d.terminate(2 * SEC).expect("exits within 2 s").success());

    // A new process continues the id sequence from storage.dir.
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    drop(d);
    let d = Daemon::builder(dir, &cfg).start();
    let r = d.post("/api/cameras/cam0/start", "");
    assert!(r.json()["id"].as_u64().unwrap() > second, "{}", r.text());
}

#[test]
fn job_ids_saturate_with_a_clear_error_and_never_wrap() {
    // A tampered state.json two ids below the largest (2^53 - 1, what JavaScript reads exactly).
    let max: u64 = (1 << 53) - 1;
    let dir = temp_dir("ids");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/state.json"), format!(r#"{{"next_job_id":{}}}"#, max - 1)).unwrap();
    let cfg = config(&dir, json!([synthetic("cam0", json!({"autostart": false}))]), json!({}));
    let d = Daemon::builder(dir, &cfg).start();
    for want in [max - 1, max] {
        let r = d.post("/api/cameras/cam0/start", "");
        assert_eq!(r.json()["id"].as_u64(), Some(want), "{}", r.text());
        d.wait_state("cam0", "RUNNING", 10 * SEC);
        assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
        d.wait_state("cam0", "STOPPED", 5 * SEC);
    }
    let r = d.post("/api/cameras/cam0/start", "");
    assert_eq!(r.error_code(500), "ids_exhausted");
    assert!(r.text().contains("state.json"), "{}", r.text());
    let j = d.camera("cam0")["job"].clone();
    assert_eq!((j["id"].as_u64(), j["state"].as_str()), (Some(max), Some("STOPPED")), "the last job stays as it was");

    // Past the largest (2^64 - 2 on disk): autostart is refused the same way, with an event.
    let dir = temp_dir("ids-wrap");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/state.json"), r#"{"next_job_id":18446744073709551614}"#).unwrap();
    let cfg = config(&dir, json!([synthetic("cam0", json!({}))]), json!({}));
    let d = Daemon::builder(dir, &cfg).start();
    let events = d.get("/api/events").json();
    assert!(events.to_string().contains("job ids are used up"), "{events:#}");
    assert_eq!(d.camera("cam0")["job"]["state"], "IDLE");
    assert_eq!(d.post("/api/cameras/cam0/start", "").error_code(500), "ids_exhausted");
}

#[test]
fn frames_keep_coming_with_no_client_at_all() {
    let d = Daemon::start("noclient", json!([synthetic("cam0", json!({"source": {"fps": 20}}))]), json!({}));
    let j0 = d.wait_state("cam0", "RUNNING", 10 * SEC);
    let f0 = j0["frames_captured"].as_u64().unwrap();
    // Nobody talks to the daemon for 10 s; the backend owns the job.
    std::thread::sleep(10 * SEC);
    let j1 = d.camera("cam0")["job"].clone();
    assert_eq!(j1["state"], "RUNNING");
    let f1 = j1["frames_captured"].as_u64().unwrap();
    assert!(f1 >= f0 + 150, "20 fps for 10 s gave only {} frames", f1 - f0);
    assert!(d.camera("cam0")["latest"]["seq"].as_u64().unwrap() > 10);
}

#[test]
fn stall_recovers_then_fails_with_a_reason_in_the_expected_time() {
    let cam = synthetic(
        "cam0",
        json!({
            "source": {"fault": {"stall_after_frames": 5}},
            "watchdog": {"stall_timeout_ms": 500, "max_recoveries": 2, "backoff_initial_ms": 100, "backoff_max_ms": 200}
        }),
    );
    let d = Daemon::start("stall", json!([cam]), json!({}));
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let t0 = Instant::now();
    let j = d.wait_state("cam0", "RECOVERING", 5 * SEC);
    assert!(j["reason"].as_str().unwrap().starts_with("no frame for "), "{j}");
    let j = d.wait_state("cam0", "FAILED", 10 * SEC);
    let took = t0.elapsed();
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("(stall timeout 0.5 s); 2 recoveries failed"), "{reason}");
    assert_eq!(j["recoveries"], 2);
    // 3 stall timeouts (the first attempt and 2 recoveries) + 0.1 s + 0.2 s of backoff = 1.8 s,
    // measured from when RUNNING was seen (up to a few frames after the stall began).
    assert!(took >= Duration::from_millis(1200) && took <= Duration::from_millis(4000), "took {took:?}");
    // The events tell the story in order.
    let ev = d.get("/api/events?limit=256").json();
    let states: Vec<&str> = ev["events"].as_array().unwrap().iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states, ["STARTING", "RUNNING", "RECOVERING", "RECOVERING", "FAILED"], "{ev:#}");
}

#[test]
fn a_stalled_camera_that_comes_back_returns_to_running() {
    let cam = synthetic(
        "cam0",
        json!({
            "source": {"fault": {"stall_after_frames": 5, "recover_after_reopens": 1}},
            "watchdog": {"stall_timeout_ms": 300, "max_recoveries": 3, "backoff_initial_ms": 50}
        }),
    );
    let d = Daemon::start("heal", json!([cam]), json!({}));
    d.wait_state("cam0", "RECOVERING", 10 * SEC);
    let j = d.wait_state("cam0", "RUNNING", 5 * SEC);
    assert_eq!(j["recoveries"], 1);
    assert!(j["reason"].is_null());
    d.wait_job("cam0", 5 * SEC, |j| j["frames_captured"].as_u64().unwrap() > 10);
}

#[test]
fn read_errors_are_counted_and_a_run_of_them_fails_the_job() {
    let some = synthetic("some", json!({"source": {"fault": {"error_every": 3}}}));
    let all = synthetic(
        "all",
        json!({"source": {"fault": {"error_every": 1}}, "watchdog": {"max_consecutive_errors": 3, "max_recoveries": 1, "backoff_initial_ms": 50}}),
    );
    let d = Daemon::start("errors", json!([some, all]), json!({}));
    let j = d.wait_job("some", 10 * SEC, |j| j["errors_total"].as_u64().unwrap() >= 5);
    assert_eq!(j["state"], "RUNNING", "isolated errors do not interrupt the job");
    let j = d.wait_state("all", "FAILED", 10 * SEC);
    let reason = j["reason"].as_str().unwrap();
    // The watchdog notices within one tick, so the count may be a little past the threshold.
    assert!(reason.contains(" read errors in a row (max_consecutive_errors 3); last: synthetic read"), "{reason}");
    assert!(reason.ends_with("; 1 recovery failed"), "{reason}");
    assert_eq!(d.camera("some")["job"]["state"], "RUNNING", "one failed camera leaves the other alone");
    // Errors are summarised in events, at most one per camera per second.
    let e = d.wait_event(5 * SEC, |e| e["kind"] == "error" && e["camera"] == "some");
    assert!(e["message"].as_str().unwrap().contains("source error(s); last: synthetic read"), "{e}");
}

#[test]
fn a_camera_that_cannot_be_opened_fails_with_the_reason() {
    let cam = synthetic(
        "cam0",
        json!({"source": {"fault": {"fail_open": true}}, "watchdog": {"max_recoveries": 2, "backoff_initial_ms": 50}}),
    );
    let d = Daemon::start("failopen", json!([cam]), json!({}));
    let j = d.wait_state("cam0", "FAILED", 10 * SEC);
    assert!(j["reason"].as_str().unwrap().starts_with("cannot open the synthetic camera"), "{j}");
    assert_eq!(j["recoveries"], 2);
    assert!(j["ended_at"].is_number());
    assert!(d.camera("cam0")["latest"].is_null());
    assert_eq!(d.get("/api/cameras/cam0/latest.jpg").error_code(404), "no_snapshot");
    // A failed job can be started again, as a new job.
    let r = d.post("/api/cameras/cam0/start", "");
    assert_eq!(r.status, 202);
    assert!(r.json()["id"].as_u64().unwrap() > j["id"].as_u64().unwrap());
}

#[test]
fn limits_complete_the_job() {
    let frames = synthetic("frames", json!({"max_frames": 25}));
    let timed = synthetic("timed", json!({"autostart": false}));
    let d = Daemon::start("limits", json!([frames, timed]), json!({}));
    let j = d.wait_state("frames", "COMPLETED", 10 * SEC);
    assert_eq!(j["frames_captured"], 25, "exactly max_frames are captured");
    assert_eq!(j["reason"], "max_frames 25 reached");

    let r = d.post("/api/cameras/timed/start", r#"{"max_duration_s": 1}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["max_duration_s"], 1);
    let t0 = Instant::now();
    let j = d.wait_state("timed", "COMPLETED", 5 * SEC);
    assert!(t0.elapsed() >= Duration::from_millis(800));
    assert_eq!(j["reason"], "max_duration_s 1 reached");

    let r = d.post("/api/cameras/timed/start", r#"{"max_frames": 3}"#);
    assert_eq!(r.status, 202);
    let j = d.wait_state("timed", "COMPLETED", 5 * SEC);
    assert_eq!(j["frames_captured"], 3);
}

#[test]
fn sigterm_and_sigint_exit_zero_within_two_seconds() {
    for (sig, signo) in [("TERM", libc::SIGTERM), ("INT", libc::SIGINT)] {
        let mut d = Daemon::start("signal", json!([synthetic("cam0", json!({}))]), json!({}));
        d.wait_state("cam0", "RUNNING", 10 * SEC);
        let t0 = Instant::now();
        signal(d.pid(), signo);
        let status = loop {
            if let Some(s) = d.child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < 2 * SEC, "SIG{sig}: still running after 2 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "SIG{sig}; stderr:\n{}", d.stderr());
    }
}

#[test]
fn command_line_and_config_errors() {
    let run = |args: &[&str]| std::process::Command::new(bin()).args(args).output().unwrap();
    let o = run(&["--version"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("camjobd "));
    let o = run(&["--help"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--check-config"));
    let o = run(&["--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown argument \"--frobnicate\""));

    let o = run(&["--check-config"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["http"]["bind"], "127.0.0.1:8080");
    assert_eq!(v["cameras"][0]["source"]["kind"], "synthetic");
    assert_eq!(v["cameras"][0]["autostart"], true);

    let o = run(&["--board", "rpi4", "--check-config"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["--board", "nope"]);
    assert_eq!(o.status.code(), Some(2));

    let dir = temp_dir("badcfg");
    for (doc, want) in [
        (
            r#"{"cameras":[{"watchdog":{"stall_timeout_ms":5}}]}"#,
            "cameras[0].watchdog.stall_timeout_ms: must be >= 100",
        ),
        (r#"{"http":{"bind":"127.0.0.1:0","colour":"red"}}"#, "http.colour: unknown field `colour`"),
        (r#"{"cameras":[{"name":"a"},{"name":"a"}]}"#, "cameras[1].name:"),
        (r#"{"cameras": [}"#, "expected value"),
    ] {
        let p = dir.path().join("bad.json");
        std::fs::write(&p, doc).unwrap();
        let o = run(&["--config", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{doc}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{doc}: {err}");
    }
    let o = run(&["--config", "/nonexistent/camjobd.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read /nonexistent/camjobd.json"));
}

#[test]
fn an_unwritable_storage_dir_is_a_fatal_error_that_says_what_to_do() {
    let dir = temp_dir("storage");
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let mut cfg = config(&dir, json!([synthetic("cam0", json!({}))]), json!({}));
    cfg["storage"]["dir"] = json!(dir.path().join("file").join("sub"));
    std::fs::write(dir.path().join("c.json"), cfg.to_string()).unwrap();
    let o = std::process::Command::new(bin()).arg("--config").arg(dir.path().join("c.json")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot create the data directory"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_camera_that_never_delivers_fails_when_its_time_is_up_instead_of_completing() {
    let cam = synthetic(
        "cam0",
        json!({"max_duration_s": 1, "source": {"fault": {"fail_open": true}}, "watchdog": {"max_recoveries": 1000, "backoff_initial_ms": 50, "backoff_max_ms": 100}}),
    );
    let d = Daemon::start("overdue", json!([cam]), json!({}));
    let j = d.wait_job("cam0", 10 * SEC, |j| j["state"] == "FAILED" || j["state"] == "COMPLETED");
    assert_eq!(j["state"], "FAILED", "{j}");
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("max_duration_s 1 reached while RECOVERING: cannot open the synthetic camera"),
        "{reason}"
    );
}

#[test]
fn a_log_reader_that_never_reads_cannot_wedge_the_service() {
    // stderr is a pipe nobody reads, at debug level: once the pipe is full every log write
    // would block. Jobs, the API and shutdown must not care.
    let dir = temp_dir("stuckstderr");
    let cfg = config(&dir, json!([synthetic("cam0", json!({"source": {"fault": {"error_every": 2}}}))]), json!({}));
    let mut d = Daemon::builder(dir, &cfg).unread_stderr().start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    // Every start and stop logs a few lines: 40 cycles are far more than a 4 KiB pipe holds.
    for _ in 0..40 {
        assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
        d.wait_state("cam0", "STOPPED", 5 * SEC);
        assert_eq!(d.post("/api/cameras/cam0/start", "").status, 202);
        d.wait_state("cam0", "RUNNING", 5 * SEC);
    }
    // Proof that the pipe really is full: the `log` thread sleeps in the kernel's pipe write.
    let wchan = std::fs::read_dir(format!("/proc/{}/task", d.pid()))
        .unwrap()
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "log"))
        .map(|t| std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default())
        .expect("a thread named log");
    if wchan.is_empty() || wchan == "0" {
        eprintln!("this kernel hides wchan; cannot confirm the log thread is blocked");
    } else {
        assert!(
            wchan.contains("pipe_write"),
            "the log thread is not blocked on the pipe ({wchan}): the test proved nothing"
        );
    }
    let status = d.terminate(2 * SEC).expect("exits within 2 s although stderr is stuck");
    assert!(status.success());
}

#[test]
fn periodic_stalls_recover_by_themselves() {
    let cam = synthetic(
        "cam0",
        json!({"source": {"fault": {"stall_every_s": 2, "stall_for_ms": 700}},
               "watchdog": {"stall_timeout_ms": 300, "backoff_initial_ms": 50, "backoff_max_ms": 100, "max_recoveries": 100}}),
    );
    let d = Daemon::start("periodic", json!([cam]), json!({}));
    d.wait_state("cam0", "RECOVERING", 10 * SEC);
    let j = d.wait_job("cam0", 10 * SEC, |j| j["state"] == "RUNNING" && j["recoveries"].as_u64().unwrap() >= 1);
    let f0 = j["frames_captured"].as_u64().unwrap();
    d.wait_job("cam0", 5 * SEC, |j| j["frames_captured"].as_u64().unwrap() > f0 + 10);
}

#[test]
fn a_job_whose_frames_are_all_too_large_fails_naming_the_size_and_streams_a_placeholder() {
    // The issue's camera: 1920x1080 at quality 100 with max_frame_bytes 65536.
    let cam = synthetic(
        "cam0",
        json!({
            "source": {"kind": "synthetic", "width": 1920, "height": 1080, "fps": 10, "quality": 100},
            "max_frame_bytes": 65536,
            "watchdog": {"stall_timeout_ms": 1500, "max_recoveries": 1, "backoff_initial_ms": 100},
        }),
    );
    let dir = temp_dir("oversize");
    let cfg = config(&dir, json!([cam]), json!({}));
    // --check-config foresees it.
    std::fs::write(dir.path().join("c.json"), cfg.to_string()).unwrap();
    let o = check_config(&dir.path().join("c.json"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: cameras[0].max_frame_bytes: 1920x1080 at quality 100"), "{err}");
    let d = Daemon::builder(dir, &cfg).start();
    // A stream client is never left on an empty body: it gets the placeholder.
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    std::io::Write::write_all(&mut s, b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while !got.windows(16).any(|w| w == b"X-Camjobd-State:") {
        let n = std::io::Read::read(&mut s, &mut buf).expect("the stream sent a placeholder within 5 s");
        assert!(n > 0, "the stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    let j = d.wait_state("cam0", "RECOVERING", 10 * SEC);
    let reason = j["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("frames of ") && reason.contains(" KB exceed max_frame_bytes 65536: raise it"),
        "{reason}"
    );
    let kb: u64 = reason["frames of ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(kb > 65, "{reason}");
    let j = d.wait_state("cam0", "FAILED", 15 * SEC);
    assert!(j["reason"].as_str().unwrap().contains("exceed max_frame_bytes 65536"), "{j}");
    assert_eq!(d.get("/api/cameras/cam0/latest.jpg").status, 404, "no image ever");
    println!("figures: {reason}");
}

#[test]
fn an_occasional_frame_too_large_is_dropped_and_the_job_stays_running() {
    // A pipe camera sending a small JPEG every 50 ms and a 60 KB one every 20 frames, against
    // max_frame_bytes 16 KiB: the large ones are dropped and counted; the job is fine.
    let dir = temp_dir("some-oversize");
    let mut x: u32 = 7;
    let noise = image::RgbImage::from_fn(256, 256, |_, _| {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image::Rgb([(x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8])
    });
    let mut big = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut big, 90).encode_image(&noise).unwrap();
    assert!(big.len() > 20_000, "{} bytes", big.len());
    std::fs::write(dir.path().join("big.jpg"), &big).unwrap();
    std::fs::write(dir.path().join("small.jpg"), jpeg(32, 32, 100)).unwrap();
    let script = format!(
        "while :; do for i in $(seq 19); do cat {s}; sleep 0.05; done; cat {b}; sleep 0.05; done",
        s = dir.path().join("small.jpg").display(),
        b = dir.path().join("big.jpg").display()
    );
    let cam = json!({
        "name": "cam0",
        "source": {"kind": "pipe", "command": ["sh", "-c", script]},
        "max_frame_bytes": 16384,
        "snapshot_interval_ms": 20000,
        "watchdog": {"stall_timeout_ms": 1000},
    });
    let cfg = config(&dir, json!([cam]), json!({}));
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    std::thread::sleep(4 * SEC);
    let j = d.camera("cam0")["job"].clone();
    assert_eq!((j["state"].as_str(), j["recoveries"].as_u64()), (Some("RUNNING"), Some(0)), "{j}");
    assert!(j["frames_dropped"].as_u64() >= Some(2), "{j}");
}
