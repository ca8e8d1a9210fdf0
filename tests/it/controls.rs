//! Camera controls through the real binary: `GET`/`PUT /api/cameras/<camera>/controls` on the
//! synthetic camera (an int, a bool, a menu and a button, each visible in the picture) and on
//! libcamera through the stand-in rpicam-vid (a change restarts it with new options); values
//! persist in the camera's directory and are applied again at every open and recovery.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{config, request, synthetic, temp_dir, Daemon, Resp};
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

fn put(d: &Daemon, camera: &str, body: &Value) -> Resp {
    request(d.addr, "PUT", &format!("/api/cameras/{camera}/controls"), &[], body.to_string().as_bytes())
}

fn controls(d: &Daemon, camera: &str) -> Value {
    let r = d.get(&format!("/api/cameras/{camera}/controls"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The control named `name` in a controls answer.
fn control<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["controls"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name} in {v}"))
}

/// Waits (bounded) until the camera's saved file holds `want`.
fn wait_saved(storage: &Path, camera: &str, want: &Value) {
    let file = storage.join(camera).join("controls.json");
    let deadline = Instant::now() + 5 * SEC;
    loop {
        let got: Option<Value> = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if got.as_ref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{} holds {got:?}, not {want}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon whose storage is `storage` (kept across restarts).
fn start_with(tag: &str, storage: &Path, cam: Value) -> Daemon {
    let dir = temp_dir(tag);
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["storage"]["dir"] = json!(storage);
    Daemon::builder(dir, &cfg).start()
}

#[test]
fn synthetic_controls_are_listed_checked_set_saved_and_reapplied() {
    let storage = temp_dir("ctl-store");
    let cam = synthetic("cam0", json!({"autostart": false}));
    let mut d = start_with("ctl-a", storage.path(), cam.clone());
    // Before the first open the list is unknown, and a change says what to do.
    let v = controls(&d, "cam0");
    assert_eq!((v["open"].clone(), v["controls"].clone()), (json!(false), json!([])), "{v}");
    let r = put(&d, "cam0", &json!({"brightness": 10}));
    assert_eq!(r.error_code(409), "conflict");
    assert!(r.text().contains("/api/cameras/cam0/start"), "{}", r.text());

    assert_eq!(d.post("/api/cameras/cam0/start", "").status, 202);
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let v = controls(&d, "cam0");
    assert_eq!(v["open"], true);
    let kinds: Vec<(&str, &str)> = v["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("brightness", "int"), ("moving_bar", "bool"), ("pattern", "menu"), ("restart_count", "button")]
    );
    let b = control(&v, "brightness");
    assert_eq!(
        (b["min"].clone(), b["max"].clone(), b["default"].clone(), b["value"].clone()),
        (json!(-64), json!(64), json!(0), json!(0))
    );
    assert_eq!(control(&v, "pattern")["menu"], json!([{"value": 0, "name": "Ramps"}, {"value": 1, "name": "Grey"}]));

    // One change of each kind, read back from the camera.
    let r = put(&d, "cam0", &json!({"brightness": 40, "moving_bar": false, "pattern": "grey", "restart_count": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["applied"], true);
    assert_eq!(control(&v, "brightness")["value"], 40);
    assert_eq!(control(&v, "moving_bar")["value"], false);
    assert_eq!(control(&v, "pattern")["value"], 1);
    assert_eq!(control(&v, "restart_count")["value"], Value::Null);

    // Bad values and unknown controls are refused with what would have been taken.
    let r = put(&d, "cam0", &json!({"brightness": 65}));
    assert_eq!(r.error_code(400), "bad_value");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("\"brightness\"") && msg.contains("from -64 to 64") && msg.contains("65"), "{msg}");
    let r = put(&d, "cam0", &json!({"focus_absolute": 1}));
    assert_eq!(r.error_code(400), "bad_value");
    assert!(r.text().contains("focus_absolute") && r.text().contains("brightness, moving_bar"), "{}", r.text());
    assert_eq!(put(&d, "cam0", &json!({"pattern": "Stripes"})).error_code(400), "bad_value");
    assert_eq!(put(&d, "cam0", &json!({"moving_bar": 2})).error_code(400), "bad_value");
    let r = request(d.addr, "PUT", "/api/cameras/cam0/controls", &[], b"{brightness: 1");
    assert_eq!(r.error_code(400), "bad_json");
    assert_eq!(request(d.addr, "PUT", "/api/cameras/nope/controls", &[], b"{}").error_code(404), "not_found");
    let r = request(d.addr, "DELETE", "/api/cameras/cam0/controls", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, PUT")));
    assert_eq!(controls(&d, "cam0")["controls"][0]["value"], 40, "a refused change changes nothing");

    // Kept, and written by the store thread (buttons are actions, not values; the refused
    // changes above are nowhere).
    let want = json!({"version": 1, "values": {"brightness": 40, "moving_bar": 0, "pattern": 1}});
    wait_saved(storage.path(), "cam0", &want);

    // While stopped, a change is kept for the next open.
    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    d.wait_state("cam0", "STOPPED", 10 * SEC);
    let deadline = Instant::now() + 5 * SEC;
    while controls(&d, "cam0")["open"] != false {
        assert!(Instant::now() < deadline, "the camera's close is published");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = put(&d, "cam0", &json!({"brightness": -20}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["applied"].clone(), control(&r.json(), "brightness")["value"].clone()),
        (json!(false), json!(-20))
    );
    d.terminate(10 * SEC).expect("exits");

    // A restart reads the file and applies it at the open.
    let d = start_with("ctl-b", storage.path(), cam);
    assert_eq!(d.post("/api/cameras/cam0/start", "").status, 202);
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let v = controls(&d, "cam0");
    assert_eq!(
        (
            control(&v, "brightness")["value"].clone(),
            control(&v, "moving_bar")["value"].clone(),
            control(&v, "pattern")["value"].clone()
        ),
        (json!(-20), json!(false), json!(1)),
        "{v}"
    );
}

#[test]
fn values_survive_a_recovery_and_changes_are_rate_limited() {
    let storage = temp_dir("ctl-rec-store");
    // The camera stalls after 30 frames and heals on its first reopen: one recovery.
    let cam = synthetic(
        "cam0",
        json!({"source": {"fault": {"stall_after_frames": 30, "recover_after_reopens": 1}},
               "watchdog": {"stall_timeout_ms": 600, "backoff_initial_ms": 100}}),
    );
    let d = start_with("ctl-rec", storage.path(), cam);
    d.wait_job("cam0", 10 * SEC, |j| j["frames_captured"].as_u64() >= Some(1));
    let r = put(&d, "cam0", &json!({"brightness": 33}));
    assert_eq!(r.status, 200, "{}", r.text());
    let job = d.wait_job("cam0", 15 * SEC, |j| j["recoveries"].as_u64() >= Some(1) && j["state"] == "RUNNING");
    assert_eq!(job["recoveries"], 1, "{job}");
    let v = controls(&d, "cam0");
    assert_eq!((v["open"].clone(), control(&v, "brightness")["value"].clone()), (json!(true), json!(33)), "{v}");

    // A client in a loop: a burst of five, then refusals with Retry-After, all counted.
    let mut codes = Vec::new();
    for i in 0..12 {
        let r = put(&d, "cam0", &json!({"brightness": i}));
        if r.status == 503 {
            assert_eq!(r.header("retry-after"), Some("1"));
            assert!(r.text().contains("at most 5 control changes a second"), "{}", r.text());
        }
        codes.push(r.status);
    }
    let refused = codes.iter().filter(|&&c| c == 503).count();
    assert!(codes[..5].iter().all(|&c| c == 200) && refused >= 5, "{codes:?}");
    let counts = &d.camera("cam0")["controls"];
    assert_eq!(counts["refused_busy"], refused, "{counts}");
    let metrics = d.get("/metrics").text();
    assert!(
        metrics.lines().any(|l| l == format!("camjobd_controls_refused_busy_total{{camera=\"cam0\"}} {refused}")),
        "{metrics}"
    );
}

/// The stand-in rpicam-vid in a bin directory on PATH (see libcamera.rs).
fn rpicam_env(dir: &Path) -> (String, String) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rpicam-vid"), bin.join("rpicam-vid"))
        .unwrap();
    (format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()), dir.join("args").display().to_string())
}

#[test]
fn a_libcamera_change_restarts_rpicam_vid_with_the_options_and_is_not_a_failure() {
    if std::process::Command::new("ffmpeg").arg("-version").output().is_err() {
        assert!(std::env::var_os("CAMJOBD_REQUIRE_CLIENTS").is_none(), "ffmpeg is required here but not installed");
        eprintln!("SKIPPED: ffmpeg is not installed");
        return;
    }
    let dir = temp_dir("ctl-lc");
    let (path, args) = rpicam_env(dir.path());
    let cam = json!({"name": "csi", "source": {"kind": "libcamera", "width": 320, "height": 240, "fps": 10},
                     "snapshot_interval_ms": 500, "watchdog": {"stall_timeout_ms": 4000, "max_recoveries": 0}});
    let cfg = config(&dir, json!([cam]), json!({}));
    let storage = dir.path().join("data");
    // This camera lacks a vertical flip: rpicam-vid exits when asked for one.
    let env = [("PATH", path.as_str()), ("FAKE_RPICAM_ARGS", args.as_str()), ("FAKE_RPICAM_REFUSE", "--vflip")];
    let d = Daemon::builder(dir, &cfg).envs(&env).start();
    d.wait_job("csi", 10 * SEC, |j| j["state"] == "RUNNING" && j["frames_captured"].as_u64() >= Some(3));
    let v = controls(&d, "csi");
    let lens = control(&v, "lens_position");
    assert_eq!(
        (lens["type"].clone(), lens["unit"].clone(), lens["inactive"].clone()),
        (json!("int"), json!("1/100 dioptre"), json!(true))
    );
    assert_eq!(control(&v, "autofocus_mode")["menu"][3], json!({"value": 3, "name": "continuous"}));

    let r = put(
        &d,
        "csi",
        &json!({"autofocus_mode": "manual", "lens_position": 250, "brightness": 25, "horizontal_flip": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(control(&r.json(), "lens_position")["inactive"], false);
    // The new rpicam-vid writes its arguments once it runs.
    let want = "--autofocus-mode manual --lens-position 2.5 --brightness 0.25 --hflip";
    let deadline = Instant::now() + 5 * SEC;
    loop {
        let got = std::fs::read_to_string(&args).unwrap_or_default().lines().collect::<Vec<_>>().join(" ");
        if got.ends_with(want) {
            break;
        }
        assert!(Instant::now() < deadline, "rpicam-vid was not restarted with {want}: {got}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The restart is a gap, not a failure: frames go on, nothing recovered or failed.
    let before = d.camera("csi")["job"]["frames_captured"].as_u64().unwrap();
    let job = d.wait_job("csi", 10 * SEC, |j| j["frames_captured"].as_u64() >= Some(before + 5));
    assert_eq!(
        (job["state"].clone(), job["recoveries"].clone(), job["errors_total"].clone()),
        (json!("RUNNING"), json!(0), json!(0)),
        "{job}"
    );
    assert_eq!(d.camera("csi")["controls"]["restarts"], 1);

    // A value rpicam-vid refuses at its start: 400 with its reason, the previous values back,
    // nothing kept, and no recovery.
    let r = put(&d, "csi", &json!({"vertical_flip": true}));
    assert_eq!(r.error_code(400), "bad_value");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("--vflip is not supported") && msg.contains("previous values are back"), "{msg}");
    let v = controls(&d, "csi");
    assert_eq!(
        (control(&v, "vertical_flip")["value"].clone(), control(&v, "horizontal_flip")["value"].clone()),
        (json!(false), json!(true))
    );
    let before = d.camera("csi")["job"]["frames_captured"].as_u64().unwrap();
    let job = d.wait_job("csi", 10 * SEC, |j| j["frames_captured"].as_u64() >= Some(before + 5));
    assert_eq!((job["state"].clone(), job["recoveries"].clone()), (json!("RUNNING"), json!(0)), "{job}");
    let counts = d.camera("csi")["controls"].clone();
    assert_eq!((counts["restarts"].clone(), counts["failed"].clone()), (json!(2), json!(1)), "{counts}");
    let want = json!({"version": 1, "values": {"autofocus_mode": 1, "brightness": 25, "horizontal_flip": 1, "lens_position": 250}});
    wait_saved(&storage, "csi", &want);
}

#[test]
fn a_source_without_controls_says_so() {
    let cmd = json!(["sh", "-c", "sleep 30"]);
    let cam = json!({"name": "p", "source": {"kind": "pipe", "command": cmd}, "watchdog": {"stall_timeout_ms": 20000}});
    let d = Daemon::start("ctl-pipe", json!([cam]), json!({}));
    let deadline = Instant::now() + 10 * SEC;
    loop {
        let r = put(&d, "p", &json!({"brightness": 1}));
        assert_eq!(r.error_code(409), "conflict");
        if r.text().contains("offers no controls") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}
