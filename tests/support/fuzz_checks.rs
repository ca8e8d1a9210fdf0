//! The properties the fuzz targets check, shared (with `#[path]`) by `fuzz/fuzz_targets/*.rs`,
//! which libFuzzer drives, and `tests/fuzz_regressions.rs`, which replays the seed corpus and
//! every saved crash on each `cargo test`.
// Each fuzz target uses one check; tests/structure.rs checks that every one is used.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use camjobd::capture::mjpeg::{Next, Splitter};
use camjobd::config::Config;
use camjobd::export::Exports;
use camjobd::http::routes::Api;
use camjobd::http::server::{answer, Handler};
use camjobd::status::Shared;

fn api(protected: bool) -> Arc<Api> {
    static APIS: OnceLock<[Arc<Api>; 2]> = OnceLock::new();
    let apis = APIS.get_or_init(|| {
        let make = |protected: bool| {
            let mut config = Config::default();
            let dir = format!("camjobd-fuzz-{}-{protected}", std::process::id());
            config.storage.dir = std::env::temp_dir().join(dir);
            if protected {
                config.http.token = Some("fuzz-token".into());
                config.http.protect_reads = true;
            }
            // Nobody serves the command channel: start and stop answer 503 at once.
            let (tx, _) = crossbeam_channel::bounded(1);
            let shared = Arc::new(Shared::new(config, tx));
            let exports = Arc::new(Exports::open(Arc::clone(&shared)).expect("exports directory"));
            Arc::new(Api::new(shared, exports, camjobd::shutdown::Stop::new()))
        };
        [make(false), make(true)]
    });
    Arc::clone(&apis[usize::from(protected)])
}

/// Raw bytes as an HTTP request (parsed as hyper parses it), through the function the server
/// runs for every request (limits, then the API's router): the answer is one response with a
/// known status and a content type wherever it has a body, and nothing panics. The first
/// byte picks the API with a token and `protect_reads` (odd) or the open one (even).
pub fn http_request(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else { return };
    let api = api(first & 1 == 1);
    let config = Config::default().http;
    if let Some((status, headers)) = answer(input, api as Arc<dyn Handler>, &config) {
        assert!((200..600).contains(&status), "{status}");
        if !matches!(status, 204 | 304) {
            assert!(headers.contains_key("content-type"), "{status} without a content type: {headers:?}");
        }
        if status == 401 {
            assert!(headers.contains_key("www-authenticate"), "{headers:?}");
        }
        // Framing is hyper's; only a HEAD answer states GET's length itself.
        if let Some(v) = headers.get("content-length") {
            assert!(v.to_str().is_ok_and(|v| v.parse::<u64>().is_ok()), "{headers:?}");
        }
        assert!(!headers.contains_key("transfer-encoding"), "{headers:?}");
    }
}

/// Any text as a config file: an error with a message (never a panic), or a config that
/// validates, prints (`--check-config`) and parses again to the same settings.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_json(text) {
        Ok(config) => {
            config.validate().expect("a parsed config validates");
            let printed = serde_json::to_string(&config).expect("a config prints");
            let again =
                Config::from_json(&printed).unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
            // The token is printed redacted; everything else survives the round trip.
            assert_eq!(again.cameras, config.cameras);
            assert_eq!(again.exports, config.exports);
            assert_eq!(again.storage, config.storage);
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
}

/// Hands out the input in reads whose sizes come from the input's first bytes.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    n: usize,
}

impl std::io::Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self.sizes.get(self.n % self.sizes.len().max(1)).map_or(4096, |&s| usize::from(s) * 37 + 1);
        self.n += 1;
        let k = want.min(buf.len()).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

/// Any byte stream, in reads of any size, through the MJPEG splitter: every frame is SOI..EOI
/// within the size limit, it never yields more bytes than it was given, and it ends.
/// Byte 0 picks the limit, bytes 1..5 the read sizes; the rest is the stream.
pub fn mjpeg(data: &[u8]) {
    let Some((&max_sel, rest)) = data.split_first() else { return };
    let (sizes, stream) = rest.split_at(rest.len().min(4));
    let max = 64 + usize::from(max_sel) * 64;
    let mut s = Splitter::new(max);
    let mut r = Chunked { data: stream, sizes, n: 0 };
    let mut out = 0usize;
    loop {
        match s.next() {
            Next::Frame { data: f, .. } => {
                assert!(f.len() <= max, "frame of {} bytes over the {max} limit", f.len());
                assert!(f.starts_with(&[0xFF, 0xD8]) && f.ends_with(&[0xFF, 0xD9]), "not SOI..EOI");
                out += f.len();
                assert!(out <= stream.len());
            }
            Next::NeedMore => {
                if s.fill_from(&mut r).expect("reads from memory do not fail") == 0 {
                    break;
                }
            }
            Next::Dropped(_) => {}
        }
    }
}

/// An RTSP server in this process for [`rtsp_request`]: one camera whose ring a thread fills
/// with a small keyframe every 5 ms (so DESCRIBE and PLAY find what they wait for at once).
fn rtsp_server() -> (std::net::SocketAddr, Arc<camjobd::rtsp::Stats>) {
    static SERVER: OnceLock<(std::net::SocketAddr, Arc<camjobd::rtsp::Stats>)> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            use camjobd::h264::ring::AuMeta;
            let video = Arc::new(camjobd::h264::stage::Video::new(1 << 20));
            let feed = Arc::clone(&video);
            std::thread::spawn(move || {
                let au = [
                    &[0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80][..],
                    &[0, 0, 0, 1, 0x68, 0xCE, 0x3C, 0x80][..],
                    &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33][..],
                ]
                .concat();
                loop {
                    let now = camjobd::clock::mono_ms();
                    feed.ring.push(&au, AuMeta { keyframe: true, captured_mono_ms: now, ..AuMeta::default() });
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            let addr = listener.local_addr().expect("bound");
            let stats = Arc::new(camjobd::rtsp::Stats::default());
            let cameras = vec![camjobd::rtsp::Camera { name: "cam0".into(), video }];
            // A token, so that the Digest and Basic parsers are reached too (the token is in
            // the seeds).
            let token = Some("fuzz-token".to_string());
            let stop = camjobd::shutdown::Stop::new();
            std::mem::forget(camjobd::rtsp::start(listener, cameras, 64, token, true, Arc::clone(&stats), stop));
            (addr, stats)
        })
        .clone()
}

/// Raw bytes sent to the RTSP server as one client, which then closes its side: every answer
/// is an RTSP/1.0 response with a status the server uses and the request's CSeq framing, or
/// an interleaved packet; the server closes the connection in bounded time; no connection's
/// task panics.
pub fn rtsp_request(data: &[u8]) {
    use std::io::{Read, Write};
    let (addr, stats) = rtsp_server();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    // The server may close first (a bad request): the write may then fail, which is fine.
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let read = s.take(64 << 20).read_to_end(&mut out);
    assert!(
        !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the server did not close within 10 s"
    );
    let mut rest = &out[..];
    while !rest.is_empty() {
        if rest[0] == b'$' {
            assert!(rest.len() >= 4, "a cut interleaved header");
            let n = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            assert!(rest.len() >= 4 + n, "a cut interleaved packet");
            rest = &rest[4 + n..];
            continue;
        }
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole response head") + 4;
        let head = std::str::from_utf8(&rest[..end]).expect("an ASCII head");
        let status: u16 =
            head.strip_prefix("RTSP/1.0 ").and_then(|h| h.get(..3)).and_then(|c| c.parse().ok()).expect(head);
        assert!([200, 400, 401, 404, 413, 454, 455, 459, 461, 501, 503, 505].contains(&status), "{head}");
        assert!(head.contains("\r\nCSeq: "), "{head}");
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse::<usize>().expect("a length"));
        assert!(rest.len() >= end + len, "a cut body");
        rest = &rest[end + len..];
    }
    assert_eq!(stats.panics.load(std::sync::atomic::Ordering::Relaxed), 0, "a connection's task panicked");
}

/// An API with the real WebRTC thread (one camera with video, on a free UDP port) for
/// [`whep`]; at most 4 sessions, so that offers that are accepted stay bounded.
fn whep_api() -> Arc<Api> {
    static API: OnceLock<Arc<Api>> = OnceLock::new();
    Arc::clone(API.get_or_init(|| {
        let mut config = Config::default();
        config.storage.dir = std::env::temp_dir().join(format!("camjobd-fuzz-whep-{}", std::process::id()));
        let (tx, _) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared::new(config, tx));
        let exports = Arc::new(Exports::open(Arc::clone(&shared)).expect("exports directory"));
        let cameras = shared.webrtc_cameras();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
        let settings = camjobd::webrtc::Settings {
            cameras,
            camera_count: shared.cameras.len(),
            socket,
            max_sessions: 4,
            beat: Box::new(|| {}),
        };
        let stop = camjobd::shutdown::Stop::new();
        let (worker, handle) = camjobd::webrtc::start(settings, Arc::clone(&shared.webrtc), stop).expect("webrtc");
        std::mem::forget(worker);
        Arc::new(Api::new(shared, exports, camjobd::shutdown::Stop::new()).with_webrtc(handle))
    }))
}

/// Raw bytes as a WHEP body: an SDP offer POSTed to `/api/cameras/cam0/whep` (first byte
/// even) or a trickle body PATCHed to a session (odd), through the server's layers and the
/// real WebRTC thread. An offer is answered 201 (`application/sdp`, `Location`, `ETag`; then
/// deleted: 200) or refused 400 with a JSON reason (503 `busy` while the sessions are full; the
/// thread never dies: str0m's panics on an offer are caught); a
/// trickle body is 400 with a reason, or reaches the session lookup (404: none such).
/// `parse_frag` never panics and bounds what it returns.
pub fn whep(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else { return };
    let api = whep_api();
    let config = Config::default().http;
    let ask = |method: &str, path: &str, ctype: &str, body: &[u8]| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let req = [head.as_bytes(), body].concat();
        answer(&req, Arc::clone(&api) as Arc<dyn Handler>, &config).expect("a well-formed request")
    };
    if first & 1 == 0 {
        let (status, headers) = ask("POST", "/api/cameras/cam0/whep", "application/sdp", body);
        let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        match status {
            201 => {
                assert_eq!(ctype, "application/sdp", "{headers:?}");
                assert!(headers.contains_key("etag"), "{headers:?}");
                let location = headers.get("location").and_then(|v| v.to_str().ok()).expect("a Location");
                assert!(location.starts_with("/api/cameras/cam0/whep/"), "{location}");
                assert_eq!(ask("DELETE", location, "text/plain", b"").0, 200, "{location}");
            }
            400 => assert!(ctype.starts_with("application/json"), "{status} {headers:?}"),
            // Only `busy` (sessions full): a dead WebRTC thread would answer `shutting_down`,
            // which has no Retry-After.
            503 => assert!(headers.contains_key("retry-after"), "the WebRTC thread is gone: {headers:?}"),
            _ => panic!("an offer answered {status}: {headers:?}"),
        }
    } else {
        if let Ok(text) = std::str::from_utf8(body) {
            if let Ok(frag) = camjobd::webrtc::parse_frag(text) {
                assert!(frag.candidates.len() + frag.skipped <= camjobd::webrtc::frag::MAX_CANDIDATES);
            }
        }
        let path = "/api/cameras/cam0/whep/0123456789abcdef0123456789abcdef";
        let (status, _) = ask("PATCH", path, "application/trickle-ice-sdpfrag", body);
        assert!([400, 404].contains(&status), "a trickle body answered {status}");
    }
}
