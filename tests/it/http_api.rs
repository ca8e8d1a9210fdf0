//! The HTTP API and its bounds, through the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);

fn running(tag: &str, http: serde_json::Value) -> Daemon {
    let d =
        Daemon::start(tag, json!([synthetic("cam0", json!({"snapshot_interval_ms": 0, "source": {"fps": 30}}))]), http);
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    d
}

#[test]
fn status_camera_and_health() {
    let d = running("status", json!({}));
    let r = d.get("/healthz");
    assert_eq!((r.status, r.text().trim()), (200, "ok"));
    let s = d.get("/api/status").json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_s"].as_f64().unwrap() >= 0.0);
    let cam = &s["cameras"][0];
    assert_eq!(cam["camera"], "cam0");
    for key in [
        "id",
        "camera",
        "state",
        "reason",
        "started_at",
        "ended_at",
        "frames_captured",
        "frames_dropped",
        "errors_total",
        "recoveries",
        "last_frame_at",
    ] {
        assert!(cam["job"].get(key).is_some(), "job lacks {key}: {cam}");
    }
    let latest = d.wait_job("cam0", 5 * SEC, |_| true);
    let _ = latest;
    let c = d.camera("cam0");
    for key in ["seq", "captured_at", "bytes", "width", "height"] {
        assert!(c["latest"].get(key).is_some(), "latest lacks {key}: {c}");
    }
    let page = d.get("/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text().contains("/api/status"));
}

#[test]
fn latest_jpg_is_a_jpeg_with_etag_and_304() {
    let d = running("latest", json!({}));
    let r = d.get("/api/cameras/cam0/latest.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let img = image::load_from_memory_with_format(&r.body, image::ImageFormat::Jpeg).expect("decodes");
    assert_eq!((img.width(), img.height()), (160, 120));
    let etag = r.header("etag").unwrap().to_string();
    let seq: u64 = etag.trim_matches('"').parse().unwrap();
    assert!(seq >= 1);
    let r2 = request(d.addr, "GET", "/api/cameras/cam0/latest.jpg", &[("If-None-Match", &etag)], b"");
    // Either still the same snapshot (304) or a newer one (200 with a larger seq).
    match r2.status {
        304 => assert!(r2.body.is_empty()),
        200 => assert!(r2.header("etag").unwrap().trim_matches('"').parse::<u64>().unwrap() > seq),
        s => panic!("status {s}"),
    }
    // A tag that can never match again gets the image.
    let r3 = request(d.addr, "GET", "/api/cameras/cam0/latest.jpg", &[("If-None-Match", "\"0\"")], b"");
    assert_eq!(r3.status, 200);
    let h = request(d.addr, "HEAD", "/api/cameras/cam0/latest.jpg", &[], b"");
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
}

#[test]
fn events_are_paged_with_a_bounded_limit() {
    let d = running("events", json!({}));
    let v = d.get("/api/events?after=0&limit=1").json();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    let first = v["next"].as_u64().unwrap();
    let v = d.get(&format!("/api/events?after={first}&limit=100000")).json();
    assert!(v["events"].as_array().unwrap().iter().all(|e| e["seq"].as_u64().unwrap() > first));
    assert!(v["events"].as_array().unwrap().len() <= 256);
    assert!(v["events"].as_array().unwrap().iter().any(|e| e["state"] == "RUNNING"), "{v}");
    assert_eq!(d.get("/api/events?limit=0").error_code(400), "bad_query");
    assert_eq!(d.get("/api/events?after=-1").error_code(400), "bad_query");
    assert_eq!(d.get("/api/events?colour=red").error_code(400), "bad_query");
}

#[test]
fn bad_requests_get_clear_json_errors_and_the_process_lives_on() {
    let d = running("bad", json!({"max_body_bytes": 1024}));
    assert_eq!(d.post("/api/cameras/cam0/start", "{oops").error_code(400), "bad_json");
    assert_eq!(d.post("/api/cameras/cam0/start", r#"{"max_frames": 0}"#).error_code(400), "bad_value");
    assert_eq!(d.post("/api/cameras/cam0/start", r#"{"frames": 3}"#).error_code(400), "bad_json");
    assert_eq!(d.get("/api/cameras/nope").error_code(404), "not_found");
    assert_eq!(d.post("/api/cameras/nope/start", "").error_code(404), "not_found");
    assert_eq!(d.get("/no/such/thing").error_code(404), "not_found");
    let r = d.get("/api/cameras/cam0/start");
    r.error_code(405);
    assert_eq!(r.header("allow"), Some("POST"));
    d.post("/api/status", "").error_code(405);
    request(d.addr, "DELETE", "/api/cameras/cam0", &[], b"").error_code(405);
    // A body over max_body_bytes: 413, whatever the route.
    d.post("/api/cameras/cam0/start", &"x".repeat(2000)).error_code(413);

    // A declared body of a terabyte is refused at once, without reading or allocating it.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    s.write_all(b"POST /api/cameras/cam0/start HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n").unwrap();
    let r = read_response(&mut s, false).unwrap();
    r.error_code(413);
    assert!(t0.elapsed() < 2 * SEC);

    // Garbage instead of HTTP.
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    s.write_all(b"\x16\x03\x01 not http at all\r\n\r\n").unwrap();
    // hyper's parser answers what it cannot parse itself: 400 without a body, then closes.
    assert_eq!(read_response(&mut s, false).unwrap().status, 400);
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest).unwrap(), 0, "closed after the 400");

    // Still alive and right.
    assert_eq!(d.camera("cam0")["job"]["state"], "RUNNING");
}

#[test]
fn a_slowloris_connection_is_closed_after_the_read_timeout() {
    let d = running("slowloris", json!({"read_timeout_ms": 500}));
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let t0 = Instant::now();
    let head = b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut closed_at = None;
    'outer: for i in 0..200 {
        // One byte every 50 ms: never a complete head.
        if s.write_all(&head[i % head.len()..i % head.len() + 1]).is_err() {
            closed_at = Some(t0.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => {
                closed_at = Some(t0.elapsed());
                break 'outer;
            }
            Ok(_) => {} // a 408 answer; the close follows
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed_at = Some(t0.elapsed());
                break;
            }
        }
    }
    let closed_at = closed_at.expect("the slow connection was never closed");
    assert!(closed_at >= Duration::from_millis(400) && closed_at < 3 * SEC, "closed after {closed_at:?}");
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn five_hundred_connections_do_not_grow_threads() {
    let d = running("flood", json!({"max_connections": 64, "idle_timeout_ms": 2000}));
    let before = d.threads();
    let mut conns = Vec::new();
    for _ in 0..500 {
        match TcpStream::connect_timeout(&d.addr, 2 * SEC) {
            Ok(s) => conns.push(s),
            Err(_) => break,
        }
    }
    assert!(conns.len() >= 400, "only {} connections opened", conns.len());
    // Half of them send a request, half stay silent.
    for s in conns.iter_mut().step_by(2) {
        let _ = s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let deadline = Instant::now() + 2 * SEC;
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(d.threads());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(peak, before, "thread count moved from {before} (peak {peak})");
    // Beyond max_connections the longest-idle connections were evicted (closed) to make room
    // as the flood opened: every connection that sent a request got an answer or was closed,
    // none is left hanging.
    let (mut answered, mut closed) = (0, 0);
    for (i, s) in conns.iter_mut().enumerate().step_by(2) {
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200") => answered += 1,
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            other => panic!("request {i} was left hanging: {other:?}"),
        }
    }
    let http = d.get("/api/status").json()["http"].clone();
    assert!(answered > 0 && closed > 0, "{answered} answered, {closed} closed; {http}");
    assert!(http["connections_evicted"].as_u64().unwrap() > 0, "{http}");
    drop(conns);
    let s = d.get("/api/status");
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["cameras"][0]["job"]["state"], "RUNNING");
    assert_eq!(d.threads(), before);
}

#[test]
fn token_guards_every_non_get_request() {
    let d = running("token", json!({"token": "s3cret"}));
    let r = d.post("/api/cameras/cam0/stop", "");
    assert_eq!(r.error_code(401), "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    request(d.addr, "POST", "/api/cameras/cam0/stop", &[("Authorization", "Bearer wrong")], b"").error_code(401);
    assert_eq!(d.get("/api/status").status, 200, "reads stay open");
    let r = request(d.addr, "POST", "/api/cameras/cam0/stop", &[("Authorization", "Bearer s3cret")], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_state("cam0", "STOPPED", 5 * SEC);
}

#[test]
fn writes_from_pages_of_other_origins_are_refused() {
    let d = running("origin", json!({}));
    let host = d.addr.to_string();
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let r = request(d.addr, "POST", "/api/cameras/cam0/stop", &[("Origin", origin)], b"");
        assert_eq!(r.error_code(403), "cross_origin", "{origin}");
    }
    assert_eq!(d.camera("cam0")["job"]["state"], "RUNNING", "nothing was stopped");
    // The dashboard's own origin, and scripts that send none, may write.
    let own = format!("http://{host}");
    let r = request(d.addr, "POST", "/api/cameras/cam0/stop", &[("Origin", own.as_str())], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_state("cam0", "STOPPED", 5 * SEC);
    assert_eq!(d.post("/api/cameras/cam0/start", "").status, 202);
    // Reads from other origins stay open (CORS).
    assert_eq!(request(d.addr, "GET", "/api/status", &[("Origin", "http://mainsail.local")], b"").status, 200);
}

/// A request with its own `Host` (and `Origin`, if given) on a fresh connection.
fn with_host(d: &Daemon, method: &str, path: &str, host: &str, origin: Option<&str>) -> Resp {
    let mut s = TcpStream::connect_timeout(&d.addr, 5 * SEC).unwrap();
    s.set_read_timeout(Some(10 * SEC)).unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    read_response(&mut s, false).unwrap()
}

#[test]
fn a_dns_rebinding_page_cannot_write_but_our_own_names_can() {
    let d = running("rebind", json!({"allowed_hosts": ["camera.lan"]}));
    let port = d.addr.port();
    // The issue's request: a page of rebind.evil.example, its name now pointing at 127.0.0.1.
    let evil = format!("rebind.evil.example:{port}");
    let r = with_host(&d, "POST", "/api/cameras/cam0/stop", &evil, Some(&format!("http://{evil}")));
    assert_eq!(r.error_code(403), "host", "{}", r.text());
    assert!(r.text().contains("http.allowed_hosts"), "{}", r.text());
    for path in ["/api/cameras/cam0/start", "/api/exports"] {
        assert_eq!(with_host(&d, "POST", path, &evil, None).error_code(403), "host", "{path}");
    }
    assert_eq!(with_host(&d, "DELETE", "/api/exports/1", &evil, None).error_code(403), "host");
    assert_eq!(d.camera("cam0")["job"]["state"], "RUNNING", "nothing was stopped");
    // Reads on a loopback bind without a token stay open to any name.
    assert_eq!(with_host(&d, "GET", "/api/status", &evil, None).status, 200);
    // Our names: an address, localhost, one from http.allowed_hosts, the machine's own.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    for (i, host) in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("CAMERA.lan:{port}"),
        format!("{hostname}.local:{port}"),
    ]
    .iter()
    .enumerate()
    {
        let action = if i % 2 == 0 { "stop" } else { "start" };
        let r = with_host(&d, "POST", &format!("/api/cameras/cam0/{action}"), host, Some(&format!("http://{host}")));
        assert_eq!(r.status, 202, "{host}: {}", r.text());
        d.wait_state("cam0", if i % 2 == 0 { "STOPPED" } else { "RUNNING" }, 5 * SEC);
    }
}

#[test]
fn the_503_at_max_connections_is_framed_like_every_answer() {
    // 8 streams hold all 8 connections busy: the 9th is refused by the server itself.
    let d = running("busy-503", json!({"max_connections": 8, "max_stream_clients": 8}));
    let streams: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&d.addr, 5 * SEC).unwrap();
            s.write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            s.set_read_timeout(Some(5 * SEC)).unwrap();
            let mut b = [0u8; 64];
            assert!(s.read(&mut b).unwrap() > 0, "the stream answered");
            s
        })
        .collect();
    let mut s = TcpStream::connect_timeout(&d.addr, 5 * SEC).unwrap();
    s.set_read_timeout(Some(5 * SEC)).unwrap();
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    // read_response reads exactly Content-Length bytes; then the server closes: nothing more.
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.error_code(503), "busy", "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("1"));
    let declared: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(declared, r.body.len());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{} bytes after the declared body: {:?}", rest.len(), String::from_utf8_lossy(&rest));
    drop(streams);
}
