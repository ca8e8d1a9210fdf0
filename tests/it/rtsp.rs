//! H.264 over RTSP through the binary, against the clients hubs are built on: ffmpeg (Frigate,
//! Home Assistant's stream) over TCP and UDP, GStreamer's rtspsrc, and retina (Moonfire NVR's
//! client, a stack of its own lineage). Plus the server's bounds (max_clients, a client that
//! never reads, 1,000 connections), the token (Digest and Basic), and protocol errors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const FPS: u64 = 30;

/// The tests that count frames take turns: each runs a camera, an encoder and several clients,
/// and on two cores two of them at once would measure the machine, not the server.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A 640x480 synthetic camera at 30 fps with `video` on.
fn video_camera() -> Value {
    synthetic(
        "cam0",
        json!({"source": {"width": 640, "height": 480, "fps": FPS, "quality": 60},
               "snapshot_interval_ms": 1000, "store": {"enabled": false}, "video": {}}),
    )
}

/// Starts camjobd with the video camera, RTSP on a free port; waits for the job to run.
fn start(tag: &str, http: Value, rtsp: Value) -> (Daemon, SocketAddr) {
    let dir = temp_dir(tag);
    let mut cfg = config(&dir, json!([video_camera()]), http);
    cfg["rtsp"] = json!({"bind": "127.0.0.1:0"});
    merge(&mut cfg["rtsp"], rtsp);
    let d = Daemon::builder(dir, &cfg).start();
    let bearer = cfg["http"]["token"].as_str().map(|t| format!("Bearer {t}"));
    let auth: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = request(d.addr, "GET", "/api/status", &auth, b"").json();
        if status["cameras"][0]["job"]["state"] == "RUNNING" {
            let bind = status["rtsp"]["bind"].as_str().unwrap_or_else(|| panic!("no rtsp in {status:#}"));
            return (d, bind.parse().unwrap());
        }
        assert!(Instant::now() < deadline, "{status:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn require(program: &str) -> bool {
    let there = Command::new(program).arg("--version").output().is_ok();
    if !there {
        assert!(std::env::var_os("CAMJOBD_REQUIRE_CLIENTS").is_none(), "{program} is required here but not installed");
        eprintln!("skipped: {program} is not installed");
    }
    there
}

/// ffmpeg reads `secs` of stream time from `url` and decodes it; the frames it decoded, and
/// what it said at `-v error` (a decode error would show there).
fn ffmpeg_frames(url: &str, transport: &str, secs: u64) -> (u64, String) {
    let o = Command::new("timeout")
        .args(["60", "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", transport, "-i", url])
        // The stream's own 90 kHz time base and every frame as it comes: at a guessed 30 fps
        // output rate, two frames a loaded machine delivered 1 ms apart would round to the same
        // time and the null muxer would complain, though the stream's times increase.
        .args(["-t", &secs.to_string(), "-fps_mode", "passthrough", "-enc_time_base", "-1"])
        .args(["-f", "null", "-", "-progress", "pipe:1"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let frames = out.lines().filter_map(|l| l.strip_prefix("frame=")).filter_map(|v| v.trim().parse().ok()).next_back();
    (frames.unwrap_or(0), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// What ffprobe reads from the stream: `codec,width,height` (or what it said instead).
fn probe(url: &str) -> String {
    let o = Command::new("timeout")
        .args(["30", "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v"])
        .args(["-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", url])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if out.is_empty() {
        String::from_utf8_lossy(&o.stderr).into_owned()
    } else {
        out
    }
}

/// GStreamer decodes `n` frames; their count and the span of their timestamps, seconds.
fn gstreamer_frames(url: &str, n: u64) -> (u64, f64, String) {
    let o = Command::new("timeout")
        .args(["60", "gst-launch-1.0", "-v", "rtspsrc", &format!("location={url}"), "protocols=tcp", "latency=0"])
        .args(["!", "rtph264depay", "!", "avdec_h264", "!", "fakesink", "silent=false", &format!("num-buffers={n}")])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    // "last-message = chain   ******* (fakesink0:sink) (460800 bytes, dts: none, pts: 0:00:01.033333333, ..."
    let pts: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("chain") && l.contains("fakesink"))
        .filter_map(|l| l.split("pts: ").nth(1)?.split(',').next().map(str::to_string))
        .filter_map(|t| {
            let mut p = t.split(':');
            let (h, m, s) =
                (p.next()?.parse::<f64>().ok()?, p.next()?.parse::<f64>().ok()?, p.next()?.parse::<f64>().ok()?);
            Some(h * 3600.0 + m * 60.0 + s)
        })
        .collect();
    let span = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    (pts.len() as u64, span, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// What retina saw: frames, the first a keyframe, the size from the parameters, losses.
#[derive(Debug, Default)]
struct Retina {
    frames: u64,
    first_is_keyframe: bool,
    size: (u32, u32),
    loss: u64,
    span_s: f64,
}

/// retina plays `url` over `transport` ("tcp" or "udp") for `secs` of stream time.
fn retina_frames(url: &str, transport: &str, secs: f64, creds: Option<(&str, &str)>) -> Result<Retina, String> {
    use futures::StreamExt;
    use retina::client::{PlayOptions, SessionOptions, SetupOptions, Transport};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let creds = creds.map(|(u, p)| retina::client::Credentials { username: u.into(), password: p.into() });
        let url = url::Url::parse(url).map_err(|e| e.to_string())?;
        let run = async {
            let mut session = retina::client::Session::describe(url, SessionOptions::default().creds(creds))
                .await
                .map_err(|e| e.to_string())?;
            let i = session.streams().iter().position(|s| s.media() == "video").ok_or("no video stream")?;
            let transport: Transport = transport.parse().map_err(|e: retina::Error| e.to_string())?;
            session.setup(i, SetupOptions::default().transport(transport)).await.map_err(|e| e.to_string())?;
            let playing = session.play(PlayOptions::default()).await.map_err(|e| e.to_string())?;
            let mut demuxed = playing.demuxed().map_err(|e| e.to_string())?;
            let mut r = Retina::default();
            let mut first = None;
            while let Some(item) = demuxed.next().await {
                let retina::codec::CodecItem::VideoFrame(f) = item.map_err(|e| e.to_string())? else { continue };
                let t = f.timestamp().elapsed_secs();
                if r.frames == 0 {
                    r.first_is_keyframe = f.is_random_access_point();
                    first = Some(t);
                }
                r.loss += u64::from(f.loss());
                r.frames += 1;
                r.span_s = t - first.unwrap_or(t);
                if r.span_s >= secs {
                    break;
                }
            }
            if let Some(retina::codec::ParametersRef::Video(v)) = demuxed.streams()[i].parameters() {
                r.size = v.pixel_dimensions();
            }
            Ok::<Retina, String>(r)
        };
        tokio::time::timeout(Duration::from_secs(60), run).await.map_err(|_| "retina timed out".to_string())?
    })
}

#[test]
fn ffmpeg_gstreamer_and_retina_decode_every_frame_over_tcp_and_udp() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !(require("ffmpeg") && require("gst-launch-1.0")) {
        return;
    }
    let (d, addr) = start("rtsp-clients", json!({}), json!({}));
    let url = format!("rtsp://{addr}/cam0");
    // The size, as ffprobe reads it from the stream.
    assert_eq!(probe(&url), "h264,640,480");

    let before = d.camera("cam0");
    // All at once: five clients of three lineages on one encoder.
    let (tcp, udp, gst, ret_tcp, ret_udp) = std::thread::scope(|s| {
        let tcp = s.spawn(|| ffmpeg_frames(&url, "tcp", 10));
        let udp = s.spawn(|| ffmpeg_frames(&url, "udp", 10));
        let gst = s.spawn(|| gstreamer_frames(&url, 10 * FPS));
        let rt = s.spawn(|| retina_frames(&url, "tcp", 10.0, None));
        let ru = s.spawn(|| retina_frames(&url, "udp", 10.0, None));
        (tcp.join().unwrap(), udp.join().unwrap(), gst.join().unwrap(), rt.join().unwrap(), ru.join().unwrap())
    });
    let after = d.camera("cam0");
    let want = 10 * FPS * 95 / 100;
    for (name, (frames, errors)) in [("ffmpeg tcp", &tcp), ("ffmpeg udp", &udp)] {
        assert!(*frames >= want, "{name}: {frames} frames of {}; stderr: {errors}", 10 * FPS);
        assert!(errors.trim().is_empty(), "{name} reported: {errors}");
    }
    let (frames, span, err) = &gst;
    assert_eq!(*frames, 10 * FPS, "GStreamer: {err}");
    // 300 frames in at most 300 / 30 / 0.95 s of stream time: at most 5 % missing.
    assert!(*span <= 10.0 / 0.95, "GStreamer's 300 frames span {span:.2} s");
    for (name, r) in [("retina tcp", &ret_tcp), ("retina udp", &ret_udp)] {
        let r = r.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.first_is_keyframe, "{name}: {r:?}");
        assert_eq!(r.size, (640, 480), "{name}: {r:?}");
        assert!(r.frames as f64 >= r.span_s * FPS as f64 * 0.95 && r.span_s >= 10.0, "{name}: {r:?}");
        assert_eq!(r.loss, 0, "{name}: {r:?}");
    }
    // Encode once: the encoder made at most one picture per captured frame, five clients or not.
    let captured =
        after["job"]["frames_captured"].as_u64().unwrap() - before["job"]["frames_captured"].as_u64().unwrap();
    let encoded = after["video"]["frames"].as_u64().unwrap() - before["video"]["frames"].as_u64().unwrap();
    assert!(encoded <= captured && encoded >= captured * 9 / 10, "encoded {encoded} of {captured} captured");
    assert_eq!(after["job"]["frames_dropped"], 0, "{after:#}");
    let metrics = d.get("/metrics").text();
    assert!(metrics.contains("camjobd_h264_frames_total{camera=\"cam0\"}"), "{metrics}");
    assert!(metrics.contains("camjobd_rtsp_packets_total "), "{metrics}");
    // Everyone left: nobody watches, so the encoder rests.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.camera("cam0")["video"]["watchers"] != 0 {
        assert!(Instant::now() < deadline, "{:#}", d.camera("cam0"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // It goes on for 3 s (a client coming straight back finds it warm), then rests.
    std::thread::sleep(Duration::from_millis(3500));
    let idle = d.camera("cam0")["video"]["frames"].as_u64().unwrap();
    let captured = d.camera("cam0")["job"]["frames_captured"].as_u64().unwrap();
    d.wait_job("cam0", Duration::from_secs(5), |j| j["frames_captured"].as_u64().unwrap() > captured + 15);
    assert_eq!(d.camera("cam0")["video"]["frames"], idle, "the encoder worked with nobody watching");
}

/// A bare RTSP client over one TCP connection.
struct Raw {
    s: TcpStream,
    cseq: u32,
    session: Option<String>,
}

/// One response: status, headers, body.
#[derive(Debug)]
struct RtspResp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RtspResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { s, cseq: 0, session: None }
    }

    fn send(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RtspResp {
        self.cseq += 1;
        let mut req = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        if let Some(s) = &self.session {
            req.push_str(&format!("Session: {s}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.s.write_all(req.as_bytes()).unwrap();
        let r = self.response();
        assert_eq!(r.header("CSeq"), Some(self.cseq.to_string().as_str()), "{r:?}");
        if let Some(s) = r.header("Session") {
            self.session = Some(s.split(';').next().unwrap().to_string());
        }
        r
    }

    /// Reads the next response, skipping interleaved packets before it.
    fn response(&mut self) -> RtspResp {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        loop {
            self.s.read_exact(&mut b).unwrap();
            if head.is_empty() && b[0] == b'$' {
                self.packet_after_dollar();
                continue;
            }
            head.push(b[0]);
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8(head).unwrap();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        self.s.read_exact(&mut body).unwrap();
        RtspResp { status, headers, body: String::from_utf8(body).unwrap() }
    }

    /// The rest of an interleaved packet whose `$` was read: (channel, payload).
    fn packet_after_dollar(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 3];
        self.s.read_exact(&mut h).unwrap();
        let mut p = vec![0; usize::from(u16::from_be_bytes([h[1], h[2]]))];
        self.s.read_exact(&mut p).unwrap();
        (h[0], p)
    }

    /// The next interleaved packet.
    fn packet(&mut self) -> (u8, Vec<u8>) {
        let mut d = [0u8; 1];
        self.s.read_exact(&mut d).unwrap();
        assert_eq!(d[0], b'$', "an interleaved packet");
        self.packet_after_dollar()
    }

    /// DESCRIBE, SETUP over TCP, PLAY: the PLAY response.
    fn play(&mut self, url: &str) -> RtspResp {
        let d = self.send("DESCRIBE", url, &[("Accept", "application/sdp")]);
        assert_eq!(d.status, 200, "{d:?}");
        let t =
            self.send("SETUP", &format!("{url}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
        assert_eq!(t.status, 200, "{t:?}");
        let r = self.send("PLAY", url, &[]);
        assert_eq!(r.status, 200, "{r:?}");
        r
    }
}

#[test]
fn the_server_speaks_rtsp_and_refuses_what_it_cannot_do() {
    let (_d, addr) = start("rtsp-protocol", json!({}), json!({"udp": false}));
    let url = format!("rtsp://{addr}/cam0");
    let mut c = Raw::connect(addr);
    let o = c.send("OPTIONS", &url, &[]);
    assert_eq!(o.status, 200);
    assert!(o.header("Public").unwrap().contains("GET_PARAMETER"), "{o:?}");
    assert_eq!(c.send("DESCRIBE", &format!("rtsp://{addr}/nope"), &[]).status, 404);
    assert_eq!(c.send("PLAY", &url, &[]).status, 455, "PLAY before SETUP");
    let d = c.send("DESCRIBE", &url, &[]);
    assert_eq!((d.status, d.header("Content-Type")), (200, Some("application/sdp")), "{d:?}");
    assert!(d.body.contains("a=rtpmap:96 H264/90000") && d.body.contains("sprop-parameter-sets="), "{}", d.body);
    assert!(d.body.contains("profile-level-id=42"), "baseline by default: {}", d.body);
    // Multicast, and UDP with rtsp.udp off: 461, on which clients fall back to TCP.
    let setup = format!("{url}/trackID=0");
    assert_eq!(c.send("SETUP", &setup, &[("Transport", "RTP/AVP;multicast")]).status, 461);
    assert_eq!(c.send("SETUP", &setup, &[("Transport", "RTP/AVP;unicast;client_port=5000-5001")]).status, 461);
    let t = c.send("SETUP", &setup, &[("Transport", "RTP/AVP/TCP;unicast;interleaved=4-5")]);
    assert_eq!(t.status, 200, "{t:?}");
    assert!(t.header("Transport").unwrap().starts_with("RTP/AVP/TCP;unicast;interleaved=4-5;ssrc="), "{t:?}");
    assert!(t.header("Session").unwrap().ends_with(";timeout=60"), "{t:?}");
    let p = c.send("PLAY", &url, &[]);
    assert_eq!(p.status, 200, "{p:?}");
    // The first packet is the one RTP-Info names, on the channel asked for, and starts with
    // the SPS of a keyframe.
    let info = p.header("RTP-Info").unwrap().to_string();
    let seq: u16 = info.split("seq=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    let rtptime: u32 = info.split("rtptime=").nth(1).unwrap().parse().unwrap();
    let (ch, pkt) = c.packet();
    assert_eq!(ch, 4);
    assert_eq!(u16::from_be_bytes([pkt[2], pkt[3]]), seq, "{info}");
    assert_eq!(u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]), rtptime, "{info}");
    assert_eq!(pkt[12] & 0x1F, 7, "an SPS first");
    assert_eq!(c.send("GET_PARAMETER", &url, &[]).status, 200, "keep-alive while playing");
    // A SETUP within the session keeps its id; a session that is not ours is 454; RTSP/2.0 505.
    let id = c.session.clone().unwrap();
    let again = c.send("SETUP", &setup, &[("Transport", "RTP/AVP/TCP;unicast;interleaved=4-5")]);
    assert_eq!((again.status, c.session.as_deref()), (200, Some(id.as_str())), "{again:?}");
    assert_eq!(c.send("PAUSE", &url, &[("Session", "NOT-OURS")]).status, 454);
    assert_eq!(Raw::connect(addr).send("PAUSE", &url, &[]).status, 455, "PAUSE without a session");
    assert_eq!(c.send("TEARDOWN", &url, &[]).status, 200);
    let mut v2 = TcpStream::connect(addr).unwrap();
    v2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    v2.write_all(format!("OPTIONS {url} RTSP/2.0\r\nCSeq: 1\r\n\r\n").as_bytes()).unwrap();
    let mut got = String::new();
    let _ = v2.read_to_string(&mut got);
    assert!(got.starts_with("RTSP/1.0 505 "), "{got:?}");
    // A request over 16 KiB: 413, and the connection closes.
    let mut big = TcpStream::connect(addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = big
        .write_all(format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20 << 10)).as_bytes());
    let mut got = String::new();
    let _ = big.read_to_string(&mut got);
    assert!(got.starts_with("RTSP/1.0 413 "), "{got:?}");
    // A request that is not RTSP: 400, and the connection closes.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    junk.write_all(b"\x16\x03\x01 not rtsp at all\r\n\r\n").unwrap();
    let mut got = String::new();
    let _ = junk.read_to_string(&mut got);
    assert!(got.starts_with("RTSP/1.0 400 "), "{got:?}");
}

#[test]
fn clients_cannot_force_every_frame_to_be_a_keyframe_nor_hold_places_idle() {
    let (d, addr) = start("rtsp-abuse", json!({}), json!({"max_clients": 3}));
    let url = format!("rtsp://{addr}/cam0");
    // One viewer, and a connection that PLAYs again and again: keyframes asked for by
    // clients come at most once a second, so the stream is not all keyframes.
    let mut viewer = Raw::connect(addr);
    viewer.play(&url);
    let k0 = d.camera("cam0")["video"]["keyframes"].as_u64().unwrap();
    let t0 = Instant::now();
    let mut again = Raw::connect(addr);
    again.play(&url);
    for _ in 0..40 {
        assert_eq!(again.send("PLAY", &url, &[]).status, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let forced = d.camera("cam0")["video"]["keyframes"].as_u64().unwrap() - k0;
    assert!((forced as f64) <= secs + 2.0, "{forced} keyframes in {secs:.1} s of repeated PLAYs");
    drop((viewer, again));
    let connections = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.get("/api/status").json()["rtsp"]["connections"] != n {
            assert!(Instant::now() < deadline, "not {n} connections: {}", d.get("/api/status").json()["rtsp"]);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    connections(0);
    // Connections that set up no session give their place back (20 s), however they trickle.
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    connections(3);
    let mut trickle = idle.iter().collect::<Vec<_>>();
    let t0 = Instant::now();
    loop {
        let mut probe = Raw::connect(addr);
        if probe.send("OPTIONS", &url, &[]).status == 200 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "idle connections still hold every place");
        for s in &mut trickle {
            let _ = s.write_all(b"O");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(t0.elapsed() >= Duration::from_secs(15), "places were free at once: {:?}", t0.elapsed());
}

#[test]
fn the_token_is_asked_for_by_digest_and_basic() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require("ffmpeg") {
        return;
    }
    let token = "s3cret-T0KEN";
    let (_d, addr) = start("rtsp-auth", json!({"token": token, "protect_reads": true}), json!({}));
    let url = format!("rtsp://{addr}/cam0");
    let mut c = Raw::connect(addr);
    assert_eq!(c.send("OPTIONS", &url, &[]).status, 200, "OPTIONS is open (clients probe with it)");
    let r = c.send("DESCRIBE", &url, &[]);
    assert_eq!(r.status, 401);
    let challenges: Vec<&str> =
        r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("WWW-Authenticate")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(challenges.len(), 2, "{r:?}");
    assert!(
        challenges[0].starts_with("Digest realm=\"camjobd\", nonce=\""),
        "Digest first (go2rtc reads only the first): {r:?}"
    );
    assert!(challenges[1].starts_with("Basic realm=\"camjobd\""), "{r:?}");
    // Basic, any user name, the token as the password.
    use base64::Engine as _;
    let basic = |p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("go2rtc:{p}")));
    assert_eq!(Raw::connect(addr).send("DESCRIBE", &url, &[("Authorization", &basic("wrong"))]).status, 401);
    assert_eq!(Raw::connect(addr).send("DESCRIBE", &url, &[("Authorization", &basic(token))]).status, 200);
    // Guessing costs a connection every three tries.
    let mut guesser = Raw::connect(addr);
    for _ in 0..2 {
        assert_eq!(guesser.send("DESCRIBE", &url, &[("Authorization", &basic("guess"))]).status, 401);
    }
    assert_eq!(guesser.send("DESCRIBE", &url, &[("Authorization", &basic("guess"))]).status, 401);
    let mut rest = Vec::new();
    assert_eq!(
        guesser.s.read_to_end(&mut rest).unwrap_or(0),
        0,
        "the connection is closed after the third wrong token"
    );
    // ffmpeg answers the Digest challenge; retina too.
    let with = format!("rtsp://frigate:{token}@{addr}/cam0");
    let (frames, err) = ffmpeg_frames(&with, "tcp", 2);
    assert!(frames >= 2 * FPS * 9 / 10, "{frames} frames: {err}");
    let (frames, err) = ffmpeg_frames(&format!("rtsp://frigate:nope@{addr}/cam0"), "tcp", 2);
    assert!(frames == 0 && err.contains("401"), "{frames} frames: {err}");
    let r = retina_frames(&url, "tcp", 1.0, Some(("nvr", token))).unwrap();
    assert!(r.frames >= FPS * 9 / 10, "{r:?}");
    assert!(retina_frames(&url, "tcp", 1.0, Some(("nvr", "nope"))).is_err());
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

#[test]
fn sixteen_clients_and_one_that_never_reads() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require("ffmpeg") {
        return;
    }
    let (d, addr) = start("rtsp-many", json!({}), json!({"max_clients": 16}));
    let url = format!("rtsp://{addr}/cam0");
    // A client that plays and then never reads: its socket fills and stays full.
    let mut stalled = Raw::connect(addr);
    stalled.play(&url);
    std::thread::sleep(Duration::from_millis(200));
    let before = d.camera("cam0");
    // 15 more that take the stream as it comes (no decoding: the server is what is measured).
    let counts: Vec<(u64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..15)
            .map(|_| {
                s.spawn(|| {
                    let o = Command::new("timeout")
                        .args(["60", "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", "tcp"])
                        .args(["-i", &url, "-t", "8", "-c", "copy", "-f", "null", "-", "-progress", "pipe:1"])
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    let out = String::from_utf8_lossy(&o.stdout);
                    let n = out
                        .lines()
                        .filter_map(|l| l.strip_prefix("frame=")?.trim().parse().ok())
                        .next_back()
                        .unwrap_or(0);
                    (n, String::from_utf8_lossy(&o.stderr).into_owned())
                })
            })
            .collect();
        // The 17th is refused while they play.
        std::thread::sleep(Duration::from_secs(3));
        let mut extra = Raw::connect(addr);
        assert_eq!(extra.send("OPTIONS", &url, &[]).status, 503, "beyond max_clients");
        // The budget counted what the process runs and takes with every place taken.
        let e = d.get("/api/status").json()["budget"]["estimate"].clone();
        assert_eq!(e["threads"].as_u64().unwrap() as usize, d.threads(), "{e:#}");
        let rss = rss_kib(d.pid()) * 1024;
        assert!(rss <= e["max_bytes"].as_u64().unwrap(), "VmRSS {rss} above the estimate: {e:#}");
        println!(
            "figures: 16 RTSP clients: VmRSS {} KiB, estimate at most {} KiB",
            rss >> 10,
            e["max_bytes"].as_u64().unwrap() >> 10
        );
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (n, err) in &counts {
        assert!(*n >= 8 * FPS * 95 / 100, "a client got {n} frames of {}: {err}", 8 * FPS);
    }
    let after = d.camera("cam0");
    assert_eq!(after["job"]["frames_dropped"], 0, "capture lost frames: {after:#}");
    let captured =
        after["job"]["frames_captured"].as_u64().unwrap() - before["job"]["frames_captured"].as_u64().unwrap();
    let encoded = after["video"]["frames"].as_u64().unwrap() - before["video"]["frames"].as_u64().unwrap();
    assert!(
        encoded <= captured && encoded >= captured * 9 / 10,
        "encoded {encoded} of {captured} captured: once, not per client"
    );
    let status = d.get("/api/status").json();
    assert!(status["rtsp"]["refused"].as_u64().unwrap() >= 1, "{status:#}");
    // The client that never reads is let go once its writes have waited 10 s.
    stalled.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let cut = loop {
        match stalled.s.read(&mut sink) {
            Ok(0) | Err(_) => break true,
            Ok(_) => {}
        }
    };
    assert!(cut);
}

#[test]
fn a_client_that_pauses_skips_ahead_and_a_thousand_connections_leave_nothing_behind() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (d, addr) = start("rtsp-cycles", json!({}), json!({"max_clients": 16}));
    let url = format!("rtsp://{addr}/cam0");
    // A client that pauses longer than the ring holds skips to a keyframe, and goes on.
    let mut pauser = Raw { s: connect_with_rcvbuf(addr, Some(16 << 10)), cseq: 0, session: None };
    pauser.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    pauser.play(&url);
    std::thread::sleep(Duration::from_secs(7));
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.get("/api/status").json()["rtsp"]["skipped"] == 0 {
        assert!(Instant::now() < deadline, "no skip counted");
        pauser.packet();
    }
    for _ in 0..100 {
        pauser.packet();
    }
    drop(pauser);

    // 1,000 connections that play and leave: threads, descriptors and RSS as they were. Four
    // at a time: a connection closed with data unread is noticed at the next frame's write, so
    // ten that cycle faster than a frame would briefly hold 16 places.
    let cycle = |n: usize| {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..n / 4 {
                        let mut c = Raw::connect(addr);
                        c.play(&url);
                        c.packet();
                    }
                });
            }
        })
    };
    cycle(100);
    let settle = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.get("/api/status").json()["rtsp"]["connections"] != 0 {
            assert!(Instant::now() < deadline, "connections stay open");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    settle();
    let (threads, files, rss) = (d.threads(), fds(d.pid()), rss_kib(d.pid()));
    cycle(1000);
    settle();
    // The last status request's socket, or a connection's counted end, can be a moment ahead of
    // the close itself: a leak stays, so wait a bounded while for the counts to come back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (d.threads() > threads || fds(d.pid()) > files) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.threads() <= threads, "threads: {} after, {threads} before", d.threads());
    assert!(fds(d.pid()) <= files, "file descriptors: {} after, {files} before", fds(d.pid()));
    let grown = rss_kib(d.pid()).saturating_sub(rss);
    assert!(grown <= 1024, "RSS grew {grown} KiB over 1,000 connections");
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn a_describe_of_one_camera_does_not_keep_its_encoder_for_another() {
    let dir = temp_dir("rtsp-two");
    let mut other = video_camera();
    other["name"] = json!("cam1");
    let mut cfg = config(&dir, json!([video_camera(), other]), json!({}));
    cfg["rtsp"] = json!({"bind": "127.0.0.1:0"});
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam1", "RUNNING", Duration::from_secs(10));
    let addr: SocketAddr = d.get("/api/status").json()["rtsp"]["bind"].as_str().unwrap().parse().unwrap();
    let mut c = Raw::connect(addr);
    assert_eq!(c.send("DESCRIBE", &format!("rtsp://{addr}/cam0"), &[]).status, 200);
    // SETUP and PLAY of cam1 straight after (no DESCRIBE of it).
    let cam1 = format!("rtsp://{addr}/cam1");
    let t = c.send("SETUP", &format!("{cam1}/trackID=0"), &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]);
    assert_eq!(t.status, 200, "{t:?}");
    let r = c.send("PLAY", &cam1, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    c.packet();
    // cam1 is watched; cam0's encoder rests after its 3 s.
    assert_eq!(d.camera("cam1")["video"]["watchers"], 1);
    assert_eq!(d.camera("cam0")["video"]["watchers"], 0, "the DESCRIBE's watch went to cam0's encoder");
}

#[test]
fn a_udp_client_whose_port_closed_is_let_go() {
    let (d, addr) = start("rtsp-udp-gone", json!({}), json!({}));
    let url = format!("rtsp://{addr}/cam0");
    // A port pair nobody listens on (bound, then closed).
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port() & !1;
    let mut c = Raw::connect(addr);
    assert_eq!(c.send("DESCRIBE", &url, &[]).status, 200);
    let transport = format!("RTP/AVP;unicast;client_port={port}-{}", port + 1);
    let t = c.send("SETUP", &format!("{url}/trackID=0"), &[("Transport", &transport)]);
    assert_eq!(t.status, 200, "{t:?}");
    assert_eq!(c.send("PLAY", &url, &[]).status, 200);
    // Refused for 150 frames in a row (5 s at 30 fps): the session ends, the connection closes.
    c.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let _ = c.s.read_to_end(&mut rest);
    assert!(t0.elapsed() < Duration::from_secs(15), "still open after {:?}", t0.elapsed());
    let r = d.get("/api/status").json()["rtsp"].clone();
    assert!(r["packets_dropped"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn configs_that_cannot_be_served_are_refused_with_their_key() {
    let dir = temp_dir("rtsp-config");
    let check = |doc: Value| {
        std::fs::write(dir.path().join("c.json"), doc.to_string()).unwrap();
        let o = check_config(&dir.path().join("c.json"));
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let cam = video_camera();
    let (code, err) = check(json!({"cameras": [cam], "rtsp": {"bind": "0.0.0.0:8554"}}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("rtsp.bind: 0.0.0.0:8554 lets anyone on the network watch the cameras"), "{err}");
    let (code, err) = check(
        json!({"cameras": [cam], "rtsp": {"bind": "0.0.0.0:8554"}, "http": {"token": "abc", "protect_reads": true}}),
    );
    assert_eq!(code, Some(0), "{err}");
    let mut bad = video_camera();
    bad["video"]["bitrate_kbps"] = json!(60_000);
    let (code, err) = check(json!({"cameras": [bad]}));
    assert!(code == Some(2) && err.contains("cameras[0].video.bitrate_kbps"), "{err}");
    let mut source = video_camera();
    source["video"]["encoder"] = json!("source");
    let (code, err) = check(json!({"cameras": [source]}));
    assert!(code == Some(2) && err.contains("cameras[0].video.encoder"), "{err}");
}

#[test]
fn a_camera_that_delivers_jpegs_is_decoded_for_h264() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require("ffmpeg") {
        return;
    }
    // An MJPEG pipe camera (what rpicam-vid --codec mjpeg and a USB MJPG camera deliver) at
    // 320x240, 30 fps: not the 640x480 a pipe is assumed to have.
    let dir = temp_dir("rtsp-jpeg");
    let cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
        .iter()
        .chain(&["-f", "mjpeg", "-q:v", "5", "-"])
        .collect::<Vec<_>>();
    let cam =
        json!({"name": "pcam", "source": {"kind": "pipe", "command": cmd}, "store": {"enabled": false}, "video": {}});
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["rtsp"] = json!({"bind": "127.0.0.1:0"});
    let d = Daemon::builder(dir, &cfg).start();
    d.wait_state("pcam", "RUNNING", Duration::from_secs(10));
    let addr = d.get("/api/status").json()["rtsp"]["bind"].as_str().unwrap().to_string();
    let url = format!("rtsp://{addr}/pcam");
    assert_eq!(probe(&url), "h264,320,240");
    let (frames, err) = ffmpeg_frames(&url, "tcp", 5);
    assert!(frames >= 5 * FPS * 95 / 100, "{frames} frames: {err}");
    assert!(err.trim().is_empty(), "{err}");
    let v = d.camera("pcam")["video"].clone();
    assert!(v["encoder"].as_str().unwrap().contains("from the camera's JPEGs"), "{v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
}

#[test]
fn an_encoder_asked_for_by_name_that_the_board_lacks_fails_the_service_saying_what_to_do() {
    // No V4L2 M2M H.264 encoder here (and /dev/null is no V4L2 device): asked for by name,
    // that is the service's failure (exit 1), not a stream that quietly never comes.
    let dir = temp_dir("rtsp-m2m");
    let mut cam = video_camera();
    cam["video"]["encoder"] = json!("v4l2m2m");
    cam["video"]["device"] = json!("/dev/null");
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["rtsp"] = json!({"bind": "127.0.0.1:0"});
    let mut d = Daemon::builder(dir, &cfg).start();
    let status = d.wait_exit(Duration::from_secs(10)).expect("camjobd went on without its encoder");
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(d.dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("camera cam0: video.encoder is \"v4l2m2m\" but "), "{log}");
    assert!(log.contains("use \"auto\" to fall back to software"), "{log}");
}
