//! Export jobs through the real binary and its HTTP API: archives byte-identical to the store,
//! progress that only goes up, a full queue that refuses without losing anything, cancelling
//! queued and running exports, kill -9 in the middle and the restart that reaps it, a panic
//! inside an export, bad requests, and the frames a 30 fps job loses while an export runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

fn delete(d: &Daemon, path: &str) -> Resp {
    request(d.addr, "DELETE", path, &[], b"")
}

/// Starts a daemon whose camera stores snapshots, with `exports` config, and waits until at
/// least `files` are on disk; then stops the job so the set no longer changes.
fn with_snapshots(tag: &str, files: u64, exports: Value) -> Daemon {
    with_snapshots_env(tag, files, exports, &[])
}

/// [`with_snapshots`] with extra environment variables for camjobd (test hooks).
fn with_snapshots_env(tag: &str, files: u64, exports: Value, env: &[(&str, &str)]) -> Daemon {
    let dir = temp_dir(tag);
    let cam = synthetic("cam0", json!({"snapshot_interval_ms": 20}));
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["exports"] = exports;
    let d = Daemon::builder(dir, &cfg).envs(env).start();
    let deadline = Instant::now() + 30 * SEC;
    while d.camera("cam0")["store"]["written"].as_u64().unwrap() < files {
        assert!(Instant::now() < deadline, "fewer than {files} snapshots stored: {}", d.camera("cam0")["store"]);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    d.wait_state("cam0", "STOPPED", 5 * SEC);
    d
}

fn submit(d: &Daemon, body: Value) -> Resp {
    d.post("/api/exports", &body.to_string())
}

fn export(d: &Daemon, id: u64) -> Value {
    let r = d.get(&format!("/api/exports/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Polls an export until `pred` holds; returns every percent seen on the way.
fn wait_export(d: &Daemon, id: u64, within: Duration, pred: impl Fn(&Value) -> bool) -> (Value, Vec<u64>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let v = export(d, id);
        seen.push(v["percent"].as_u64().unwrap());
        if pred(&v) {
            return (v, seen);
        }
        assert!(Instant::now() < deadline, "export {id} never got there: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exports_dir(d: &Daemon) -> PathBuf {
    d.dir.path().join("data").join("exports")
}

fn files_with(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// The entries of a ustar archive: (name, contents).
fn untar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let name = String::from_utf8(h[..100].iter().take_while(|&&b| b != 0).copied().collect()).unwrap();
        let size = std::str::from_utf8(&h[124..135]).unwrap();
        let size = usize::from_str_radix(size, 8).unwrap();
        let mut blank = h.to_vec();
        blank[148..156].fill(b' ');
        let sum: u32 = blank.iter().map(|&b| u32::from(b)).sum();
        // Octal digits, ended by NUL and/or space (POSIX leaves the padding to the writer).
        let stated = std::str::from_utf8(&h[148..156]).unwrap().trim_matches(['\0', ' ']);
        assert_eq!(u32::from_str_radix(stated, 8).unwrap(), sum, "checksum");
        at += 512;
        out.push((name, bytes[at..at + size].to_vec()));
        at += size.div_ceil(512) * 512;
    }
    assert!(bytes[at..].len() >= 1024 && bytes[at..].iter().all(|&b| b == 0), "two zero blocks end the archive");
    out
}

#[test]
fn archive_is_byte_identical_to_the_store_and_progress_only_goes_up() {
    let d = with_snapshots("export-archive", 120, json!({"max_files_per_s": 50}));
    let r = submit(&d, json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"}));
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    let id = v["id"].as_u64().unwrap();
    assert_eq!(v["state"], "QUEUED");
    let (done, percents) = wait_export(&d, id, 30 * SEC, |v| v["state"] != "QUEUED" && v["state"] != "RUNNING");
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["percent"], 100);
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress went down: {percents:?}");
    assert!(percents.iter().any(|&p| p > 0 && p < 100), "no progress was seen between 0 and 100: {percents:?}");
    let snapshots = done["snapshots"].as_u64().unwrap();
    assert!(snapshots >= 120, "{done}");
    assert_eq!(done["done"].as_u64(), Some(snapshots));

    let r = d.get(done["download"].as_str().unwrap());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-tar"));
    assert!(r.header("content-disposition").unwrap().contains(done["filename"].as_str().unwrap()));
    assert_eq!(r.body.len() as u64, done["bytes"].as_u64().unwrap());
    let entries = untar(&r.body);
    let (manifest, files) = entries.split_last().unwrap();
    assert_eq!(manifest.0, "manifest.json");
    let manifest: Value = serde_json::from_slice(&manifest.1).unwrap();
    assert_eq!(manifest["count"].as_u64(), Some(snapshots));
    assert_eq!(manifest["missing"], 0);
    assert_eq!(files.len() as u64, snapshots);
    let data = d.dir.path().join("data");
    for ((name, bytes), listed) in files.iter().zip(manifest["files"].as_array().unwrap()) {
        assert_eq!(listed["name"], name.as_str());
        assert_eq!(listed["bytes"].as_u64(), Some(bytes.len() as u64));
        let stored = std::fs::read(data.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(stored == *bytes, "{name} differs from the stored snapshot");
    }
    // HEAD gives the length without the body.
    let h = request(d.addr, "HEAD", done["download"].as_str().unwrap(), &[], b"");
    assert_eq!((h.status, h.header("content-length")), (200, Some(r.body.len().to_string().as_str())));
    // Nothing internal leaks: no paths in the API.
    let list = d.get("/api/exports").text();
    assert!(!list.contains(data.to_str().unwrap()), "{list}");
    println!("archive: {snapshots} snapshots, {} bytes, percents seen {percents:?}", r.body.len());
}

#[test]
fn a_full_queue_refuses_without_losing_anything_and_exports_cancel() {
    let d = with_snapshots("export-queue", 40, json!({"max_queued": 2, "max_files_per_s": 10, "history": 3}));
    let body = json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"});
    let e1 = submit(&d, body.clone()).json()["id"].as_u64().unwrap();
    wait_export(&d, e1, 10 * SEC, |v| v["state"] == "RUNNING");
    let e2 = submit(&d, body.clone()).json()["id"].as_u64().unwrap();
    let e3 = submit(&d, body.clone()).json()["id"].as_u64().unwrap();
    let full = submit(&d, body.clone());
    assert_eq!(full.error_code(503), "queue_full");
    assert!(full.json()["error"]["message"].as_str().unwrap().contains("try again once current exports finish"));
    assert_eq!(full.header("retry-after"), Some("10"));
    let list = d.get("/api/exports").json();
    let ids: Vec<_> =
        list["active"].as_array().unwrap().iter().map(|v| (v["id"].as_u64().unwrap(), v["state"].clone())).collect();
    assert_eq!(ids, [(e1, json!("RUNNING")), (e2, json!("QUEUED")), (e3, json!("QUEUED"))], "{list}");
    assert_eq!((list["queued"].as_u64(), list["max_queued"].as_u64()), (Some(2), Some(2)));

    // Cancel the queued one: at once. Then the running one: within a file.
    let r = delete(&d, &format!("/api/exports/{e2}"));
    assert_eq!((r.status, r.json()["state"].clone()), (200, json!("CANCELLED")), "{}", r.text());
    let r = delete(&d, &format!("/api/exports/{e1}"));
    assert_eq!(r.status, 202, "{}", r.text());
    let (v, _) = wait_export(&d, e1, 5 * SEC, |v| v["state"] != "RUNNING");
    assert_eq!(v["state"], "CANCELLED", "{v}");
    // (The next export may already be writing its own.)
    assert!(!exports_dir(&d).join(format!("{e1}.tar.part")).exists(), "a cancelled export left its partial file");
    assert_eq!(d.get(&format!("/api/exports/{e1}/file")).error_code(409), "conflict");
    // The queue has room again, and the one left in it runs to the end.
    let (v, _) = wait_export(&d, e3, 20 * SEC, |v| v["state"] == "SUCCEEDED");
    assert_eq!(v["percent"], 100);
    let metrics = d.get("/metrics").text();
    for line in ["camjobd_exports_rejected_total 1", "camjobd_exports_cancelled_total 2", "camjobd_exports_queued 0"] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?}");
    }
    // A finished export is deleted with its file.
    assert!(exports_dir(&d).join(format!("{e3}.tar")).exists());
    assert_eq!(delete(&d, &format!("/api/exports/{e3}")).status, 200);
    assert!(!exports_dir(&d).join(format!("{e3}.tar")).exists());
    assert_eq!(d.get(&format!("/api/exports/{e3}")).error_code(404), "not_found");
}

#[test]
fn kill_9_mid_export_leaves_no_partial_file_and_finished_exports_stay_listed() {
    let mut d = with_snapshots("export-crash", 60, json!({"max_files_per_s": 20}));
    let snaps = d.get("/api/cameras/cam0/snapshots?limit=500").json();
    let mut times: Vec<f64> =
        snaps["snapshots"].as_array().unwrap().iter().filter_map(|s| s["captured_at"].as_f64()).collect();
    times.sort_by(f64::total_cmp);
    // A short one that finishes, then a long one that is killed half way.
    let short = submit(&d, json!({"camera": "cam0", "from": times[0], "to": times[4], "kind": "archive"}));
    let short = short.json()["id"].as_u64().unwrap();
    let (finished, _) = wait_export(&d, short, 10 * SEC, |v| v["state"] == "SUCCEEDED");
    let tl = submit(&d, json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "timelapse", "fps": 5}));
    let long = tl.json()["id"].as_u64().unwrap();
    wait_export(&d, long, 10 * SEC, |v| v["state"] == "RUNNING" && v["percent"].as_u64() > Some(0));
    assert_eq!(files_with(&exports_dir(&d), ".part").len(), 1, "the running export writes a .part file");
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    let cfg: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    let d = Daemon::builder(dir, &cfg).start();
    assert!(files_with(&exports_dir(&d), ".part").is_empty(), "the partial file survived the restart");
    let list = d.get("/api/exports").json();
    assert_eq!(list["active"], json!([]), "{list}");
    let again = export(&d, short);
    assert_eq!(again["state"], "SUCCEEDED");
    assert_eq!(again["bytes"], finished["bytes"]);
    let file = d.get(&format!("/api/exports/{short}/file"));
    assert_eq!(file.body.len() as u64, finished["bytes"].as_u64().unwrap());
    let killed = export(&d, long);
    assert_eq!(killed["state"], "FAILED");
    assert!(killed["error"].as_str().unwrap().contains("stopped during this export"), "{killed}");
    // Ids go on after the restart.
    let next = submit(&d, json!({"camera": "cam0", "from": times[0], "to": times[2], "kind": "archive"}));
    assert!(next.json()["id"].as_u64().unwrap() > long, "{}", next.text());
}

#[test]
fn export_ids_never_come_back_after_a_damaged_counter_or_record() {
    let mut d = with_snapshots("export-ids", 5, json!({}));
    let body = json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"});
    let first = submit(&d, body.clone()).json()["id"].as_u64().unwrap();
    wait_export(&d, first, 10 * SEC, |v| v["state"] == "SUCCEEDED");
    assert!(d.terminate(2 * SEC).expect("exits").success());
    // Damage both traces of the id: the record and the counter.
    let exports = exports_dir(&d);
    std::fs::write(exports.join(format!("{first}.json")), "{torn").unwrap();
    std::fs::write(exports.join("next_id"), "\u{0}garbage").unwrap();
    let dir = std::mem::replace(&mut d.dir, temp_dir("unused"));
    let cfg: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    drop(d);
    let d = Daemon::builder(dir, &cfg).start();
    assert_eq!(d.get(&format!("/api/exports/{first}")).status, 404, "the damaged record is forgotten");
    let r = submit(&d, body);
    let next = r.json()["id"].as_u64().unwrap();
    // Past every id seen on disk, and far past it: ids already pruned left no trace.
    assert!(next > first + (1 << 20), "id {next} after {first}: {}", r.text());
}

#[test]
fn a_panic_inside_an_export_fails_it_and_the_worker_goes_on() {
    // A test hook of debug builds (the tests run one): every export panics at file 5.
    let d = with_snapshots_env("export-panic", 10, json!({}), &[("CAMJOBD_TEST_EXPORT_PANIC_AT_FILE", "5")]);
    let snaps = d.get("/api/cameras/cam0/snapshots?limit=500").json();
    let mut times: Vec<f64> =
        snaps["snapshots"].as_array().unwrap().iter().filter_map(|s| s["captured_at"].as_f64()).collect();
    times.sort_by(f64::total_cmp);
    let all = submit(&d, json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"}));
    let id = all.json()["id"].as_u64().unwrap();
    let (v, _) = wait_export(&d, id, 10 * SEC, |v| !matches!(v["state"].as_str(), Some("QUEUED" | "RUNNING")));
    assert_eq!(v["state"], "FAILED");
    assert!(v["error"].as_str().unwrap().contains("internal error"), "{v}");
    // Fewer than 5 files: the same worker finishes it.
    let few = submit(&d, json!({"camera": "cam0", "from": times[0], "to": times[3], "kind": "timelapse"}));
    let id = few.json()["id"].as_u64().unwrap();
    let (v, _) = wait_export(&d, id, 20 * SEC, |v| !matches!(v["state"].as_str(), Some("QUEUED" | "RUNNING")));
    assert_eq!(v["state"], "SUCCEEDED", "{v}");
    let gif = d.get(v["download"].as_str().unwrap());
    assert_eq!(gif.header("content-type"), Some("image/gif"));
    assert!(gif.body.starts_with(b"GIF89a") && gif.body.ends_with(b";"), "not a whole GIF");
    assert!(d.get("/metrics").text().lines().any(|l| l == "camjobd_exports_panics_total 1"));
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn bad_export_requests_get_clear_errors() {
    let d = with_snapshots("export-bad", 3, json!({}));
    let cases = [
        (json!({"camera": "cam0", "from": 100, "to": 100, "kind": "archive"}), "bad_range"),
        (json!({"camera": "cam0", "from": 200, "to": 100, "kind": "archive"}), "bad_range"),
        (json!({"camera": "cam0", "from": 100, "to": 200, "kind": "archive"}), "empty_range"),
        (json!({"camera": "nope", "from": 0, "to": "2100-01-01", "kind": "archive"}), "bad_value"),
        (json!({"camera": "cam0", "from": "yesterday", "to": "2100-01-01", "kind": "archive"}), "bad_value"),
        (json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "video"}), "bad_json"),
        (json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive", "fps": 5}), "bad_value"),
        (json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "timelapse", "fps": 500}), "bad_value"),
        (json!({"camera": "cam0", "from": 0, "kind": "archive"}), "bad_json"),
        (json!({"camera": "cam0", "from": 0, "to": 1, "kind": "archive", "path": "/etc"}), "bad_json"),
    ];
    for (body, code) in cases {
        let r = submit(&d, body.clone());
        assert_eq!(r.error_code(400), code, "{body}: {}", r.text());
        assert!(!r.text().contains(d.dir.path().to_str().unwrap()), "a path leaked: {}", r.text());
    }
    assert_eq!(d.post("/api/exports", "{not json").error_code(400), "bad_json");
    assert_eq!(d.get("/api/exports/999").error_code(404), "not_found");
    assert_eq!(d.get("/api/exports/999/file").error_code(404), "not_found");
    assert_eq!(d.get("/api/exports/abc").error_code(404), "not_found");
    assert_eq!(d.get("/api/exports/1/../../etc").error_code(404), "not_found");
    assert_eq!(delete(&d, "/api/exports/999").error_code(404), "not_found");
    assert_eq!(request(d.addr, "PUT", "/api/exports", &[], b"").error_code(405), "method_not_allowed");
    assert_eq!(d.post("/api/exports/1/file", "").error_code(405), "method_not_allowed");
    assert_eq!(d.get("/api/exports").json()["active"], json!([]), "nothing was queued by a bad request");
}

#[test]
fn a_30_fps_job_loses_no_frame_while_an_export_runs() {
    // Snapshots at full size, so the timelapse decodes and quantises real work.
    let dir = temp_dir("export-fps");
    let cam =
        synthetic("cam0", json!({"source": {"width": 640, "height": 480, "fps": 30}, "snapshot_interval_ms": 100}));
    let cfg = config(&dir, json!([cam]), json!({}));
    let d = Daemon::builder(dir, &cfg).start();
    let deadline = Instant::now() + 30 * SEC;
    while d.camera("cam0")["store"]["written"].as_u64().unwrap() < 80 {
        assert!(Instant::now() < deadline, "no snapshots stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let j0 = d.camera("cam0")["job"].clone();
    let t0 = Instant::now();
    let r = submit(&d, json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "timelapse"}));
    let id = r.json()["id"].as_u64().unwrap();
    let (v, _) = wait_export(&d, id, 60 * SEC, |v| !matches!(v["state"].as_str(), Some("QUEUED" | "RUNNING")));
    let j1 = d.camera("cam0")["job"].clone();
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(v["state"], "SUCCEEDED", "{v}");
    let got = j1["frames_captured"].as_u64().unwrap() - j0["frames_captured"].as_u64().unwrap();
    let dropped = j1["frames_dropped"].as_u64().unwrap() - j0["frames_dropped"].as_u64().unwrap();
    println!(
        "export during capture: timelapse of {} frames in {elapsed:.1} s; capture {got} frames (expected {:.0}), dropped {dropped}",
        v["done"],
        30.0 * elapsed
    );
    assert_eq!(dropped, 0);
    assert!(got as f64 >= 30.0 * elapsed - 3.0, "capture lost frames: {got} in {elapsed:.1} s");
    assert_eq!(j1["state"], "RUNNING");
}

/// Bytes of export files on the disk: what the exports directory lists, plus files camjobd
/// still holds open there after they were deleted (a download in progress keeps them).
fn export_bytes_on_disk(d: &Daemon) -> u64 {
    let dir = exports_dir(d);
    let listed: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let deleted: u64 = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| {
                let t = t.to_string_lossy();
                t.starts_with(&*dir.to_string_lossy()) && t.ends_with(" (deleted)")
            })
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.len())
        .sum();
    listed + deleted
}

/// Opens a download and reads its head; the body is left to the caller.
fn open_download(d: &Daemon, path: &str, rcvbuf: Option<usize>) -> (std::net::TcpStream, usize) {
    use std::io::Write;
    let mut s = connect_with_rcvbuf(d.addr, rcvbuf);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let head = read_response(&mut s, true).unwrap();
    assert_eq!(head.status, 200, "{path}");
    (s, head.header("Content-Length").unwrap().parse().unwrap())
}

#[test]
fn slow_downloads_complete_and_deleted_exports_they_hold_stay_in_the_budget() {
    // Archives of about 700 KB under a 1 MiB budget: two do not fit together.
    let d = with_snapshots("export-slow", 330, json!({"max_bytes": 1 << 20, "history": 20}));
    let snaps = d.get("/api/cameras/cam0/snapshots?limit=1000").json();
    let mut times: Vec<f64> =
        snaps["snapshots"].as_array().unwrap().iter().filter_map(|s| s["captured_at"].as_f64()).collect();
    times.sort_by(f64::total_cmp);
    let archive = |i: usize| {
        let r =
            submit(&d, json!({"camera": "cam0", "from": times[i * 100], "to": times[i * 100 + 99], "kind": "archive"}));
        let id = r.json()["id"].as_u64().unwrap_or_else(|| panic!("{}", r.text()));
        let (v, _) = wait_export(&d, id, 30 * SEC, |v| !matches!(v["state"].as_str(), Some("QUEUED" | "RUNNING")));
        (id, v)
    };
    let (first, v) = archive(0);
    assert_eq!(v["state"], "SUCCEEDED", "{v}");
    let whole = d.get(&format!("/api/exports/{first}/file")).body;
    assert!(whole.len() > 600_000, "{} bytes", whole.len());

    // Two slow readers of the first export: one at 20 KB/s through a small receive buffer,
    // one as curl --limit-rate reads (bursts, then pauses).
    let path = format!("/api/exports/{first}/file");
    let (mut s, len) = open_download(&d, &path, Some(8192));
    assert_eq!(len, whole.len());
    let slow = std::thread::spawn(move || {
        let mut got = Vec::new();
        let t0 = Instant::now();
        let r = read_slowly(&mut s, &mut got, len, 20_000);
        (r.map(|()| got), t0.elapsed())
    });
    let url = format!("http://{}{path}", d.addr);
    let mut curl = std::process::Command::new("curl")
        .args(["-sf", "--limit-rate", "25k", "-o", "-", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut out = curl.stdout.take().unwrap();
    let flag = std::sync::Arc::clone(&started);
    let curl_read = std::thread::spawn(move || {
        use std::io::Read;
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        all
    });
    let deadline = Instant::now() + 10 * SEC;
    while !started.load(std::sync::atomic::Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "curl got nothing");
        std::thread::sleep(Duration::from_millis(20));
    }

    let budget = 1u64 << 20;
    let mut worst = export_bytes_on_disk(&d);
    // A second archive does not fit beside the first, which is being read: deleting the first
    // would free nothing yet, so nothing is deleted and the second fails, saying why.
    let (_, v) = archive(1);
    assert_eq!(v["state"], "FAILED", "{v}");
    assert!(v["error"].as_str().unwrap().contains("exports.max_bytes"), "{v}");
    assert_eq!(d.get(&format!("/api/exports/{first}")).status, 200, "the first was deleted for nothing");
    // Deleted while it is read: forgotten at once, its file stays (and counts) until the
    // readers are done.
    assert_eq!(delete(&d, &format!("/api/exports/{first}")).status, 200);
    assert_eq!(d.get(&format!("/api/exports/{first}")).status, 404);
    let (_, v) = archive(1);
    assert_eq!(v["state"], "FAILED", "still no room: {v}");
    let deadline = Instant::now() + 60 * SEC;
    while !slow.is_finished() {
        worst = worst.max(export_bytes_on_disk(&d));
        assert!(Instant::now() < deadline, "the slow download did not finish within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (got, took) = slow.join().unwrap();
    let got = got.unwrap_or_else(|e| panic!("the 20 KB/s download was cut: {e}"));
    assert!(got == whole, "the slow download differs from the file");
    let status = curl.wait().unwrap();
    let curled = curl_read.join().unwrap();
    assert!(status.success() && curled == whole, "curl --limit-rate: {} bytes, {status}", curled.len());
    println!(
        "figures: {} bytes at 20 KB/s in {:.1} s; export bytes on disk at most {worst} (budget {budget})",
        whole.len(),
        took.as_secs_f64()
    );
    assert!(worst <= budget, "{worst} bytes of exports on disk, budget {budget}");
    // Both downloads ended: the deleted export's file is gone, and there is room again.
    let deadline = Instant::now() + 5 * SEC;
    while files_with(&exports_dir(&d), &format!("{first}.tar")).len() == 1 {
        assert!(Instant::now() < deadline, "{first}.tar outlived its downloads");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (second, v) = archive(1);
    assert_eq!(v["state"], "SUCCEEDED", "{v}");
    // A third makes room by deleting the second, which nobody reads.
    let (_, v) = archive(2);
    assert_eq!(v["state"], "SUCCEEDED", "{v}");
    assert_eq!(d.get(&format!("/api/exports/{second}")).status, 404);
    assert!(export_bytes_on_disk(&d) <= budget);
}

#[test]
fn a_download_read_in_bursts_is_not_cut_between_them() {
    // curl --limit-rate reads all its socket holds at once, then pauses until its average is
    // down: over loopback that is seconds between acknowledgements of hundreds of KB, far
    // beyond a 1 s write timeout. The client keeps taking bytes: it must not be cut.
    let dir = temp_dir("export-bursts");
    let cam = synthetic(
        "cam0",
        json!({"source": {"kind": "synthetic", "width": 640, "height": 480, "fps": 20, "quality": 90}, "snapshot_interval_ms": 50}),
    );
    let cfg = config(&dir, json!([cam]), json!({"write_timeout_ms": 1000}));
    let d = Daemon::builder(dir, &cfg).start();
    let deadline = Instant::now() + 30 * SEC;
    while d.camera("cam0")["store"]["bytes"].as_u64().unwrap() < 4_000_000 {
        assert!(Instant::now() < deadline, "fewer than 4 MB stored: {}", d.camera("cam0")["store"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    let id = submit(&d, json!({"camera": "cam0", "from": 0, "to": "2100-01-01", "kind": "archive"})).json()["id"]
        .as_u64()
        .unwrap();
    let (v, _) = wait_export(&d, id, 30 * SEC, |v| v["state"] == "SUCCEEDED");
    let whole = d.get(&format!("/api/exports/{id}/file")).body;
    assert_eq!(whole.len() as u64, v["bytes"].as_u64().unwrap());
    // A reader of bursts: it takes all its socket holds at once, then sleeps until its average
    // is back to 150 KB/s (what curl --limit-rate does, but every time).
    let (mut s, len) = open_download(&d, &format!("/api/exports/{id}/file"), None);
    let t0 = Instant::now();
    let (mut got, mut pauses, mut longest) = (Vec::with_capacity(len), 0, Duration::ZERO);
    let mut buf = vec![0u8; 1 << 20];
    s.set_read_timeout(Some(30 * SEC)).unwrap();
    while got.len() < len {
        let n = std::io::Read::read(&mut s, &mut buf).expect("the download was cut");
        assert!(n > 0, "the download ended after {} of {len} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        // Whatever else is already here, at once.
        s.set_nonblocking(true).unwrap();
        while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        s.set_nonblocking(false).unwrap();
        let due = Duration::from_secs_f64(got.len() as f64 / 150_000.0);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            pauses += 1;
            longest = longest.max(wait);
            std::thread::sleep(wait);
        }
    }
    println!(
        "figures: {} bytes in bursts at 150 KB/s in {:.1} s, {pauses} pauses, the longest {:.1} s (write timeout 1 s)",
        got.len(),
        t0.elapsed().as_secs_f64(),
        longest.as_secs_f64()
    );
    assert!(got == whole, "the download differs from the file");
    assert!(longest > 2 * SEC, "no pause longer than the write timeout: the test tested nothing");
    assert_eq!(d.get("/api/status").json()["http"]["timeouts"], 0);
}
