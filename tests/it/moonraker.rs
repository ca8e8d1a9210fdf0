//! Registration with a real Moonraker (`POST /server/webcams/item`): Moonraker 0.11.0 from
//! PyPI, run by each test without Klipper on a free loopback port, and camjobd as the real
//! binary. What Mainsail would show is read back from Moonraker's `GET /server/webcams/list`.
//!
//! Moonraker runs under `$CAMJOBD_MOONRAKER_PYTHON` (scripts/test.sh sets it), else the
//! repository's `target/moonraker-venv/bin/python`. Without it these tests fail and say how to
//! make it: a registration that is never tried against Moonraker is not tested.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{self, config, request, synthetic, temp_dir, Daemon, TempDir};
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

/// The Python whose venv has Moonraker 0.11.0; a failure that says how to make it otherwise.
fn moonraker_python() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let py = std::env::var_os("CAMJOBD_MOONRAKER_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moonraker-venv/bin/python"));
        let probe = "import importlib.metadata as m, moonraker; print(m.version('moonraker'))";
        match Command::new(&py).args(["-c", probe]).stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0.11.0" => Ok(py),
            Ok(o) => Err(format!(
                "{} has no Moonraker 0.11.0: {}{}",
                py.display(),
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("{}: {e}", py.display())),
        }
    });
    match found {
        Ok(py) => py.clone(),
        Err(why) => panic!(
            "Moonraker is required here but missing ({why}): run scripts/test.sh, or make its venv alone with `. scripts/lib.sh; moonraker_python`"
        ),
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Moonraker of our own: its data (config, database) under `dir`.
struct Moonraker {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// Its `trusted_clients`.
    trusted: String,
    /// Sent as `X-Api-Key` by the test's own requests, once known.
    key: Option<String>,
}

impl Moonraker {
    fn start(dir: &Path, port: u16, trusted: &str) -> Moonraker {
        let mut m = Moonraker { child: None, dir: dir.to_path_buf(), port, trusted: trusted.into(), key: None };
        m.launch();
        m
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it and waits (at most 20 s) until it answers HTTP.
    fn launch(&mut self) {
        let data = self.dir.join("data");
        std::fs::create_dir_all(data.join("config")).unwrap();
        let conf = format!(
            "[server]\nhost: 127.0.0.1\nport: {}\nklippy_uds_address: {}\n\n[machine]\nprovider: none\n\n[authorization]\ntrusted_clients:\n  {}\n",
            self.port,
            self.dir.join("no-klipper/klippy.sock").display(),
            self.trusted
        );
        std::fs::write(data.join("config/moonraker.conf"), conf).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("moonraker.log")).unwrap();
        let child = Command::new(moonraker_python())
            .args(["-m", "moonraker", "-n", "-d"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start Moonraker");
        self.child = Some(child);
        let deadline = Instant::now() + 20 * SEC;
        while std::net::TcpStream::connect_timeout(&self.addr(), SEC).is_err() {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(exited.is_none() && Instant::now() < deadline, "Moonraker did not come up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("moonraker.log")).unwrap_or_default()
    }

    /// SIGTERM, and its exit (SIGKILL after 5 s).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        common::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + 5 * SEC;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Stopped, its database deleted (all webcams made through the API go), started again.
    fn restart_wiped(&mut self) {
        self.stop();
        std::fs::remove_dir_all(self.dir.join("data/database")).unwrap();
        self.launch();
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(k) = &self.key {
            headers.push(("X-Api-Key", k.as_str()));
        }
        let r = request(self.addr(), method, path, &headers, body.as_bytes());
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()["result"].clone()
    }

    fn webcams(&self) -> Vec<Value> {
        self.call("GET", "/server/webcams/list", None)["webcams"].as_array().unwrap().clone()
    }

    /// Polls the list until `pred` holds; the list then.
    fn wait_webcams(&self, within: Duration, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let list = self.webcams();
            if pred(&list) {
                return list;
            }
            assert!(Instant::now() < deadline, "{what} not within {within:?}; webcams: {list:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Moonraker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The webcam named `name`, if listed.
fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|w| w["name"] == name)
}

/// A small synthetic camera.
fn cam(name: &str, extra: Value) -> Value {
    let mut c = synthetic(name, json!({"source": {"kind": "synthetic", "width": 320, "height": 240, "fps": 12}}));
    common::merge(&mut c, extra);
    c
}

/// A config of `cameras` with a `moonraker` section.
fn with_moonraker(dir: &TempDir, cameras: Value, moonraker: Value) -> Value {
    let mut cfg = config(dir, cameras, json!({}));
    cfg["moonraker"] = moonraker;
    cfg
}

fn status(d: &Daemon) -> Value {
    d.get("/api/status").json()["moonraker"].clone()
}

fn wait_status(d: &Daemon, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let m = status(d);
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} not within {within:?}; status {m:#}\nstderr:\n{}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every number (or null) `/api/status.moonraker` reports has its family in `/metrics`, as
/// for the other sections (`src/http/routes/tests.rs`).
fn check_metrics(d: &Daemon) {
    let m = status(d);
    let metrics = d.get("/metrics").text();
    for (key, v) in m.as_object().unwrap() {
        if v.is_string() || v.is_array() || v.is_object() || key == "last_error" {
            continue;
        }
        let names = match key.as_str() {
            "retry_in_s" => vec!["moonraker_retry_in_seconds".to_string()],
            k => vec![format!("moonraker_{k}"), format!("moonraker_{k}_total")],
        };
        assert!(names.iter().any(|n| metrics.contains(&format!("# TYPE camjobd_{n} "))), "no metric for {key}");
    }
    for w in m["webcams"].as_array().unwrap() {
        let line = format!(
            "camjobd_moonraker_webcam_registered{{camera=\"{}\"}} {}",
            w["camera"].as_str().unwrap(),
            u8::from(w["registered"] == true)
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains("\ncamjobd_moonraker 1\n"), "on:\n{metrics}");
    let state = format!("camjobd_moonraker_state{{state=\"{}\"}} 1", m["state"].as_str().unwrap());
    assert!(metrics.contains(&state), "{state} not in\n{metrics}");
}

/// Starts camjobd on `cameras` registering with `moonraker`; the time it was started at.
fn start(tag: &str, cameras: Value, moonraker: Value) -> (Daemon, Instant) {
    let dir = temp_dir(tag);
    let cfg = with_moonraker(&dir, cameras, moonraker);
    let at = Instant::now();
    (Daemon::builder(dir, &cfg).start(), at)
}

#[test]
fn webcams_are_registered_kept_through_a_wiped_restart_and_removed_with_their_camera() {
    let dir = temp_dir("moonraker-main");
    let mut mr = Moonraker::start(dir.path(), free_port(), "127.0.0.1");
    // Made by hand in a UI, under the name of one of camjobd's cameras.
    let door = json!({"name": "door", "service": "mjpegstreamer", "stream_url": "http://door.lan/stream"});
    mr.call("POST", "/server/webcams/item", Some(door));
    let cams = json!([
        cam("cam0", json!({})),
        cam("cam1", json!({"moonraker": {"name": "Bed cam", "service": "mjpegstreamer"}})),
        cam("door", json!({})),
        cam("quiet", json!({"moonraker": false})),
    ]);
    let (d, started) = start("moonraker-d1", cams, json!({"url": mr.url()}));
    let list =
        mr.wait_webcams(10 * SEC, "cam0 and Bed cam", |l| named(l, "cam0").is_some() && named(l, "Bed cam").is_some());
    let registered_in = started.elapsed();
    let base = format!("http://{}", d.addr);
    let c0 = named(&list, "cam0").unwrap();
    assert_eq!(c0["service"], "mjpegstreamer-adaptive", "{c0}");
    assert_eq!(c0["stream_url"], format!("{base}/api/cameras/cam0/stream.mjpeg"));
    assert_eq!(c0["snapshot_url"], format!("{base}/snapshot?camera=cam0"));
    assert_eq!((c0["target_fps"].as_u64(), c0["aspect_ratio"].as_str()), (Some(12), Some("4:3")));
    assert!(c0["extra_data"]["camjobd"].as_str().is_some_and(|i| !i.is_empty()), "{c0}");
    let bed = named(&list, "Bed cam").unwrap();
    assert_eq!(
        (bed["service"].as_str(), bed["stream_url"].as_str()),
        (Some("mjpegstreamer"), Some(&*format!("{base}/api/cameras/cam1/stream.mjpeg")))
    );
    assert!(named(&list, "quiet").is_none(), "moonraker: false stays out");
    assert_eq!(
        named(&list, "door").unwrap()["stream_url"],
        "http://door.lan/stream",
        "the hand-made one is left alone"
    );
    // What Mainsail's <img> loads (with its cache-buster) is a JPEG from camjobd; the stream is MJPEG.
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let snapshot = c0["snapshot_url"].as_str().unwrap().strip_prefix(&base).unwrap().to_string();
    let r = d.get(&format!("{snapshot}&timestamp=1700000000000"));
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/jpeg")));
    assert!(r.body.starts_with(&[0xFF, 0xD8]) && r.body.ends_with(&[0xFF, 0xD9]), "a whole JPEG");
    let stream = c0["stream_url"].as_str().unwrap().strip_prefix(&base).unwrap();
    let r = request(d.addr, "HEAD", stream, &[], b"");
    assert!(r.status == 200 && r.header("content-type").is_some_and(|t| t.starts_with("multipart/x-mixed-replace")));
    let m = wait_status(&d, 5 * SEC, "synced", |m| m["state"] == "synced");
    assert_eq!((m["url"].as_str(), m["base_url"].as_str()), (Some(&*mr.url()), Some(&*base)));
    let webcams = m["webcams"].as_array().unwrap();
    let by_camera = |c: &str| webcams.iter().find(|w| w["camera"] == c).unwrap().clone();
    assert_eq!(
        (by_camera("cam1")["name"].as_str(), by_camera("cam1")["registered"].as_bool()),
        (Some("Bed cam"), Some(true))
    );
    let conflict = by_camera("door");
    assert_eq!((conflict["registered"].as_bool(), conflict["conflict"].as_bool()), (Some(false), Some(true)));
    assert!(conflict["reason"].as_str().unwrap().contains("made by hand"), "{conflict}");
    assert_eq!(webcams.len(), 3, "quiet is not listed: {m}");
    check_metrics(&d);
    let estimate = d.get("/api/status").json()["budget"]["estimate"]["threads"].as_u64().unwrap();
    assert_eq!(estimate as usize, d.threads(), "the budget counts the moonraker thread");
    assert!(d.threads_named("moonraker"));
    let threads = d.threads();

    // Moonraker restarts without its database (every webcam gone): camjobd sees the connection
    // end and registers again; its "door" now, as the hand-made one went with the database.
    let wiped = Instant::now();
    mr.restart_wiped();
    let list = mr.wait_webcams(20 * SEC, "the webcams back", |l| {
        ["cam0", "Bed cam", "door"].iter().all(|n| named(l, n).is_some())
    });
    let back_in = wiped.elapsed();
    assert_eq!(named(&list, "door").unwrap()["stream_url"], format!("{base}/api/cameras/door/stream.mjpeg"));
    wait_status(&d, 5 * SEC, "door registered", |m| m["webcams"][2]["registered"] == true);
    let rounds = status(&d)["attempts"].as_u64().unwrap();
    drop(d);

    // camjobd again, on another port and with cam0 alone: cam1's and door's webcams go, cam0's
    // follows the new port, and one made by hand meanwhile stays.
    mr.call("POST", "/server/webcams/item", Some(json!({"name": "hand", "stream_url": "http://x/y"})));
    let (d, _) = start("moonraker-d2", json!([cam("cam0", json!({}))]), json!({"url": mr.url()}));
    let moved = format!("http://{}/api/cameras/cam0/stream.mjpeg", d.addr);
    let list = mr.wait_webcams(10 * SEC, "cam1's and door's webcams removed", |l| {
        named(l, "Bed cam").is_none()
            && named(l, "door").is_none()
            && named(l, "cam0").is_some_and(|c| c["stream_url"] == moved)
    });
    assert_eq!(named(&list, "hand").unwrap()["stream_url"], "http://x/y");
    assert_eq!(list.len(), 2, "{list:#?}");
    let m = wait_status(&d, 5 * SEC, "synced", |m| m["state"] == "synced");
    assert_eq!(m["removed"], 2, "{m}");
    println!(
        "figures: registered {:.2} s after camjobd's start, {:.2} s after Moonraker's wiped restart (the restart itself included); {rounds} rounds meanwhile; {threads} threads with 4 cameras",
        registered_in.as_secs_f64(),
        back_in.as_secs_f64()
    );
}

#[test]
fn a_moonraker_down_at_start_costs_nothing_and_is_registered_with_when_it_comes_up() {
    let port = free_port();
    let (d, _) =
        start("moonraker-late", json!([cam("cam0", json!({}))]), json!({"url": format!("http://127.0.0.1:{port}")}));
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    assert_eq!(d.get("/healthz").status, 200);
    let m = wait_status(&d, 5 * SEC, "retrying", |m| m["state"] == "retrying");
    let why = m["last_error"].as_str().unwrap();
    assert!(why.contains("cannot connect to Moonraker") && why.contains("is Moonraker running"), "{why}");
    assert!(m["retry_in_s"].as_f64().is_some_and(|s| s > 0.0 && s <= 60.0), "{m}");
    assert!(m["failures"].as_u64().unwrap() >= 1 && m["webcams"][0]["registered"] == false, "{m}");
    check_metrics(&d);
    // Capture and HTTP went on meanwhile.
    let frames = d.camera("cam0")["job"]["frames_captured"].as_u64().unwrap();
    assert!(frames > 0);
    let dir = temp_dir("moonraker-late-mr");
    let up = Instant::now();
    let mr = Moonraker::start(dir.path(), port, "127.0.0.1");
    mr.wait_webcams(40 * SEC, "cam0 registered", |l| named(l, "cam0").is_some());
    let after = up.elapsed();
    let m = wait_status(&d, 5 * SEC, "synced", |m| m["state"] == "synced");
    assert_eq!((m["last_error"].is_null(), m["retry_in_s"].is_null()), (true, true), "{m}");
    println!(
        "figures: registered {:.2} s after Moonraker was started ({} failed rounds before)",
        after.as_secs_f64(),
        m["failures"]
    );
}

/// `GET /access/api_key` from 127.0.0.2, the one address this test's Moonraker trusts.
fn api_key(mr: &Moonraker) -> String {
    use std::io::Write;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
    s.connect_timeout(&mr.addr().into(), 5 * SEC).unwrap();
    let mut s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    write!(s, "GET /access/api_key HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", mr.addr()).unwrap();
    let r = common::read_response(&mut s, false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["result"].as_str().unwrap().to_string()
}

#[test]
fn an_api_key_from_a_file_is_sent_and_its_lack_is_named() {
    let dir = temp_dir("moonraker-key");
    let mut mr = Moonraker::start(dir.path(), free_port(), "127.0.0.2");
    let key = api_key(&mr);
    mr.key = Some(key.clone());
    let file = dir.path().join("moonraker-api-key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let (with, _) =
        start("moonraker-key-d1", json!([cam("cam0", json!({}))]), json!({"url": mr.url(), "api_key_file": file}));
    let (without, _) = start("moonraker-key-d2", json!([cam("cam9", json!({}))]), json!({"url": mr.url()}));
    let list = mr.wait_webcams(10 * SEC, "cam0 registered with the key", |l| named(l, "cam0").is_some());
    assert!(named(&list, "cam9").is_none());
    wait_status(&with, 5 * SEC, "synced", |m| m["state"] == "synced");
    let m = wait_status(&without, 10 * SEC, "refused", |m| m["last_error"].is_string());
    let why = m["last_error"].as_str().unwrap();
    assert!(why.contains("401") && why.contains("moonraker.api_key_file"), "{why}");
    assert_eq!(m["state"], "retrying");
}

#[test]
fn bad_moonraker_settings_stop_the_start_naming_the_key() {
    let dir = temp_dir("moonraker-cfg");
    let plain = json!([cam("cam0", json!({}))]);
    let section = json!({"url": "http://127.0.0.1:7125"});
    for (m, cams, key, says) in [
        (json!({"url": "https://p:7125"}), &plain, "moonraker.url", "https is not supported"),
        (json!({"url": "http://p:7125/server"}), &plain, "moonraker.url", "no path"),
        (json!({"service": "hlsstream"}), &plain, "moonraker.service", "is not a service"),
        (json!({"base_url": "printer.local:8080"}), &plain, "moonraker.base_url", "http://"),
        (json!({"api_key_file": dir.path().join("missing")}), &plain, "moonraker.api_key_file", "cannot read"),
        (json!({"instance": ""}), &plain, "moonraker.instance", "1 to 64"),
        (json!({"uri": "x"}), &plain, "moonraker", "unknown field `uri`"),
        (
            section.clone(),
            &json!([cam("cam0", json!({"moonraker": {"nam": "x"}}))]),
            "cameras[0].moonraker",
            "unknown field `nam`",
        ),
        (section.clone(), &json!([cam("cam0", json!({"moonraker": "no"}))]), "cameras[0].moonraker", "invalid type"),
        (
            section.clone(),
            &json!([cam("a", json!({})), cam("b", json!({"moonraker": {"name": "a"}}))]),
            "cameras[1].moonraker.name",
            "registered by an earlier camera",
        ),
        (json!({"service": "webrtc-mediamtx"}), &plain, "cameras[0].moonraker.service", "needs this camera's video"),
        (
            Value::Null,
            &json!([cam("cam0", json!({"moonraker": {"name": "x"}}))]),
            "cameras[0].moonraker",
            "no top-level moonraker",
        ),
    ] {
        let cfg = with_moonraker(&dir, cams.clone(), m.clone());
        let file = dir.path().join("c.json");
        std::fs::write(&file, cfg.to_string()).unwrap();
        // Refused by --check-config and by the start alike.
        for check in [true, false] {
            let mut cmd = Command::new(common::bin());
            cmd.arg("--config").arg(&file);
            if check {
                cmd.arg("--check-config");
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{m} {cams}: {err}");
            assert!(err.contains(key) && err.contains(says), "{m} {cams}: {err}");
        }
    }
}

#[test]
fn a_moonraker_that_never_answers_costs_a_timeout_and_never_holds_the_stop() {
    // The kernel accepts connections into the backlog; nobody ever reads or answers them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (mut d, _) = start("moonraker-silent", json!([cam("cam0", json!({}))]), json!({"url": url}));
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let m = wait_status(&d, 10 * SEC, "a timeout", |m| m["last_error"].is_string());
    let why = m["last_error"].as_str().unwrap();
    assert!(why.contains("GET /server/webcams/list: Moonraker did not answer within 3 s"), "{why}");
    assert_eq!(m["state"], "retrying");
    // While the next exchange waits on the silent Moonraker, SIGTERM stops camjobd at once.
    wait_status(&d, 5 * SEC, "the second round", |m| m["attempts"].as_u64() >= Some(2));
    let t = Instant::now();
    let code = d.terminate(5 * SEC).and_then(|s| s.code());
    assert_eq!(code, Some(0), "{}", d.stderr());
    assert!(t.elapsed() < 2 * SEC, "the stop took {:?}", t.elapsed());
    println!("figures: stopped in {:.3} s with an exchange under way", t.elapsed().as_secs_f64());
}
