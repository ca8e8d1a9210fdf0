//! The server's bounds, against a tiny handler over real loopback sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use http::StatusCode;

use super::*;
use crate::http::reply::{with_body, Body};

/// Answers `/ok`, panics on `/panic`, takes 3 s on `/slow`, sends 8 MiB on `/big`, echoes the
/// body length on POST.
struct Test;

impl Handler for Test {
    fn handle(&self, req: Request) -> Answer<'_> {
        Box::pin(async move {
            let text = |body: Body| with_body(StatusCode::OK, "text/plain", body);
            match req.uri().path() {
                "/panic" => panic!("a handler bug"),
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    text(Body::from_static(b"slow"))
                }
                "/big" => with_body(StatusCode::OK, "application/octet-stream", Body::full(vec![7u8; 8 << 20])),
                _ if req.method() == http::Method::POST => text(Body::full(req.body().len().to_string())),
                _ => text(Body::from_static(b"ok")),
            }
        })
    }
}

struct Running {
    server: Option<Server>,
    stop: Stop,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Running {
    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }
    fn stats(&self) -> Arc<Stats> {
        self.server.as_ref().unwrap().stats()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(s) = self.server.take() {
            s.join(Instant::now() + Duration::from_secs(2));
        }
    }
}

fn config() -> HttpConfig {
    HttpConfig {
        bind: "127.0.0.1:0".into(),
        read_timeout_ms: 500,
        idle_timeout_ms: 500,
        write_timeout_ms: 500,
        max_connections: 16,
        max_header_bytes: 2048,
        max_headers: 8,
        max_body_bytes: 64,
        ..HttpConfig::default()
    }
}

/// Server tests count threads and sockets: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's threads whose name starts with `http`.
fn http_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|n| {
            let n = n.trim();
            n == "http" || n.strip_prefix("http-").is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

fn start(cfg: HttpConfig) -> Running {
    let serial = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stop = Stop::new();
    let server = Server::start(listener, &cfg, Arc::new(Test), Arc::default(), stop.clone()).unwrap();
    Running { server: Some(server), stop, _serial: serial }
}

/// Sends `req` and reads until the server closes (or 5 s): the whole answer.
fn exchange(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

#[test]
fn keep_alive_and_head() {
    let r = start(config());
    let a = exchange(
        r.addr(),
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nHEAD /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(a.matches("HTTP/1.1 200").count(), 2, "{a}");
    let (get, head) = a.split_at(a.rfind("HTTP/1.1 200").unwrap());
    assert!(get.ends_with("\r\n\r\nok"), "{get}");
    assert!(head.contains("content-length: 2\r\n"), "HEAD says GET's length: {head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD sends no body: {head}");
    assert_eq!(r.stats().requests.load(Ordering::Relaxed), 2);
}

#[test]
fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let r = start(config());
    for _ in 0..20 {
        let mut s = TcpStream::connect(r.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /ok HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.0 200") && out.ends_with("ok"), "{out:?}");
    }
}

#[test]
fn oversized_and_crowded_heads_are_431() {
    let r = start(config());
    let long = format!("GET /ok HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(4096));
    assert_eq!(status(&exchange(r.addr(), long.as_bytes())), 431);
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(status(&exchange(r.addr(), format!("GET /ok HTTP/1.1\r\n{many}\r\n").as_bytes())), 431);
    assert!(eventually(Duration::from_secs(1), || r.stats().bad_requests.load(Ordering::Relaxed) == 2));
}

#[test]
fn bodies_are_bounded_by_what_they_declare() {
    let r = start(config());
    let a = exchange(r.addr(), b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    assert!(a.ends_with("\r\n\r\n5"), "{a}");
    // A terabyte is refused before a byte of it is read.
    let a = exchange(r.addr(), b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n");
    assert_eq!(status(&a), 413, "{a}");
    assert!(a.contains("\"body_too_large\""), "{a}");
    let a =
        exchange(r.addr(), b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(status(&a), 411, "{a}");
    // A body that never comes: 408 within the read timeout.
    let t0 = Instant::now();
    let a = exchange(r.addr(), b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(status(&a), 408, "{a}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_panicking_handler_is_500_and_the_server_goes_on() {
    let r = start(config());
    let a = exchange(r.addr(), b"GET /panic HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&a), 500, "{a}");
    assert!(a.contains("\"internal\""));
    let a = exchange(r.addr(), b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&a), 200);
    assert_eq!(r.stats().handler_panics.load(Ordering::Relaxed), 1);
}

#[test]
fn silent_and_slow_heads_are_closed_after_the_read_timeout() {
    let r = start(config());
    let mut silent = TcpStream::connect(r.addr()).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    let _ = silent.read(&mut buf);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(3), "closed after {waited:?}");
    assert!(eventually(Duration::from_secs(1), || r.stats().timeouts.load(Ordering::Relaxed) >= 1));
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let r = start(config());
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&r.addr().into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || r.stats().timeouts.load(Ordering::Relaxed) == 1),
        "8 MiB unread did not time out"
    );
    assert!(eventually(Duration::from_secs(2), || r.stats().connections_active.load(Ordering::Relaxed) == 0));
}

#[test]
fn at_the_cap_idle_connections_make_room_and_busy_ones_get_503() {
    let r = start(config());
    // A thread names itself once it runs.
    assert!(eventually(Duration::from_secs(2), || http_threads() == 3), "http and two workers");
    let before = http_threads();
    // 16 sockets that never send a byte fill the cap ...
    let silent: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(r.addr()).unwrap()).collect();
    assert!(eventually(Duration::from_secs(2), || r.stats().connections_active.load(Ordering::Relaxed) == 16));
    // ... and still a real request is served at once: the longest-idle one makes room.
    let t0 = Instant::now();
    let a = exchange(r.addr(), b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&a), 200, "{a}");
    assert!(t0.elapsed() < Duration::from_millis(400), "took {:?}", t0.elapsed());
    assert_eq!(r.stats().connections_evicted.load(Ordering::Relaxed), 1);
    drop(silent);
    // 16 busy requests: nobody can be evicted, so one more is refused.
    let busy: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(r.addr()).unwrap();
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s
        })
        .collect();
    assert!(eventually(Duration::from_secs(2), || r.stats().requests.load(Ordering::Relaxed) >= 17));
    let a = exchange(r.addr(), b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&a), 503, "{a}");
    assert!(a.contains("max_connections"));
    assert_eq!(r.stats().connections_rejected.load(Ordering::Relaxed), 1);
    assert_eq!(http_threads(), before, "connections cost no thread");
    // The clients go; their handlers still finish (3 s), then the places are free again.
    drop(busy);
    assert!(eventually(Duration::from_secs(6), || status(&exchange(
        r.addr(),
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )) == 200));
}

#[test]
fn connections_that_promise_a_body_and_send_none_cannot_fill_the_table() {
    let r = start(HttpConfig { read_timeout_ms: 5_000, ..config() });
    let waiting: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(r.addr()).unwrap();
            s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n").unwrap();
            s
        })
        .collect();
    assert!(eventually(Duration::from_secs(2), || r.stats().connections_active.load(Ordering::Relaxed) == 16));
    // Waiting for a body is idle, not busy: one of them makes room at once.
    let t0 = Instant::now();
    let a = exchange(r.addr(), b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&a), 200, "{a}");
    assert!(t0.elapsed() < Duration::from_millis(400), "took {:?}", t0.elapsed());
    assert_eq!(r.stats().connections_rejected.load(Ordering::Relaxed), 0);
    drop(waiting);
}

#[test]
fn the_runtime_has_the_named_threads_and_stops_quickly() {
    let mut r = start(HttpConfig { workers: 2, ..config() });
    let names = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    let want = |n: &Vec<String>| ["http", "http-0", "http-1"].iter().all(|w| n.iter().any(|x| x == w));
    assert!(eventually(Duration::from_secs(2), || want(&names())), "{:?}", names());
    // A keep-alive connection open: stopping does not wait for it.
    let _open = TcpStream::connect(r.addr()).unwrap();
    let t0 = Instant::now();
    r.stop.trigger();
    r.server.take().unwrap().join(Instant::now() + Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(2), "join took {:?}", t0.elapsed());
}
