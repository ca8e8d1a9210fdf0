//! One RTSP connection: its requests (OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, GET_PARAMETER,
//! TEARDOWN), its session, and the RTP and RTCP it sends interleaved on the same socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtsp_types::headers::{RtpLowerTransport, RtpProfile, Transport, Transports, CSEQ, SESSION};
use rtsp_types::{Message, Method, ParseError, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Ctx, Open, SESSION_TIMEOUT};
use crate::h264::ring::{AuMeta, Missing};
use crate::h264::rtp;
use crate::h264::stage::{committed, Video, Watch};
use crate::shutdown::Stop;

/// Largest request head and body kept while it arrives; a longer one ends the connection.
const MAX_REQUEST: usize = 16 << 10;
/// A connection must have set up a session this long after it was accepted.
const SETUP_WITHIN: Duration = Duration::from_secs(20);
/// Wrong credentials this many times end the connection (guessing the token costs a
/// connection every few tries).
const MAX_REFUSED: u32 = 3;
/// A UDP session whose client port refused this many access units in a row ends (the client
/// is gone without a TEARDOWN): five seconds at 30 fps.
const MAX_REFUSED_UNITS: u32 = 150;
/// A PLAY starts at a keyframe captured this recently rather than asking for a new one.
const FRESH_KEYFRAME_MS: u64 = 300;
/// How long a PLAY waits for the keyframe the client starts at.
const KEYFRAME_WAIT: Duration = Duration::from_secs(5);
/// How long a DESCRIBE waits for the stream's parameter sets (the encoder's first keyframe).
const PARAMETERS_WAIT: Duration = Duration::from_secs(5);
/// A write the client takes nothing of for this long ends the connection.
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// The kernel's send buffer of an RTSP connection.
const SEND_BUFFER: usize = 128 << 10;
/// Sender reports go out this often.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// What the server can do, for OPTIONS (clients choose their keep-alive from it).
const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER";

/// Answers a connection beyond `max_clients` with 503 and closes it (bounded in time).
pub(super) async fn refuse(mut sock: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        let n = sock.read(&mut buf).await?;
        let cseq = Message::<Vec<u8>>::parse(&buf[..n]).ok().and_then(|(m, _)| match m {
            Message::Request(r) => r.header(&CSEQ).map(|v| v.as_str().to_string()),
            _ => None,
        });
        let head = format!(
            "RTSP/1.0 503 Service Unavailable\r\nCSeq: {}\r\nRetry-After: 5\r\n\r\n",
            one_line(cseq.as_deref().unwrap_or("0"))
        );
        sock.write_all(head.as_bytes()).await
    })
    .await;
}

/// A session's RTP: its numbering, where it is in the camera's ring, its buffers.
struct Session {
    id: String,
    camera: usize,
    video: Arc<Video>,
    /// Where its packets go.
    transport: Carrier,
    stream: rtp::Stream,
    /// RTP time of monotonic millisecond 0 (random, per session).
    rtp_base: u32,
    /// The next access unit to send; `None` while waiting for a keyframe.
    next: Option<u64>,
    /// The last access unit sent or skipped (0: none).
    last: u64,
    playing: bool,
    /// Keeps the encoder running while the session exists.
    _watch: Watch,
    /// One access unit, and its packets as they go out; allocated at SETUP, never grown.
    au: Vec<u8>,
    out: Vec<u8>,
    reported: Instant,
}

/// How a session's packets travel.
enum Carrier {
    /// Interleaved in the RTSP connection on these channels (RTP, RTCP).
    Tcp(u8, u8),
    /// UDP from the server's own port pair to the RTSP peer's address only.
    Udp(Box<UdpPair>),
}

/// A UDP session's sockets (RTP on an even port, RTCP on the next) and the client's ports.
struct UdpPair {
    /// Connected to the client's ports: only the client's packets are received, and a closed
    /// port is reported (ICMP unreachable comes back as `ECONNREFUSED`).
    rtp: tokio::net::UdpSocket,
    rtcp: tokio::net::UdpSocket,
    /// Access units in a row that the client's port refused.
    refused: u32,
}

impl UdpPair {
    /// Binds a port pair on `local` for a client at `peer` listening on `client_ports`.
    fn bind(local: std::net::IpAddr, peer: std::net::IpAddr, client_ports: (u16, u16)) -> std::io::Result<UdpPair> {
        let mut last = None;
        // RFC 3550: RTP on an even port, RTCP on the next; the kernel picks, we retry when odd
        // or when the next is taken.
        for _ in 0..32 {
            let rtp = std::net::UdpSocket::bind((local, 0))?;
            let port = rtp.local_addr()?.port();
            if port % 2 == 1 || port == u16::MAX {
                continue;
            }
            match std::net::UdpSocket::bind((local, port + 1)) {
                Ok(rtcp) => {
                    rtp.connect(SocketAddr::new(peer, client_ports.0))?;
                    rtcp.connect(SocketAddr::new(peer, client_ports.1))?;
                    rtp.set_nonblocking(true)?;
                    rtcp.set_nonblocking(true)?;
                    return Ok(UdpPair {
                        rtp: tokio::net::UdpSocket::from_std(rtp)?,
                        rtcp: tokio::net::UdpSocket::from_std(rtcp)?,
                        refused: 0,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free UDP port pair")))
    }

    fn ports(&self) -> (u16, u16) {
        let p = self.rtp.local_addr().map(|a| a.port()).unwrap_or(0);
        (p, p.wrapping_add(1))
    }
}

impl Session {
    fn rtp_time(&self, mono_ms: u64) -> u32 {
        self.rtp_base.wrapping_add((mono_ms.wrapping_mul(90)) as u32)
    }
}

/// A transport a client offered that camjobd serves.
enum Offer {
    /// Interleaved channels.
    Tcp(u8, u8),
    /// The client's RTP and RTCP ports.
    Udp(u16, u16),
}

/// A connection's state.
struct Conn {
    ctx: Arc<Ctx>,
    sock: TcpStream,
    peer: SocketAddr,
    input: Vec<u8>,
    session: Option<Session>,
    /// A DESCRIBE's watch, kept until the session takes over (the encoder starts early).
    describing: Option<(usize, Watch)>,
    heard: Instant,
    /// When the connection was accepted.
    opened: Instant,
    /// Requests refused for wrong credentials (not for missing ones).
    refused: u32,
    seed: u64,
    /// This connection's Digest nonce, and whether it has authenticated.
    nonce: String,
    authorized: bool,
}

/// Serves one connection until it closes, times out or the service stops.
pub(super) async fn serve(sock: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>, stop: Stop, _open: Open) {
    let _ = sock.set_nodelay(true);
    // A client that stops reading holds at most twice this in the kernel (Linux doubles it;
    // about a second at 2 Mbit/s) before its writes wait; then it skips to a keyframe when it
    // reads again.
    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(SEND_BUFFER);
    // Seeded by the standard library's per-process random keys: session ids and nonces need
    // to be unguessable from outside, not cryptographic.
    let seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::clock::unix_now().to_bits());
        h.write_u16(peer.port());
        h.finish()
    };
    let mut c = Conn {
        ctx,
        sock,
        peer,
        input: Vec::with_capacity(MAX_REQUEST),
        session: None,
        describing: None,
        heard: Instant::now(),
        opened: Instant::now(),
        refused: 0,
        seed: seed | 1,
        nonce: String::new(),
        authorized: false,
    };
    c.nonce = format!("{:016x}{:016x}", c.next_random(), c.next_random());
    let result = c.run(&stop).await;
    if let Some(s) = &c.session {
        if s.playing {
            c.ctx.stats.playing.fetch_sub(1, Relaxed);
        }
    }
    if let Err(e) = result {
        log::debug!("rtsp: {}: connection ended: {e}", c.peer);
    }
}

impl Conn {
    async fn run(&mut self, stop: &Stop) -> std::io::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut changes: Option<tokio::sync::watch::Receiver<u64>> = None;
        let mut buf = [0u8; 4096];
        let mut rtcp_in = [0u8; 1500];
        loop {
            if changes.is_none() {
                changes = self.session.as_ref().filter(|s| s.playing).map(|s| s.video.ring.subscribe());
            }
            tokio::select! {
                n = self.sock.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    if self.input.len() + n > MAX_REQUEST {
                        // Said, then closed (its CSeq may be past what was kept). What is still
                        // coming is read away for a moment first: closing with bytes unread
                        // would reset the connection, and the answer with it.
                        self.write(b"RTSP/1.0 413 Request Entity Too Large\r\nCSeq: 0\r\n\r\n").await?;
                        let _ = self.sock.shutdown().await;
                        let drain = async { while self.sock.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
                        let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
                        return Err(std::io::Error::other("a request over 16 KiB"));
                    }
                    self.input.extend_from_slice(&buf[..n]);
                    if !self.handle_input().await? {
                        return Ok(());
                    }
                    if !self.session.as_ref().is_some_and(|s| s.playing) {
                        changes = None;
                    }
                }
                r = async { changes.as_mut().expect("guarded").changed().await }, if changes.is_some() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    self.send_ready().await?;
                }
                r = recv_rtcp(&self.session, &mut rtcp_in), if self.session.as_ref().is_some_and(|s| matches!(s.transport, Carrier::Udp(_))) => {
                    // Receiver reports: the client is alive (its RTSP keep-alive may be rarer).
                    if r.is_ok() {
                        self.heard = Instant::now();
                    }
                }
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    if self.heard.elapsed() > SESSION_TIMEOUT {
                        return Err(std::io::Error::other("silent for the session timeout"));
                    }
                    // A connection that holds a place without setting up a session (probes,
                    // or someone keeping places from others) goes after a while.
                    if self.session.is_none() && self.opened.elapsed() > SETUP_WITHIN {
                        return Err(std::io::Error::other("no session set up in 20 s"));
                    }
                    self.report().await?;
                }
            }
        }
    }

    /// Handles every whole message in the input. False: close the connection.
    async fn handle_input(&mut self) -> std::io::Result<bool> {
        loop {
            let parsed = Message::<Vec<u8>>::parse(&self.input);
            let (message, used) = match parsed {
                Ok(m) => m,
                Err(ParseError::Incomplete(_)) => return Ok(true),
                Err(ParseError::Error) => {
                    self.write(b"RTSP/1.0 400 Bad Request\r\nCSeq: 0\r\n\r\n").await?;
                    return Ok(false);
                }
            };
            self.input.drain(..used);
            // Only whole messages count as life: a byte now and then (a slowloris) does not.
            self.heard = Instant::now();
            match message {
                // RTCP receiver reports from the client: it is alive.
                Message::Data(_) => {}
                Message::Request(r) => {
                    if !self.request(&r).await? {
                        return Ok(false);
                    }
                }
                Message::Response(_) => {}
            }
        }
    }

    /// Answers one request. False: close the connection (after TEARDOWN).
    async fn request(&mut self, r: &Request<Vec<u8>>) -> std::io::Result<bool> {
        let cseq = r.header(&CSEQ).map(|v| v.as_str().to_string()).unwrap_or_else(|| "0".into());
        let path = r.request_uri().map(|u| u.path().to_string()).unwrap_or_default();
        if !matches!(r.method(), Method::Options) && !self.authorize(r, &path) {
            let [digest, basic] = super::auth::challenges(&self.nonce);
            let reply = Reply::status(401, "Unauthorized")
                .header("WWW-Authenticate", &digest)
                .header("WWW-Authenticate", &basic);
            self.write_reply(&reply, &cseq).await?;
            return Ok(self.refused < MAX_REFUSED);
        }
        if r.version() != rtsp_types::Version::V1_0 {
            self.write_reply(&Reply::status(505, "RTSP Version Not Supported"), &cseq).await?;
            return Ok(false);
        }
        // A Session header must name this connection's session (PLAY, PAUSE, TEARDOWN, a
        // SETUP that changes the transport, keep-alives).
        let given = session_of(r);
        let ours = given.as_deref().map(|g| self.session.as_ref().is_some_and(|s| s.id == g));
        if ours == Some(false) && !matches!(r.method(), Method::Options | Method::Describe) {
            self.write_reply(&Reply::status(454, "Session Not Found"), &cseq).await?;
            return Ok(true);
        }
        let reply = match r.method() {
            Method::Options => Reply::ok().header("Public", PUBLIC),
            Method::Describe => self.describe(&path, r).await,
            Method::Setup => self.setup(&path, r, ours == Some(true)),
            Method::Play => self.play(r).await,
            Method::Pause => match self.session.as_mut() {
                None => Reply::status(455, "Method Not Valid in This State"),
                Some(s) => {
                    if s.playing {
                        s.playing = false;
                        self.ctx.stats.playing.fetch_sub(1, Relaxed);
                    }
                    Reply::ok()
                }
            },
            Method::GetParameter | Method::SetParameter => Reply::ok(),
            Method::Teardown => {
                self.write_reply(&Reply::ok(), &cseq).await?;
                return Ok(false);
            }
            _ => Reply::status(501, "Not Implemented"),
        };
        let reply = match &self.session {
            Some(s) => reply.header("Session", &format!("{};timeout={}", s.id, SESSION_TIMEOUT.as_secs())),
            None => reply,
        };
        self.write_reply(&reply, &cseq).await?;
        // The first access units go out right after PLAY's answer.
        if matches!(r.method(), Method::Play) {
            self.send_ready().await?;
        }
        Ok(true)
    }

    /// True when no token is asked for, or this connection proved it knows it (once is
    /// enough: the connection is what was authorized).
    fn authorize(&mut self, r: &Request<Vec<u8>>, path: &str) -> bool {
        let Some(token) = &self.ctx.token else { return true };
        if self.authorized {
            return true;
        }
        let given = r.header(&rtsp_types::headers::AUTHORIZATION).map(|v| v.as_str());
        let method: &str = r.method().into();
        match super::auth::check(given, method, super::auth::camera_of(path), token, &self.nonce) {
            Ok(()) => self.authorized = true,
            Err(super::auth::Refused::Missing) => {}
            Err(why) => {
                self.refused += 1;
                log::debug!("rtsp: {}: {method} refused: {why:?}", self.peer);
            }
        }
        self.authorized
    }

    fn camera(&self, path: &str) -> Option<usize> {
        let name = path.trim_start_matches('/').split('/').next().unwrap_or("");
        self.ctx.cameras.iter().position(|c| c.name == name)
    }

    async fn describe(&mut self, path: &str, r: &Request<Vec<u8>>) -> Reply {
        let Some(i) = self.camera(path) else { return not_found(path) };
        let video = Arc::clone(&self.ctx.cameras[i].video);
        // The encoder starts now, so that the parameter sets exist by the time they are needed.
        self.describing = Some((i, video.watch()));
        let (mut sps, mut pps) = (Vec::with_capacity(256), Vec::with_capacity(256));
        let deadline = Instant::now() + PARAMETERS_WAIT;
        loop {
            video.ring.parameter_sets(&mut sps, &mut pps);
            if !sps.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if sps.is_empty() {
            return Reply::status(503, "Service Unavailable")
                .header("Retry-After", "2")
                .body("text/plain", "the camera has not delivered a frame yet (is its job running?)\n".into());
        }
        let base = r.request_uri().map(|u| u.as_str().trim_end_matches('/').to_string()).unwrap_or_default();
        let session_id = self.next_random();
        let sdp = super::sdp::describe(&self.ctx.cameras[i].name, self.ctx.local.ip(), session_id, &sps, &pps);
        Reply::ok().header("Content-Base", &format!("{base}/")).body("application/sdp", sdp)
    }

    /// `in_session`: the request named this connection's session (it changes the transport).
    fn setup(&mut self, path: &str, r: &Request<Vec<u8>>, in_session: bool) -> Reply {
        let Some(i) = self.camera(path) else { return not_found(path) };
        let transports = match r.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            _ => return Reply::status(400, "Bad Request").body("text/plain", "no Transport header\n".into()),
        };
        // The first RTP/AVP unicast transport the client offers, TCP interleaved or UDP.
        // Multicast and others are 461, on which ffmpeg, GStreamer and MediaMTX try the next.
        let offered = transports.iter().find_map(|t| match t {
            Transport::Rtp(rtp) if rtp.profile == RtpProfile::Avp && !rtp.params.multicast => {
                match rtp.lower_transport {
                    Some(RtpLowerTransport::Tcp) => {
                        let (a, b) = rtp.params.interleaved.unwrap_or((0, Some(1)));
                        Some(Offer::Tcp(a, b.unwrap_or(a.wrapping_add(1))))
                    }
                    // Ports 0 and 65535 (whose pair would be 0) cannot be sent to.
                    Some(RtpLowerTransport::Udp) | None if self.ctx.udp => rtp.params.client_port.and_then(|(a, b)| {
                        let b = b.unwrap_or(a.wrapping_add(1));
                        (a != 0 && b != 0).then_some(Offer::Udp(a, b))
                    }),
                    _ => None,
                }
            }
            _ => None,
        });
        let Some(offer) = offered else {
            return Reply::status(461, "Unsupported Transport");
        };
        if self.session.as_ref().is_some_and(|s| s.camera != i) {
            return Reply::status(459, "Aggregate Operation Not Allowed");
        }
        let ssrc = self.next_random() as u32;
        let (transport, answer) = match offer {
            Offer::Tcp(a, b) => {
                (Carrier::Tcp(a, b), format!("RTP/AVP/TCP;unicast;interleaved={a}-{b};ssrc={ssrc:08X}"))
            }
            Offer::Udp(a, b) => {
                // Only ever to the address the RTSP connection comes from: a `destination=`
                // would make the server a reflector.
                let pair = match UdpPair::bind(self.ctx.local.ip(), self.peer.ip(), (a, b)) {
                    Ok(p) => p,
                    Err(e) => {
                        log::warn!("rtsp: {}: no UDP port pair: {e}", self.peer);
                        return Reply::status(461, "Unsupported Transport");
                    }
                };
                let (p, q) = pair.ports();
                let answer = format!("RTP/AVP;unicast;client_port={a}-{b};server_port={p}-{q};ssrc={ssrc:08X}");
                (Carrier::Udp(Box::new(pair)), answer)
            }
        };
        // Within the session: the same id and numbering, another transport (RFC 2326 10.4).
        if let Some(sess) = self.session.as_mut().filter(|s| in_session && s.camera == i) {
            sess.transport = transport;
            return Reply::ok().header("Transport", &answer);
        }
        // A SETUP without the session's id starts a new one (ffmpeg's UDP-to-TCP retry).
        if let Some(old) = self.session.take() {
            if old.playing {
                self.ctx.stats.playing.fetch_sub(1, Relaxed);
            }
            self.describing = Some((old.camera, old._watch));
        }
        let video = Arc::clone(&self.ctx.cameras[i].video);
        let (seq, base) = (self.next_random() as u16, self.next_random() as u32);
        let max_au = video.max_au_bytes;
        let out = crate::h264::stage::packets_bytes(max_au);
        let watch = match self.describing.take() {
            Some((camera, watch)) if camera == i => watch,
            _ => video.watch(),
        };
        let id = format!("{:016X}", self.next_random());
        self.session = Some(Session {
            id,
            camera: i,
            transport,
            stream: rtp::Stream { ssrc, seq, packets: 0, octets: 0 },
            rtp_base: base,
            next: None,
            last: 0,
            playing: false,
            _watch: watch,
            au: committed(max_au),
            out: committed(out),
            // The first sender report goes out with the first tick after PLAY: recorders map
            // RTP time to wall-clock time from it.
            reported: Instant::now().checked_sub(REPORT_EVERY).unwrap_or_else(Instant::now),
            video,
        });
        Reply::ok().header("Transport", &answer)
    }

    async fn play(&mut self, r: &Request<Vec<u8>>) -> Reply {
        let Some(s) = self.session.as_mut() else { return Reply::status(455, "Method Not Valid in This State") };
        // Start at a keyframe: one made in the last moment, or the next one (asked for; at
        // most one a second is forced, see `Video::request_keyframe`).
        let after = s.video.ring.newest();
        let fresh = s
            .video
            .ring
            .newest_keyframe()
            .filter(|&(_, at)| crate::clock::mono_ms().saturating_sub(at) <= FRESH_KEYFRAME_MS);
        let deadline = Instant::now() + KEYFRAME_WAIT;
        let start = match fresh {
            Some((k, _)) => Some(k),
            None => loop {
                s.video.request_keyframe();
                let k = s.video.ring.keyframe();
                if k > after {
                    break Some(k);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            },
        };
        let Some(start) = start else {
            return Reply::status(503, "Service Unavailable").header("Retry-After", "2");
        };
        let meta = match s.video.ring.read(start, &mut s.au) {
            Ok(m) => m,
            Err(_) => return Reply::status(503, "Service Unavailable").header("Retry-After", "1"),
        };
        s.next = Some(start);
        if !s.playing {
            s.playing = true;
            self.ctx.stats.playing.fetch_add(1, Relaxed);
        }
        let url = r.request_uri().map(|u| u.as_str().trim_end_matches('/').to_string()).unwrap_or_default();
        let info = format!("url={url}/trackID=0;seq={};rtptime={}", s.stream.seq, s.rtp_time(meta.captured_mono_ms));
        Reply::ok().header("Range", "npt=0.000-").header("RTP-Info", &info)
    }

    /// Sends the access units that are ready, from the session's place in the ring.
    async fn send_ready(&mut self) -> std::io::Result<()> {
        loop {
            let Some(s) = self.session.as_mut().filter(|s| s.playing) else { return Ok(()) };
            let Some(id) = s.next else {
                // Fell behind with no keyframe kept, or skipped one: wait for a keyframe after
                // what was last sent or skipped (never back in time).
                match s.video.ring.keyframe() {
                    k if k > s.last => s.next = Some(k),
                    _ => return Ok(()),
                }
                continue;
            };
            let meta = match s.video.ring.read(id, &mut s.au) {
                Ok(m) => m,
                Err(Missing::NotYet) => return Ok(()),
                Err(Missing::Gone { keyframe }) => {
                    self.ctx.stats.skipped.fetch_add(keyframe.saturating_sub(id).max(1), Relaxed);
                    s.next = (keyframe > id).then_some(keyframe);
                    if s.next.is_none() {
                        s.video.request_keyframe();
                        return Ok(());
                    }
                    continue;
                }
                Err(Missing::TooLarge) => {
                    // The frames after it would not decode without it: on to a keyframe.
                    self.ctx.stats.skipped.fetch_add(1, Relaxed);
                    s.video.request_keyframe();
                    (s.next, s.last) = (None, id);
                    continue;
                }
            };
            s.next = Some(id + 1);
            let Some(packets) = packetize(s, &meta) else {
                // Its packets do not fit the client's buffer: skipped, and the frames after it
                // would not decode without it.
                self.ctx.stats.skipped.fetch_add(1, Relaxed);
                s.video.request_keyframe();
                (s.next, s.last) = (None, id);
                continue;
            };
            s.last = id;
            self.ctx.stats.packets.fetch_add(packets, Relaxed);
            self.ctx.stats.bytes.fetch_add(s.out.len() as u64, Relaxed);
            if let Carrier::Udp(pair) = &mut s.transport {
                let (dropped, refused) = send_datagrams(pair, &s.out);
                self.ctx.stats.packets_dropped.fetch_add(dropped + refused, Relaxed);
                pair.refused = if refused > 0 { pair.refused + 1 } else { 0 };
                if pair.refused > MAX_REFUSED_UNITS {
                    return Err(std::io::Error::other("the client's UDP port refuses the stream"));
                }
                continue;
            }
            let out = std::mem::take(&mut s.out);
            let written = self.write(&out).await;
            if let Some(s) = self.session.as_mut() {
                s.out = out;
            }
            written?;
        }
    }

    /// A sender report every [`REPORT_EVERY`] while playing.
    async fn report(&mut self) -> std::io::Result<()> {
        let Some(s) = self.session.as_mut().filter(|s| s.playing && s.reported.elapsed() >= REPORT_EVERY) else {
            return Ok(());
        };
        s.reported = Instant::now();
        let mut out = [0u8; 128];
        let rtp_now = s.rtp_time(crate::clock::mono_ms());
        let n = rtp::sender_report(&s.stream, crate::clock::unix_now(), rtp_now, b"camjobd", &mut out[4..]);
        match &s.transport {
            Carrier::Tcp(_, rtcp) => {
                out[..4].copy_from_slice(&[b'$', *rtcp, (n >> 8) as u8, n as u8]);
                self.write(&out[..4 + n]).await
            }
            Carrier::Udp(pair) => {
                // Lost or refused (the client closed its port): the next report is 5 s away.
                let _ = pair.rtcp.try_send(&out[4..4 + n]);
                Ok(())
            }
        }
    }

    async fn write_reply(&mut self, reply: &Reply, cseq: &str) -> std::io::Result<()> {
        let text = reply.render(cseq);
        self.write(text.as_bytes()).await
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(WRITE_WAIT, self.sock.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client took nothing for 10 s")),
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: ids and initial numbers only need to differ, not to be secret.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }
}

/// Sends the interleaved packets in `out` as datagrams without waiting; how many were dropped
/// (the socket's buffer full) and refused (the client's port closed).
fn send_datagrams(pair: &UdpPair, mut out: &[u8]) -> (u64, u64) {
    let (mut dropped, mut refused) = (0, 0);
    while out.len() >= 4 {
        let len = usize::from(u16::from_be_bytes([out[2], out[3]]));
        let Some(packet) = out.get(4..4 + len) else { break };
        match pair.rtp.try_send(packet) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            Err(_) => dropped += 1,
        }
        out = &out[4 + len..];
    }
    (dropped, refused)
}

/// Waits for an RTCP packet on a UDP session's port.
async fn recv_rtcp(session: &Option<Session>, buf: &mut [u8]) -> std::io::Result<usize> {
    match session.as_ref().map(|s| &s.transport) {
        Some(Carrier::Udp(pair)) => pair.rtcp.recv(buf).await,
        _ => std::future::pending().await,
    }
}

/// Writes the packets of the access unit in `s.au` into `s.out`, each behind its interleave
/// header (`$`, channel, length: the TCP framing, and how UDP finds the packets); their count,
/// or `None` (nothing written, no number used) when they do not fit.
fn packetize(s: &mut Session, meta: &AuMeta) -> Option<u64> {
    let channel = match s.transport {
        Carrier::Tcp(rtp, _) => rtp,
        Carrier::Udp(_) => 0,
    };
    s.out.clear();
    let ts = s.rtp_time(meta.captured_mono_ms);
    let mut p = rtp::Packetizer::new(&s.au, ts);
    let mut packet = [0u8; rtp::MAX_PACKET];
    let before = s.stream;
    let mut n = 0;
    while let Some(len) = p.next_packet(&mut s.stream, &mut packet) {
        if s.out.len() + 4 + len > s.out.capacity() {
            // Many tiny NAL units can outgrow the buffer: never send a cut access unit (no
            // marker, numbers used): nothing of it, as if skipped.
            s.stream = before;
            s.out.clear();
            return None;
        }
        s.out.extend_from_slice(&[b'$', channel, (len >> 8) as u8, len as u8]);
        s.out.extend_from_slice(&packet[..len]);
        n += 1;
    }
    Some(n)
}

/// The session id a request names, if any (`id;timeout=N` is accepted).
fn session_of(r: &Request<Vec<u8>>) -> Option<String> {
    r.header(&SESSION).map(|v| v.as_str().split(';').next().unwrap_or("").trim().to_string())
}

fn not_found(path: &str) -> Reply {
    Reply::status(404, "Not Found").body("text/plain", format!("no camera with video at {path}\n"))
}

/// A header value as one line: a client's value echoed (CSeq, a URL) may hold a bare line
/// break that a parser let through, which would start a header of the client's choosing.
fn one_line(value: &str) -> String {
    value.trim().replace(['\r', '\n'], " ")
}

/// An answer, rendered as RTSP/1.0 text.
struct Reply {
    code: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, String)>,
}

impl Reply {
    fn ok() -> Reply {
        Reply::status(200, "OK")
    }
    fn status(code: u16, reason: &'static str) -> Reply {
        Reply { code, reason, headers: Vec::new(), body: None }
    }
    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, one_line(value)));
        self
    }
    fn body(mut self, content_type: &'static str, body: String) -> Reply {
        self.body = Some((content_type, body));
        self
    }
    fn render(&self, cseq: &str) -> String {
        let mut s =
            format!("RTSP/1.0 {} {}\r\nCSeq: {}\r\nServer: camjobd\r\n", self.code, self.reason, one_line(cseq));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        match &self.body {
            Some((t, b)) => s.push_str(&format!("Content-Type: {t}\r\nContent-Length: {}\r\n\r\n{b}", b.len())),
            None => s.push_str("\r\n"),
        }
        s
    }
}
