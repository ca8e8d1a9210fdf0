//! `GET /api/cameras/<camera>/history`: the last day, one point a minute — here one a second
//! or five (the debug build's knobs shorten the interval and shrink the ring), through the real
//! binary.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

/// camjobd with `cameras`, history points of `interval_s` and, if given, a ring of `capacity`.
fn start(tag: &str, cameras: Value, interval_s: u32, capacity: Option<usize>) -> Daemon {
    let dir = temp_dir(tag);
    let cfg = config(&dir, cameras, json!({}));
    let mut b = Daemon::builder(dir, &cfg).env("CAMJOBD_TEST_HISTORY_INTERVAL_S", &interval_s.to_string());
    if let Some(n) = capacity {
        b = b.env("CAMJOBD_TEST_HISTORY_CAPACITY", &n.to_string());
    }
    b.start()
}

/// The whole answer for `camera` with `query` ("" or "?since=...").
fn history(d: &Daemon, camera: &str, query: &str) -> Value {
    let r = d.get(&format!("/api/cameras/{camera}/history{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

fn points(d: &Daemon, camera: &str) -> Vec<Value> {
    history(d, camera, "")["points"].as_array().unwrap().clone()
}

/// Polls the points until `pred` holds; panics with the last ones after `within`.
fn wait_points(d: &Daemon, camera: &str, within: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let p = points(d, camera);
        if pred(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "not within {within:?}; points: {p:#?}\nstderr:\n{}", d.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn t(p: &Value) -> u64 {
    p["t"].as_u64().unwrap()
}

fn n(p: &Value, key: &str) -> u64 {
    p[key].as_u64().unwrap_or_else(|| panic!("{key} in {p}"))
}

/// Oldest first, never two points for one interval (the wall clock is not stepped here).
fn assert_ordered(points: &[Value]) {
    assert!(points.windows(2).all(|w| t(&w[0]) < t(&w[1])), "not oldest first: {points:#?}");
}

#[test]
fn points_come_every_interval_with_the_cameras_frame_rate_across_a_restart() {
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let d = start("hist-fps", json!([synthetic("cam0", json!({}))]), 1, None);
    let body = history(&d, "cam0", "");
    assert_eq!((body["camera"].as_str(), body["interval_s"].as_u64()), (Some("cam0"), Some(1)), "{body}");
    assert_eq!(body["capacity"], 1440);
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let running = |p: &[Value]| p.iter().filter(|p| p["state"] == "RUNNING").count();
    let pts = wait_points(&d, "cam0", 15 * SEC, |p| running(p) >= 5);
    assert_ordered(&pts);
    assert!(t(&pts[0]) >= t0 - 1, "the first point is not older than the process: {pts:#?}");
    // Whole intervals in RUNNING (not the first, watched only from start): about 50 fps.
    let mut fps: Vec<f64> =
        pts[1..].iter().filter(|p| p["state"] == "RUNNING").map(|p| p["fps"].as_f64().unwrap()).collect();
    fps.sort_by(f64::total_cmp);
    let median = fps[fps.len() / 2];
    println!("figures: {} points, RUNNING fps {fps:?} (median {median})", pts.len());
    assert!((40.0..=60.0).contains(&median), "the synthetic camera runs at 50 fps: {pts:#?}");
    assert!(pts.iter().all(|p| n(p, "drops") == 0), "{pts:#?}");
    // A second job: its counters start from zero again; the points neither go negative nor
    // count the first job's frames twice.
    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    d.wait_state("cam0", "STOPPED", 5 * SEC);
    let stopped = wait_points(&d, "cam0", 10 * SEC, |p| p.last().is_some_and(|p| p["state"] == "STOPPED"));
    assert_eq!(n(stopped.last().unwrap(), "frames"), 0, "{stopped:#?}");
    assert!(stopped.iter().any(|p| p["state"] == "STOPPING"), "the minute of the stop: {stopped:#?}");
    assert_eq!(d.post("/api/cameras/cam0/start", "").status, 202);
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let since = t(stopped.last().unwrap());
    let again = wait_points(&d, "cam0", 15 * SEC, |p| {
        p.iter().filter(|p| t(p) > since && p["state"] == "RUNNING").count() >= 3
    });
    assert_ordered(&again);
    let max = again.iter().map(|p| p["fps"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(max <= 75.0, "no point counts more than the camera delivers: {again:#?}");
    let after: Vec<&Value> = again.iter().filter(|p| t(p) > since).collect();
    assert!(after.iter().any(|p| p["state"] == "STARTING"), "the minute of the start: {after:#?}");
}

#[test]
fn the_ring_keeps_its_capacity_oldest_first_and_since_filters() {
    let d = start("hist-ring", json!([synthetic("cam0", json!({"source": {"fps": 10}}))]), 1, Some(4));
    assert_eq!(history(&d, "cam0", "")["capacity"], 4);
    let first = wait_points(&d, "cam0", 10 * SEC, |p| !p.is_empty());
    let oldest = t(&first[0]);
    // Every answer while it wraps: at most 4 points, oldest first; until the oldest has moved
    // on by more than the ring holds.
    let deadline = Instant::now() + 20 * SEC;
    let mut answers = 0;
    let pts = loop {
        let p = points(&d, "cam0");
        answers += 1;
        assert!(p.len() <= 4, "the ring grew: {p:#?}");
        assert_ordered(&p);
        if p.len() == 4 && t(&p[0]) > oldest + 4 {
            break p;
        }
        assert!(Instant::now() < deadline, "the ring did not wrap: {p:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("figures: {answers} answers while the ring of 4 wrapped, oldest {oldest} -> {}", t(&pts[0]));

    // ?since= keeps the points from that time on (and takes a fraction).
    let body = history(&d, "cam0", &format!("?since={}", t(&pts[2])));
    let kept = body["points"].as_array().unwrap();
    assert!(!kept.is_empty() && kept.iter().all(|p| t(p) >= t(&pts[2])), "{body:#}");
    assert_eq!(t(&kept[0]), t(&pts[2]), "{body:#}");
    let body = history(&d, "cam0", &format!("?since={}.5", t(&pts[2])));
    assert!(body["points"].as_array().unwrap().iter().all(|p| t(p) > t(&pts[2])), "{body:#}");
    assert_eq!(history(&d, "cam0", "?since=99999999999")["points"], json!([]));
    assert!(!history(&d, "cam0", "?since=0")["points"].as_array().unwrap().is_empty());

    // Bad values and parameters: 400 naming the parameter; an unknown camera: 404.
    for bad in ["since=abc", "since=-1", "since=", "since=NaN", "since=inf", "since=1&since=x"] {
        let r = d.get(&format!("/api/cameras/cam0/history?{bad}"));
        assert_eq!(r.error_code(400), "bad_query", "{bad}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("since="), "{bad}: {}", r.text());
    }
    let r = d.get("/api/cameras/cam0/history?from=1");
    assert_eq!(r.error_code(400), "bad_query");
    assert!(r.text().contains("\\\"from\\\"") && r.text().contains("since"), "{}", r.text());
    assert_eq!(d.get("/api/cameras/nope/history").error_code(404), "not_found");
    assert_eq!(request(d.addr, "POST", "/api/cameras/cam0/history", &[], b"").status, 405);
}

#[test]
fn a_stall_that_recovers_within_the_interval_still_marks_it_recovering() {
    // Stalls after 6 s of frames, is found out after 300 ms, reopened after 100 ms, and
    // delivers again from that reopen on: RECOVERING for a fraction of a 5 s interval.
    let cam = synthetic(
        "cam0",
        json!({
            "source": {"fault": {"stall_after_frames": 300, "recover_after_reopens": 1}},
            "watchdog": {"stall_timeout_ms": 300, "backoff_initial_ms": 100, "backoff_max_ms": 100}
        }),
    );
    let d = start("hist-stall", json!([cam]), 5, None);
    let at = |state: &str| {
        let e = d.wait_event(20 * SEC, |e| e["camera"] == "cam0" && e["state"] == state && e["job_id"].is_u64());
        e["at"].as_f64().unwrap()
    };
    let started = at("RUNNING");
    let recovering = at("RECOVERING");
    let job = d.wait_job("cam0", 10 * SEC, |j| j["state"] == "RUNNING" && j["recoveries"] == 1);
    assert_eq!(job["recoveries"], 1);
    let events = d.get("/api/events?limit=256").json();
    let back = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "RUNNING" && e["at"].as_f64().unwrap() > recovering)
        .map(|e| e["at"].as_f64().unwrap())
        .next()
        .expect("the RUNNING after the recovery");
    let slot = |at: f64| (at as u64) / 5 * 5;
    // Wait for the interval after the recovery's to close too.
    let pts = wait_points(&d, "cam0", 20 * SEC, |p| p.last().is_some_and(|p| t(p) > slot(back)));
    assert_ordered(&pts);
    let hit = pts.iter().position(|p| t(p) == slot(recovering)).expect("the stall's interval");
    println!(
        "figures: RECOVERING for {:.0} ms at {recovering:.3}; points {:?}",
        (back - recovering) * 1000.0,
        pts.iter().map(|p| (t(p), p["state"].as_str().unwrap(), n(p, "frames"))).collect::<Vec<_>>()
    );
    assert!(back - recovering < 5.0, "recovered within an interval");
    assert_eq!(pts[hit]["state"], "RECOVERING", "{pts:#?}");
    if slot(back) == slot(recovering) {
        // Began and ended RUNNING, with the RECOVERING in between: still marked.
        assert_eq!(pts[hit + 1]["state"], "RUNNING", "{pts:#?}");
        // The interval before, when the job was RUNNING all through it.
        if hit > 0 && t(&pts[hit - 1]) == slot(recovering) - 5 && slot(started) < t(&pts[hit - 1]) {
            assert_eq!(pts[hit - 1]["state"], "RUNNING", "{pts:#?}");
        }
    }
    assert!(n(&pts[hit], "frames") < n(&pts[hit + 1], "frames"), "the stall cost frames: {pts:#?}");
}

#[test]
fn dropped_frames_are_counted_in_their_interval() {
    // A pipe camera sending a small JPEG and one too large for max_frame_bytes, in turn: half
    // of its frames are dropped and counted, the job stays RUNNING.
    let dir = temp_dir("hist-drops");
    std::fs::write(dir.path().join("small.jpg"), jpeg(64, 48, 1)).unwrap();
    std::fs::write(dir.path().join("big.jpg"), jpeg(1024, 768, 2)).unwrap();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let script = format!("while :; do cat {}; sleep 0.05; cat {}; sleep 0.05; done", p("small.jpg"), p("big.jpg"));
    let cam = json!({
        "name": "cam0",
        "source": {"kind": "pipe", "command": ["sh", "-c", script]},
        "max_frame_bytes": 8192,
        "watchdog": {"stall_timeout_ms": 2000},
    });
    let cfg = config(&dir, json!([cam]), json!({}));
    let d = Daemon::builder(dir, &cfg).env("CAMJOBD_TEST_HISTORY_INTERVAL_S", "1").start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let with_drops = |p: &[Value]| p.iter().filter(|p| p["state"] == "RUNNING" && n(p, "drops") > 0).count();
    let pts = wait_points(&d, "cam0", 20 * SEC, |p| with_drops(p) >= 3);
    let job = d.camera("cam0")["job"].clone();
    let drops: u64 = pts.iter().map(|p| n(p, "drops")).sum();
    let frames: u64 = pts.iter().map(|p| n(p, "frames")).sum();
    println!("figures: {drops} drops and {frames} frames in {} points; the job: {job}", pts.len());
    assert!(drops <= job["frames_dropped"].as_u64().unwrap(), "more drops than the job counted: {pts:#?}");
    assert!(frames <= job["frames_captured"].as_u64().unwrap(), "{pts:#?}");
    // About one dropped for one delivered.
    let full: Vec<&Value> = pts.iter().filter(|p| p["state"] == "RUNNING" && n(p, "drops") > 0).collect();
    assert!(full.iter().all(|p| n(p, "frames") > 0), "good frames beside the drops: {pts:#?}");
    assert!(drops * 3 >= frames && frames * 3 >= drops, "{drops} drops for {frames} frames");
}
