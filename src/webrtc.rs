//! WebRTC playback (WHEP, draft-ietf-wish-whep): each camera with `video` at
//! `/api/cameras/<camera>/whep` on the HTTP API's port, for browsers (the dashboard), Mainsail
//! and Fluidd (`webrtc-mediamtx` mode), go2rtc and MediaMTX (`whep://` sources).
//!
//! HTTP takes the offer and hands it to the `webrtc` thread ([`Handle`]); the thread owns every
//! session and one UDP socket (`webrtc.udp_port`), on which ICE tells the sessions apart. A
//! session is a [`str0m`] `Rtc`: sans-IO, no threads or timers of its own, so all sessions are
//! driven by this one thread's small tokio runtime, never a thread per session. Media comes
//! from the camera's ring of H.264 access units, the same the RTSP server reads (encode once):
//! each new access unit is read once and written to every session of its camera; str0m
//! packetizes and encrypts it per session (DTLS-SRTP). A new session starts at the next
//! keyframe (asked for at once); one that cannot keep up (its packets do not fit the socket's
//! buffer) drops to the next keyframe. Sessions end on DELETE, when ICE fails or is not
//! completed in time, or when the viewer goes silent (a closed tab).
//!
//! - `frag`: trickle ICE bodies (`application/trickle-ice-sdpfrag`, RFC 8840).
//! - `session`: one viewer.
//! - `serve`: the thread's loop.

pub mod frag;
mod serve;
mod session;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::h264::stage::Video;
use crate::shutdown::{Stop, Worker};
pub use frag::{parse_frag, Frag, FragError};

/// An offer's ICE must complete within this, or the session is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected viewer that sends nothing for this long (no RTCP, no ICE consent) is gone: a
/// closed tab, a machine that went to sleep. Browsers send RTCP about every second.
pub const SILENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long HTTP waits for the thread's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Offers, trickles and deletes waiting for the thread at once; one more is answered 503.
const QUEUE: usize = 16;
/// The largest WHEP body taken (whatever `http.max_body_bytes`): a browser's offer is 4 to
/// 8 KB; one of 1 MB with 18,000 candidates kept the thread busy for seconds.
pub const MAX_BODY: usize = 32 << 10;

/// str0m's buffer of sent video packets per session (for retransmissions): the largest access
/// unit's packets, 512 at least (about a second of a 2 Mbit/s stream).
pub fn send_buffer_packets(max_au_bytes: usize) -> usize {
    (max_au_bytes / 1100 + 16).max(512)
}

/// The most one session holds: its send buffer (packets of up to about 1.2 KB, with str0m's
/// bookkeeping) and str0m's own state (ICE, DTLS, SRTP, RTCP). Measured: 8 sessions of a
/// 640x480 2 Mbit/s stream took 0.87 MB each of VmRSS (docs/webrtc.md).
pub fn session_bytes(max_au_bytes: usize) -> u64 {
    send_buffer_packets(max_au_bytes) as u64 * 1400 + (192 << 10)
}

/// A camera the server serves.
pub struct Camera {
    /// Its name (the URL's).
    pub name: String,
    /// Its H.264.
    pub video: Arc<Video>,
    /// The profile its stream announces, as H.264's profile_idc (0x42 baseline, 0x4d main,
    /// 0x64 high): the payload type offered with it is preferred.
    pub profile_idc: u8,
}

/// A session's name in its URL: 128 random bits, hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u128);

impl SessionId {
    /// 128 bits from the operating system's random source.
    pub fn random() -> SessionId {
        let mut b = [0u8; 16];
        // getrandom(2) on 16 bytes does not fail short once the pool is ready; a failure
        // (no entropy at all) would leave zeros, which the counter below still makes unique.
        let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        SessionId(u128::from_le_bytes(b) ^ u128::from(MADE.fetch_add(1, Relaxed)))
    }

    /// Its first 8 hex digits, for logs (the whole id lets its holder end the session).
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }

    /// Parses the URL's form (32 hex digits).
    pub fn parse(s: &str) -> Option<SessionId> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u128::from_str_radix(s, 16).ok().map(SessionId))
            .flatten()
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Why the thread did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `webrtc.max_sessions` sessions are open.
    Full(usize),
    /// The offer cannot be answered (why): not SDP, no video, no H.264 the stream can send.
    Offer(String),
    /// No such session (ended, or never was).
    NoSession,
    /// The session belongs to another camera.
    OtherCamera,
    /// A trickle body with other ICE credentials: an ICE restart, which needs a new session.
    Restart,
    /// More remote candidates than a session takes (this many at most).
    TooManyCandidates(usize),
    /// The thread is busy (its queue is full) or did not answer in time.
    Busy,
    /// The service is stopping.
    Closing,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full(n) => write!(f, "{n} WebRTC sessions are open (webrtc.max_sessions); close one or try later"),
            Refused::Offer(why) => write!(f, "cannot answer the offer: {why}"),
            Refused::NoSession => f.write_str("no such WebRTC session (it ended; make a new offer)"),
            Refused::OtherCamera => f.write_str("this session belongs to another camera"),
            Refused::Restart => f.write_str("ICE restarts are not supported: end the session and make a new offer"),
            Refused::TooManyCandidates(n) => write!(f, "a session takes at most {n} remote candidates"),
            Refused::Busy => f.write_str("the WebRTC thread is busy; try again"),
            Refused::Closing => f.write_str("the service is shutting down"),
        }
    }
}

/// A session made from an offer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The session (its URL's last part).
    pub id: SessionId,
    /// The SDP answer.
    pub sdp: String,
}

/// What HTTP asks of the thread.
enum Ask {
    Offer {
        camera: usize,
        offer: Box<str0m::change::SdpOffer>,
        local: IpAddr,
        reply: oneshot::Sender<Result<Answer, Refused>>,
    },
    Trickle {
        camera: usize,
        id: SessionId,
        frag: Frag,
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    End {
        camera: usize,
        id: SessionId,
        reply: oneshot::Sender<Result<(), Refused>>,
    },
}

/// Counters, for `/api/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// The UDP address media goes from (the port the kernel chose for 0), once bound.
    pub bound: OnceLock<SocketAddr>,
    /// Sessions open now; of them, ICE checking (not connected yet) and connected.
    pub sessions: AtomicU64,
    /// See `sessions`.
    pub checking: AtomicU64,
    /// See `sessions`.
    pub connected: AtomicU64,
    /// Sessions whose media flows (ICE and DTLS done): viewers.
    pub playing: AtomicU64,
    /// Offers answered (sessions made).
    pub offers: AtomicU64,
    /// Offers refused: `webrtc.max_sessions` reached.
    pub refused_full: AtomicU64,
    /// Offers refused: malformed, or nothing the stream can send.
    pub refused_offer: AtomicU64,
    /// Sessions that never got media going, ended to make room for a new offer at
    /// `webrtc.max_sessions` (also counted in `ended.ice`).
    pub evicted: AtomicU64,
    /// Sessions ended by DELETE.
    pub ended_deleted: AtomicU64,
    /// Sessions ended because ICE failed, or did not complete within [`CONNECT_TIMEOUT`].
    pub ended_ice: AtomicU64,
    /// Sessions ended because the viewer went silent ([`SILENT_TIMEOUT`]).
    pub ended_silent: AtomicU64,
    /// Sessions the viewer closed (its peer connection said goodbye).
    pub ended_closed: AtomicU64,
    /// Sessions ended because str0m failed or panicked on them (a bug: each is logged).
    pub ended_error: AtomicU64,
    /// Frames (access units) written to sessions, all together.
    pub frames_sent: AtomicU64,
    /// Frames a session did not get: it was waiting for a keyframe (it started, fell behind,
    /// or its packets did not fit the socket).
    pub frames_skipped: AtomicU64,
    /// UDP datagrams and bytes sent (media, RTCP, ICE, DTLS).
    pub packets: AtomicU64,
    /// See `packets`.
    pub bytes: AtomicU64,
    /// Datagrams not sent: the socket's buffer was full.
    pub packets_dropped: AtomicU64,
    /// Datagrams received that no session took (a stale viewer, a stray sender).
    pub packets_unmatched: AtomicU64,
    /// Keyframe requests (PLI, FIR) from viewers.
    pub keyframe_requests: AtomicU64,
}

impl Stats {
    /// The `webrtc` object of `/api/status`.
    pub fn to_json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Relaxed);
        serde_json::json!({
            "udp": self.bound.get().map(|a| a.to_string()),
            "sessions": g(&self.sessions),
            "playing": g(&self.playing),
            "ice": { "checking": g(&self.checking), "connected": g(&self.connected) },
            "offers": g(&self.offers),
            "refused": { "full": g(&self.refused_full), "offer": g(&self.refused_offer) },
            "evicted": g(&self.evicted),
            "ended": {
                "deleted": g(&self.ended_deleted),
                "ice": g(&self.ended_ice),
                "silent": g(&self.ended_silent),
                "closed": g(&self.ended_closed),
                "error": g(&self.ended_error),
            },
            "frames_sent": g(&self.frames_sent),
            "frames_skipped": g(&self.frames_skipped),
            "packets": g(&self.packets),
            "bytes": g(&self.bytes),
            "packets_dropped": g(&self.packets_dropped),
            "packets_unmatched": g(&self.packets_unmatched),
            "keyframe_requests": g(&self.keyframe_requests),
        })
    }
}

/// How HTTP reaches the `webrtc` thread.
#[derive(Clone)]
pub struct Handle {
    asks: mpsc::Sender<Ask>,
    /// The counters.
    pub stats: Arc<Stats>,
    /// Per camera in config order: whether it is served (it has `video`).
    served: Arc<[bool]>,
}

impl Handle {
    /// Whether camera `index` (config order) is served.
    pub fn serves(&self, index: usize) -> bool {
        self.served.get(index).copied().unwrap_or(false)
    }

    /// A new session for camera `index` from `offer`; `local` is the address the viewer
    /// reached HTTP on (the candidate offered when the UDP socket is bound to all addresses).
    pub async fn offer(&self, index: usize, offer: &str, local: IpAddr) -> Result<Answer, Refused> {
        let offer = str0m::change::SdpOffer::from_sdp_string(offer).map_err(|e| {
            self.stats.refused_offer.fetch_add(1, Relaxed);
            Refused::Offer(format!("not an SDP offer: {}", parse_error(offer, &e.to_string())))
        })?;
        self.ask(|reply| Ask::Offer { camera: index, offer: Box::new(offer), local, reply }).await
    }

    /// Adds the viewer's trickled candidates to a session.
    pub async fn trickle(&self, index: usize, id: SessionId, frag: Frag) -> Result<(), Refused> {
        self.ask(|reply| Ask::Trickle { camera: index, id, frag, reply }).await
    }

    /// Ends a session.
    pub async fn end(&self, index: usize, id: SessionId) -> Result<(), Refused> {
        self.ask(|reply| Ask::End { camera: index, id, reply }).await
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, Refused>>) -> Ask) -> Result<T, Refused> {
        let (tx, rx) = oneshot::channel();
        self.asks.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Busy,
            mpsc::error::TrySendError::Closed(_) => Refused::Closing,
        })?;
        match tokio::time::timeout(ASK_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Refused::Closing),
            Err(_) => Err(Refused::Busy),
        }
    }
}

/// A parse error of str0m's, said briefly: the line it stopped at, and what it expected there
/// (its message spans lines and names memory addresses, which are nobody's business).
fn parse_error(sdp: &str, error: &str) -> String {
    if !sdp.starts_with("v=0") {
        return "the first line must be v=0 (SDP, RFC 8866)".into();
    }
    let expected: Vec<&str> =
        error.lines().filter_map(|l| l.trim().strip_prefix("Expected ")).map(|e| e.trim_matches('`')).take(4).collect();
    let at = error.lines().find_map(|l| l.trim().strip_prefix("Unexpected ")).map(|u| u.trim_matches('`'));
    let mut out = String::from("malformed SDP");
    if let Some(at) = at {
        out.push_str(&format!(" at {:?}", at.chars().take(40).collect::<String>()));
    }
    if !expected.is_empty() {
        out.push_str(&format!(" (expected {})", expected.join(" or ")));
    }
    out
}

/// What the thread is started with.
pub struct Settings {
    /// The cameras with `video`, each with its index in the config.
    pub cameras: Vec<(usize, Camera)>,
    /// How many cameras the config has.
    pub camera_count: usize,
    /// The UDP socket, bound.
    pub socket: UdpSocket,
    /// `webrtc.max_sessions`.
    pub max_sessions: usize,
    /// Called each time the loop goes round (at least every second): the service's liveness,
    /// so that a stuck thread makes `/healthz` unhealthy.
    pub beat: Box<dyn Fn() + Send>,
}

/// Starts the `webrtc` thread. It serves until `stop`.
pub fn start(settings: Settings, stats: Arc<Stats>, stop: Stop) -> std::io::Result<(Worker, Handle)> {
    settings.socket.set_nonblocking(true)?;
    // Room for a burst of viewers' packets while the loop does one long thing (an offer).
    let _ = socket2::SockRef::from(&settings.socket).set_recv_buffer_size(1 << 20);
    let local = settings.socket.local_addr()?;
    let _ = stats.bound.set(local);
    let mut served = vec![false; settings.camera_count];
    for (i, _) in &settings.cameras {
        served[*i] = true;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build()?;
    let handle = Handle { asks: tx, stats: Arc::clone(&stats), served: served.into() };
    let guard = stop.guard("webrtc");
    let worker = Worker::spawn("webrtc", move || {
        let _guard = guard;
        let served = rt.block_on(async {
            let socket = tokio::net::UdpSocket::from_std(settings.socket)?;
            log::info!("webrtc: media on udp {local}; WHEP at /api/cameras/<camera>/whep");
            let server = serve::Server::new(local, settings.cameras, settings.max_sessions, stats);
            server.run(socket, rx, settings.beat, &stop).await;
            Ok::<(), std::io::Error>(())
        });
        if let Err(e) = served {
            log::error!("webrtc: cannot serve: {e}");
        }
    })?;
    Ok((worker, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_parse_errors_are_said_in_one_line_without_addresses() {
        let garbage = str0m::change::SdpOffer::from_sdp_string("hello").unwrap_err().to_string();
        assert!(garbage.contains("PointerOffset") || garbage.contains('\n'), "str0m's own: {garbage}");
        assert_eq!(parse_error("hello", &garbage), "the first line must be v=0 (SDP, RFC 8866)");
        let text = "v=0\r\no=?\r\n";
        let bad = str0m::change::SdpOffer::from_sdp_string(text).unwrap_err().to_string();
        let said = parse_error(text, &bad);
        assert!(said.starts_with("malformed SDP"), "{said}");
        assert!(!said.contains('\n') && !said.contains("0x"), "{said} (from {bad:?})");
    }

    #[test]
    fn session_ids_are_32_hex_digits_both_ways() {
        let id = SessionId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let s = id.to_string();
        assert_eq!(s, "0123456789abcdef0011223344556677");
        assert_eq!(SessionId::parse(&s), Some(id));
        for bad in
            ["", "0123", "0123456789abcdef001122334455667g", "+123456789abcdef0011223344556677", &format!("{s}0")]
        {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
    }
}
