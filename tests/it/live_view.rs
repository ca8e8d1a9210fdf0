//! The live view through the real binary: the MJPEG stream read by a strict multipart parser,
//! the URLs people paste into OctoPrint, Mainsail and Home Assistant, the stream cap, stalled
//! and slow clients that must slow neither capture nor the other clients, placeholders while a
//! camera is down, Basic auth for reads, and idle sockets that must not lock anyone out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

/// A stream client: sends the request, checks the response head, then de-chunks the body and
/// splits it into parts with a strict multipart parser.
struct StreamClient {
    s: TcpStream,
    /// De-chunked body bytes not yet parsed.
    body: Vec<u8>,
    /// Where the chunked framing is.
    chunk: Chunk,
    raw: Vec<u8>,
    parts: usize,
    pub head: Resp,
    /// Read at most this many bytes a second (a slow link), counted from `opened`.
    rate: Option<u64>,
    opened: Instant,
    taken: usize,
}

#[derive(Clone, Copy)]
enum Chunk {
    Size,
    Data(usize),
    End,
}

/// One part of the stream.
struct Part {
    headers: Vec<(String, String)>,
    jpeg: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn timestamp(&self) -> f64 {
        self.header("X-Timestamp").expect("X-Timestamp").parse().expect("a number")
    }
}

const BOUNDARY: &[u8] = b"--camjobdframe\r\n";

impl StreamClient {
    fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> StreamClient {
        let s = TcpStream::connect_timeout(&addr, 5 * SEC).expect("connect");
        StreamClient::open_on(s, addr, path, headers)
    }

    /// A client on a slow link: reads `bytes_per_s`, through a receive buffer of `rcvbuf`.
    fn open_slow(addr: SocketAddr, path: &str, rcvbuf: usize, bytes_per_s: u64) -> StreamClient {
        let s = connect_with_rcvbuf(addr, Some(rcvbuf));
        StreamClient { rate: Some(bytes_per_s), ..StreamClient::open_on(s, addr, path, &[]) }
    }

    fn open_on(mut s: TcpStream, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> StreamClient {
        s.set_read_timeout(Some(10 * SEC)).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        // The head, byte by byte (nothing of the body is consumed).
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).expect("a response head"), 1, "closed in the head");
            head.push(b[0]);
        }
        let text = String::from_utf8(head).unwrap();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect();
        let head = Resp { status, headers, body: Vec::new() };
        if head.status == 200 {
            assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
        }
        StreamClient {
            s,
            body: Vec::new(),
            chunk: Chunk::Size,
            raw: Vec::new(),
            parts: 0,
            head,
            rate: None,
            opened: Instant::now(),
            taken: 0,
        }
    }

    /// More de-chunked body bytes (chunked framing: size line, data, CRLF).
    fn fill(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        let mut room = buf.len();
        if let Some(rate) = self.rate {
            // Wait until the link allows a little more.
            loop {
                let allowed = (self.opened.elapsed().as_secs_f64() * rate as f64) as usize;
                if allowed >= self.taken + 512 {
                    room = (allowed - self.taken).min(2048);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let n = self.s.read(&mut buf[..room]).expect("stream read");
        assert!(n > 0, "the stream ended");
        self.taken += n;
        self.raw.extend_from_slice(&buf[..n]);
        loop {
            match self.chunk {
                Chunk::Data(left) => {
                    let take = left.min(self.raw.len());
                    self.body.extend(self.raw.drain(..take));
                    if take < left {
                        self.chunk = Chunk::Data(left - take);
                        return;
                    }
                    self.chunk = Chunk::End;
                }
                Chunk::End => {
                    if self.raw.len() < 2 {
                        return;
                    }
                    assert_eq!(&self.raw[..2], b"\r\n", "CRLF after a chunk");
                    self.raw.drain(..2);
                    self.chunk = Chunk::Size;
                }
                Chunk::Size => {
                    let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
                    let line = std::str::from_utf8(&self.raw[..eol]).unwrap();
                    let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    assert!(size > 0, "the stream ended with a last chunk");
                    self.raw.drain(..eol + 2);
                    self.chunk = Chunk::Data(size);
                }
            }
        }
    }

    fn need(&mut self, n: usize) {
        while self.body.len() < n {
            self.fill();
        }
    }

    /// The next part, checked strictly: the boundary (the body starts with it and every JPEG
    /// is followed by CRLF and the next one), the part headers, exactly Content-Length bytes
    /// of one JPEG (SOI .. EOI).
    fn next_part(&mut self) -> Part {
        if self.parts == 0 {
            self.need(BOUNDARY.len());
            assert_eq!(&self.body[..BOUNDARY.len()], BOUNDARY, "the body starts with the boundary");
            self.body.drain(..BOUNDARY.len());
        }
        let head_end = loop {
            if let Some(p) = self.body.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(self.body.len() < 1024, "a part head longer than 1 KiB");
            self.fill();
        };
        let head = String::from_utf8(self.body[..head_end].to_vec()).expect("an ASCII part head");
        let headers: Vec<(String, String)> = head
            .split("\r\n")
            .map(|l| l.split_once(':').unwrap_or_else(|| panic!("bad part header line {l:?}")))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        self.body.drain(..head_end + 4);
        let part = Part { headers, jpeg: Vec::new() };
        assert_eq!(part.header("Content-Type"), Some("image/jpeg"), "{head}");
        let len: usize = part.header("Content-Length").expect("Content-Length in every part").parse().unwrap();
        part.timestamp();
        self.need(len + 2 + BOUNDARY.len());
        let jpeg: Vec<u8> = self.body.drain(..len).collect();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]), "one whole JPEG per part");
        assert_eq!(&self.body[..2], b"\r\n", "CRLF after the JPEG");
        assert_eq!(&self.body[2..2 + BOUNDARY.len()], BOUNDARY, "the next boundary at once");
        self.body.drain(..2 + BOUNDARY.len());
        self.parts += 1;
        Part { jpeg, ..part }
    }
}

fn captured(d: &Daemon, cam: &str) -> (u64, u64) {
    let j = d.camera(cam)["job"].clone();
    (j["frames_captured"].as_u64().unwrap(), j["frames_dropped"].as_u64().unwrap())
}

fn status_http(d: &Daemon) -> Value {
    d.get("/api/status").json()["http"].clone()
}

#[test]
fn the_stream_is_strict_multipart_and_carries_nearly_every_frame() {
    // 30 fps with a snapshot kept once a second: the stream still gets every frame.
    let cam = synthetic("cam0", json!({"source": {"fps": 30}, "snapshot_interval_ms": 1000}));
    let d = Daemon::start("stream", json!([cam]), json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let mut c = StreamClient::open(d.addr, "/api/cameras/cam0/stream.mjpeg", &[]);
    assert_eq!(c.head.status, 200);
    assert_eq!(c.head.header("Content-Type"), Some("multipart/x-mixed-replace;boundary=camjobdframe"));
    assert_eq!(c.head.header("Access-Control-Allow-Origin"), Some("*"));
    c.next_part();
    let (c0, _) = captured(&d, "cam0");
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut last_ts = 0.0;
    while t0.elapsed() < 3 * SEC {
        let p = c.next_part();
        assert!(p.timestamp() > last_ts, "timestamps rise");
        last_ts = p.timestamp();
        n += 1;
        let img = image::load_from_memory_with_format(&p.jpeg, image::ImageFormat::Jpeg).expect("a decodable JPEG");
        assert_eq!((img.width(), img.height()), (160, 120));
    }
    let (c1, dropped) = captured(&d, "cam0");
    let frames = c1 - c0;
    assert!(n * 10 >= frames * 9, "{n} parts for {frames} captured frames");
    assert_eq!(dropped, 0);
    let live = d.camera("cam0")["live"].clone();
    assert_eq!(live["stream_clients"], 1, "{live}");
    drop(c);
    // The client's slot is freed when it goes.
    let deadline = Instant::now() + 5 * SEC;
    while d.camera("cam0")["live"]["stream_clients"] != 0 {
        assert!(Instant::now() < deadline, "the stream client was never released");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status_http(&d)["streams_active"], 0);
    assert!(status_http(&d)["stream_frames"].as_u64().unwrap() >= n);
}

#[test]
fn pasted_urls_work_and_ignore_what_they_do_not_know() {
    let cams =
        json!([synthetic("cam0", json!({})), synthetic("cam1", json!({"source": {"width": 320, "height": 240}}))]);
    let d = Daemon::start("urls", cams, json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    d.wait_state("cam1", "RUNNING", 5 * SEC);
    for path in ["/snapshot", "/?action=snapshot", "/snapshot?1700000000000", "/?action=snapshot&t=5&foo"] {
        let t0 = Instant::now();
        let r = d.get(path);
        assert!(t0.elapsed() < SEC, "{path} took {:?}", t0.elapsed());
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("image/jpeg"));
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
        let img = image::load_from_memory(&r.body).unwrap();
        assert_eq!(img.width(), 160, "{path}: the first camera");
    }
    for path in ["/snapshot?camera=cam1", "/?action=snapshot&camera=cam1&_=1"] {
        let img = image::load_from_memory(&d.get(path).body).unwrap();
        assert_eq!(img.width(), 320, "{path}");
    }
    assert_eq!(d.get("/snapshot?camera=nope").error_code(404), "not_found");
    // next=1: a frame captured after the request.
    let before: f64 = d.get("/snapshot").header("X-Timestamp").unwrap().parse().unwrap();
    let r = d.get("/snapshot?next=1");
    assert_eq!(r.status, 200);
    let after: f64 = r.header("X-Timestamp").unwrap().parse().unwrap();
    assert!(after > before, "next=1 gave {after}, not newer than {before}");
    // The stream URLs.
    for path in
        ["/stream", "/?action=stream", "/stream?camera=cam1&fps=5", "/?action=stream&camera=cam1&x=1", "/stream?123"]
    {
        let mut c = StreamClient::open(d.addr, path, &[]);
        assert_eq!(c.head.status, 200, "{path}");
        let p = c.next_part();
        let want = if path.contains("cam1") { 320 } else { 160 };
        assert_eq!(image::load_from_memory(&p.jpeg).unwrap().width(), want, "{path}");
    }
    // The API's own stream route refuses a bad fps, and ignores what it does not know (the
    // contract: unknown parameters and cache-busters are ignored on the live-view routes).
    assert_eq!(d.get("/api/cameras/cam0/stream.mjpeg?fps=0").error_code(400), "bad_query");
    for path in ["/api/cameras/cam0/stream.mjpeg?speed=2", "/api/cameras/cam0/stream.mjpeg?t=1700000000000&fps=5"] {
        let mut c = StreamClient::open(d.addr, path, &[]);
        assert_eq!(c.head.status, 200, "{path}");
        assert_eq!(image::load_from_memory(&c.next_part().jpeg).unwrap().width(), 160, "{path}");
    }
    assert_eq!(request(d.addr, "POST", "/stream", &[], b"").error_code(405), "method_not_allowed");
    // The dashboard is still at / without an action.
    assert!(d.get("/").text().contains("<html"));
    // A CORS preflight for reads.
    let r = request(d.addr, "OPTIONS", "/stream", &[("Origin", "http://mainsail.local")], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
}

#[test]
fn a_snapshot_is_current_even_with_a_long_snapshot_interval() {
    let cam = synthetic("cam0", json!({"source": {"fps": 20}, "snapshot_interval_ms": 30_000}));
    let d = Daemon::start("fresh", json!([cam]), json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    std::thread::sleep(2 * SEC);
    for _ in 0..3 {
        let now = d.get("/api/status").json()["now"].as_f64().unwrap();
        let t0 = Instant::now();
        let r = d.get("/snapshot");
        assert!(t0.elapsed() < SEC, "took {:?}", t0.elapsed());
        assert_eq!(r.status, 200);
        let at: f64 = r.header("X-Timestamp").unwrap().parse().unwrap();
        assert!(at >= now - 0.5, "a frame {:.1} s old with snapshots every 30 s", now - at);
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Only the first snapshot of the job was kept meanwhile.
    assert_eq!(d.camera("cam0")["job"]["snapshots"], 1);
}

#[test]
fn an_fps_cap_slows_one_client_and_capture_encodes_only_what_is_wanted() {
    let cam = synthetic("cam0", json!({"source": {"fps": 40}, "snapshot_interval_ms": 5000}));
    let d = Daemon::start("fps", json!([cam]), json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let mut c = StreamClient::open(d.addr, "/stream?fps=5", &[]);
    c.next_part();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < 2 * SEC {
        c.next_part();
        n += 1;
    }
    assert!((7..=13).contains(&n), "{n} parts in 2 s at fps=5");
}

#[test]
fn busy_encoders_skip_stream_frames_but_never_a_snapshot_due() {
    // 1280x720 offered at up to 1000 fps to one encoder thread, and a stream client that takes
    // every frame it can: the encoder is saturated, so frames are skipped for the stream. A
    // snapshot due every 100 ms must still be kept (at most a frame late), none dropped.
    let cam = synthetic(
        "cam0",
        json!({"source": {"width": 1280, "height": 720, "fps": 1000}, "encoder_threads": 1,
               "snapshot_interval_ms": 100, "max_frame_bytes": 2097152}),
    );
    let d = Daemon::start("busy-encoders", json!([cam]), json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let mut c = StreamClient::open(d.addr, "/stream", &[]);
    c.next_part();
    let job = |d: &Daemon| d.camera("cam0")["job"].clone();
    let j0 = job(&d);
    let t0 = Instant::now();
    let mut parts = 0u64;
    while t0.elapsed() < 3 * SEC {
        let p = c.next_part();
        assert_eq!(&p.jpeg[..2], &[0xFF, 0xD8]);
        parts += 1;
    }
    let (j1, secs) = (job(&d), t0.elapsed().as_secs_f64());
    let n = |j: &Value, k: &str| j[k].as_u64().unwrap();
    let kept = n(&j1, "snapshots") - n(&j0, "snapshots");
    let skipped = n(&j1, "frames_skipped") - n(&j0, "frames_skipped");
    let captured = n(&j1, "frames_captured") - n(&j0, "frames_captured");
    println!("{secs:.1} s: {captured} captured, {parts} streamed, {skipped} skipped, {kept} snapshots kept");
    assert!(skipped > 0, "the encoder was never busy: {captured} captured, {parts} streamed");
    // Due every 100 ms: about 10 per second, each at most one frame (~1 ms here) late.
    let due = (secs * 10.0) as u64;
    assert!(kept + 2 >= due, "{kept} snapshots kept in {secs:.1} s, {due} were due");
    assert_eq!(n(&j1, "frames_dropped"), 0);
}

#[test]
fn the_stream_cap_answers_503_and_threads_stay_fixed() {
    let d = Daemon::start("cap", json!([synthetic("cam0", json!({}))]), json!({"max_stream_clients": 2}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let before = d.threads();
    let mut a = StreamClient::open(d.addr, "/stream", &[]);
    let mut b = StreamClient::open(d.addr, "/api/cameras/cam0/stream.mjpeg", &[]);
    a.next_part();
    b.next_part();
    let r = request(d.addr, "GET", "/stream", &[], b"");
    assert_eq!(r.error_code(503), "busy");
    assert!(r.header("Retry-After").is_some());
    assert_eq!(status_http(&d)["streams_rejected"], 1);
    assert_eq!(d.threads(), before, "streams cost no thread");
    drop(a);
    let deadline = Instant::now() + 5 * SEC;
    loop {
        let mut c = StreamClient::open(d.addr, "/stream", &[]);
        if c.head.status == 200 {
            c.next_part();
            break;
        }
        assert!(Instant::now() < deadline, "a freed place was never given again");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.next_part();
}

/// A client that asks for a stream and then reads nothing, with a tiny receive buffer.
fn stalled(addr: SocketAddr, path: &str) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&addr.into(), 5 * SEC).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    s
}

#[test]
fn a_stalled_client_slows_neither_capture_nor_the_others_and_is_dropped() {
    let cam = synthetic("cam0", json!({"source": {"fps": 30}, "snapshot_interval_ms": 1000}));
    let d = Daemon::start("stall", json!([cam]), json!({"write_timeout_ms": 1000}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let stuck = stalled(d.addr, "/stream");
    let mut c = StreamClient::open(d.addr, "/stream", &[]);
    c.next_part();
    let (c0, d0) = captured(&d, "cam0");
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < 4 * SEC {
        c.next_part();
        n += 1;
    }
    let (c1, d1) = captured(&d, "cam0");
    assert!(n * 10 >= (c1 - c0) * 9, "{n} parts for {} frames beside a stalled client", c1 - c0);
    assert_eq!(d1 - d0, 0, "capture dropped frames");
    // The stalled client was dropped for taking nothing within write_timeout_ms.
    let deadline = Instant::now() + 10 * SEC;
    while status_http(&d)["streams_active"] != 1 {
        assert!(Instant::now() < deadline, "the stalled client was never dropped: {}", status_http(&d));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(status_http(&d)["timeouts"].as_u64().unwrap() >= 1);
    drop(stuck);
}

#[test]
fn a_camera_that_is_down_streams_a_placeholder_and_resumes_by_itself() {
    // Stalls after 20 frames, recovers after each reopen, with the budget big enough to stay
    // in RECOVERING for a while.
    let cam = synthetic(
        "cam0",
        json!({"source": {"fps": 20, "fault": {"stall_after_frames": 20}},
               "watchdog": {"stall_timeout_ms": 500, "max_recoveries": 1}}),
    );
    let d = Daemon::start("placeholder", json!([cam]), json!({}));
    let mut c = StreamClient::open(d.addr, "/stream", &[]);
    d.wait_state("cam0", "FAILED", 15 * SEC);
    // Down: placeholders (marked with the state) at least every 2 s, each a whole JPEG. What
    // the socket buffered while we waited comes first.
    let mut seen = 0;
    let mut last: Option<Instant> = None;
    let t0 = Instant::now();
    while seen < 3 {
        let p = c.next_part();
        assert!(t0.elapsed() < 15 * SEC, "no placeholders");
        let Some(state) = p.header("X-Camjobd-State").map(str::to_string) else { continue };
        if let Some(t) = last {
            assert!(t.elapsed() < Duration::from_millis(2500), "no part for {:?}", t.elapsed());
        }
        last = Some(Instant::now());
        let img = image::load_from_memory(&p.jpeg).expect("a placeholder JPEG");
        assert_eq!(img.width(), 160, "the camera's size");
        if state == "FAILED" {
            seen += 1;
        }
    }
    assert!(status_http(&d)["stream_placeholders"].as_u64().unwrap() >= 3);
    let r = d.get("/snapshot");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(r.header("X-Camjobd-State"), Some("FAILED"));
    assert!(image::load_from_memory(&r.body).is_ok());
    // A new job: real frames resume on the same connection.
    assert_eq!(d.post("/api/cameras/cam0/start", "").status, 202);
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let frames_before = status_http(&d)["stream_frames"].as_u64().unwrap();
    let deadline = Instant::now() + 5 * SEC;
    while status_http(&d)["stream_frames"].as_u64().unwrap() < frames_before + 3 {
        c.next_part();
        assert!(Instant::now() < deadline, "real frames did not resume");
    }
}

#[test]
fn basic_auth_opens_streams_and_snapshots_but_never_writes() {
    let http = json!({"token": "s3cret", "protect_reads": true});
    let d = Daemon::start("basic", json!([synthetic("cam0", json!({}))]), http);
    let bearer = [("Authorization", "Bearer s3cret")];
    let deadline = Instant::now() + 5 * SEC;
    while request(d.addr, "GET", "/snapshot", &bearer, b"").status != 200 {
        assert!(Instant::now() < deadline, "no snapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = d.get("/snapshot");
    assert_eq!(r.error_code(401), "unauthorized");
    assert!(r.header("WWW-Authenticate").unwrap().starts_with("Basic"), "{:?}", r.headers);
    assert_eq!(d.get("/?action=stream").status, 401, "an action on / is not the open page");
    // base64("octoprint:s3cret") and a lower-case scheme.
    for auth in ["Basic b2N0b3ByaW50OnMzY3JldA==", "basic b2N0b3ByaW50OnMzY3JldA==", "Bearer s3cret", "bearer s3cret"] {
        let r = request(d.addr, "GET", "/snapshot", &[("Authorization", auth)], b"");
        assert_eq!(r.status, 200, "{auth}");
        let mut c = StreamClient::open(d.addr, "/stream", &[("Authorization", auth)]);
        assert_eq!(c.head.status, 200, "{auth}");
        c.next_part();
    }
    // base64("x:wrong")
    assert_eq!(request(d.addr, "GET", "/snapshot", &[("Authorization", "Basic eDp3cm9uZw==")], b"").status, 401);
    let basic = [("Authorization", "Basic b2N0b3ByaW50OnMzY3JldA==")];
    assert_eq!(request(d.addr, "POST", "/api/cameras/cam0/stop", &basic, b"").error_code(401), "unauthorized");
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn two_hundred_silent_connections_do_not_lock_anyone_out() {
    let d = Daemon::start("silent", json!([synthetic("cam0", json!({}))]), json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let before = d.threads();
    let silent: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect_timeout(&d.addr, 5 * SEC).unwrap()).collect();
    for _ in 0..10 {
        let t0 = Instant::now();
        assert_eq!(d.get("/healthz").status, 200);
        assert!(t0.elapsed() < SEC, "/healthz took {:?} beside 200 silent sockets", t0.elapsed());
        let t0 = Instant::now();
        assert_eq!(d.get("/api/status").status, 200);
        assert!(t0.elapsed() < SEC);
    }
    assert_eq!(d.threads(), before, "silent sockets cost no thread");
    let active = status_http(&d)["connections_active"].as_u64().unwrap();
    assert!(active >= 200, "{active} connections counted");
    drop(silent);
}

/// A JPEG of about 4 MB: noise at high quality (deterministic).
fn big_jpeg() -> Vec<u8> {
    let mut x: u32 = 12345;
    let img = image::RgbImage::from_fn(2048, 1536, |_, _| {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let b = x.to_le_bytes();
        image::Rgb([b[1], b[2], b[3]])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img).unwrap();
    out
}

#[test]
fn slow_readers_and_stalled_streams_never_starve_capture() {
    // The hostile readers at default pool and HTTP settings: 4 MB frames at about
    // 8 fps, every frame kept (so every frame needs a pool buffer), 4 clients reading
    // latest.jpg a byte at a time and 4 stream clients that read nothing.
    let dir = temp_dir("starve");
    let frame = big_jpeg();
    assert!(frame.len() > 3_500_000, "{} bytes", frame.len());
    std::fs::write(dir.path().join("big.jpg"), &frame).unwrap();
    let script = format!("while :; do cat {}; sleep 0.12; done", dir.path().join("big.jpg").display());
    let cam = json!({
        "name": "cam0",
        "source": { "kind": "pipe", "command": ["sh", "-c", script] },
        "snapshot_interval_ms": 0,
        "max_frame_bytes": 8 << 20,
        "store": { "enabled": false },
    });
    let cfg = config(&dir, json!([cam]), json!({}));
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut s = stalled(d.addr, "/api/cameras/cam0/latest.jpg");
        let stop = std::sync::Arc::clone(&stop);
        readers.push(std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let mut b = [0u8; 1];
            // A byte a second, for at most 15 s.
            for _ in 0..15 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = s.read(&mut b);
                std::thread::sleep(SEC);
            }
        }));
    }
    let streams: Vec<TcpStream> = (0..4).map(|_| stalled(d.addr, "/stream")).collect();
    std::thread::sleep(SEC);
    let (c0, d0) = captured(&d, "cam0");
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    while t0.elapsed() < 10 * SEC {
        let t = Instant::now();
        assert_eq!(d.get("/healthz").status, 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (c1, d1) = captured(&d, "cam0");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "figures: {} frames captured in 10 s, {} dropped, /healthz slowest {slowest:?}, live {}",
        c1 - c0,
        d1 - d0,
        d.camera("cam0")["live"]
    );
    assert!(c1 - c0 >= 40, "capture slowed to {} frames in 10 s", c1 - c0);
    assert!(d1 - d0 <= 2, "capture dropped {} frames", d1 - d0);
    assert!(slowest < SEC, "/healthz took {slowest:?}");
    drop(streams);
    for r in readers {
        r.join().unwrap();
    }
}

/// ffmpeg, or `None` where it is not installed (scripts/test.sh installs it and sets
/// `CAMJOBD_REQUIRE_CLIENTS=1`, so there the test cannot be skipped).
fn ffmpeg() -> Option<&'static str> {
    let found = std::process::Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CAMJOBD_REQUIRE_CLIENTS").is_none(), "ffmpeg is required here but not installed");
        eprintln!("SKIPPED: ffmpeg is not installed (apt-get install ffmpeg)");
    }
    found.then_some("ffmpeg")
}

#[test]
fn ffmpeg_reads_the_stream_with_its_mpjpeg_demuxer() {
    let Some(ffmpeg) = ffmpeg() else { return };
    let cam = synthetic("cam0", json!({"source": {"fps": 30}, "snapshot_interval_ms": 1000}));
    let d = Daemon::start("ffmpeg", json!([cam]), json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    const FRAMES: u64 = 240;
    let (c0, _) = captured(&d, "cam0");
    let out = std::process::Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-f", "mpjpeg", "-i"])
        .arg(format!("http://{}/?action=stream", d.addr))
        .args(["-frames:v", &FRAMES.to_string(), "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    let (c1, dropped) = captured(&d, "cam0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    let decoded = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).count() as u64;
    assert_eq!(decoded, FRAMES, "ffmpeg decoded {decoded} frames; {stderr}");
    // ffmpeg's own start-up is inside the captured count: ask for 90 % of all frames.
    eprintln!("figures: ffmpeg decoded {decoded} frames while {} were captured", c1 - c0);
    assert!(decoded * 10 >= (c1 - c0) * 9, "ffmpeg got {decoded} of {} frames", c1 - c0);
    assert_eq!(dropped, 0);
    assert!(stderr.trim().is_empty(), "ffmpeg complained: {stderr}");
}

#[test]
fn a_slow_reader_is_served_the_newest_frame_each_time_and_never_cut() {
    // 640x480 at 10 fps (about 80 KB a frame) to a client on a 30 KB/s link for 60 s.
    let cam = synthetic(
        "cam0",
        json!({"source": {"kind": "synthetic", "width": 640, "height": 480, "fps": 10}, "snapshot_interval_ms": 1000}),
    );
    let d = Daemon::start("slow-reader", json!([cam]), json!({}));
    d.wait_state("cam0", "RUNNING", 5 * SEC);
    let mut c = StreamClient::open_slow(d.addr, "/stream", 8192, 30_000);
    assert_eq!(c.head.status, 200);
    let (_, d0) = captured(&d, "cam0");
    let t0 = Instant::now();
    let mut lags = Vec::new();
    while t0.elapsed() < 60 * SEC {
        let p = c.next_part();
        // Once the last part's bytes are read, the next part is already under way: how old was
        // its frame when the client got to it? The newest when the server chose it, which
        // was once the client's kernel had the whole last part.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        if c.parts > 1 && p.header("X-Camjobd-State").is_none() {
            lags.push(now - p.timestamp() - p.jpeg.len() as f64 / 30_000.0);
        }
    }
    let (_, d1) = captured(&d, "cam0");
    lags.sort_by(f64::total_cmp);
    let (median, worst) = (lags[lags.len() / 2], lags[lags.len() - 1]);
    println!(
        "figures: {} parts in 60 s at 30 KB/s; lag when reading began: median {median:.2} s, worst {worst:.2} s",
        c.parts
    );
    assert!(c.parts >= 15, "only {} parts in 60 s", c.parts);
    // The kernel holds what this client has not read yet (8 KiB asked, 16 KiB granted): a
    // second at most at 30 KB/s, plus one frame interval and scheduling; never the tens of
    // seconds of a send buffer full of old frames.
    assert!(worst < 2.0, "a part was {worst:.2} s old when the client began it (median {median:.2} s)");
    assert_eq!(d1 - d0, 0, "capture dropped frames");
    assert_eq!(status_http(&d)["streams_active"], 1, "the slow reader was cut");
}
