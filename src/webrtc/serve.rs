//! The `webrtc` thread's loop: it waits on the stop token, HTTP's asks, the UDP socket, the
//! cameras' rings and the sessions' next timeout, and does one thing at a time.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{StreamExt, StreamMap};

use super::session::{Ctx, End, Session};
use super::{Answer, Ask, Camera, Frag, Refused, SessionId, Stats, CONNECT_TIMEOUT, SILENT_TIMEOUT};
use crate::h264::ring::Missing;
use crate::shutdown::Stop;

/// The largest datagram read (ICE, DTLS and RTCP from viewers are far smaller).
const DATAGRAM: usize = 2048;
/// Datagrams read at most per turn of the loop besides the one that woke it.
const READ_BATCH: usize = 256;
/// Remote candidates a session takes at most, offer and trickles together (a browser has a
/// handful): every one is kept and checked by str0m's ICE agent.
const MAX_REMOTE_CANDIDATES: usize = 64;
/// A session whose media has not started this long after its offer may be ended to make room
/// for a new one (a browser on a LAN plays within 0.3 s: ICE and DTLS).
const EVICTABLE_AFTER: Duration = Duration::from_secs(2);
/// Media sections an offer may have: each costs a session str0m's state for it (127 of them
/// took 2.1 MB), and a viewer needs video, perhaps audio and a data channel.
const MAX_MEDIA: usize = 4;

/// One camera as the loop sees it.
struct Cam {
    /// Its index in the config.
    index: usize,
    camera: Camera,
    /// The newest access unit handed to its sessions.
    sent: u64,
    /// The access unit being handed out, read once from the ring (capacity: the largest).
    au: Vec<u8>,
}

/// Everything but the socket and the receive buffer, which the loop holds apart so that a
/// read can be pending while the rest changes.
pub(super) struct Server {
    local: SocketAddr,
    cams: Vec<Cam>,
    sessions: Vec<Session>,
    max_sessions: usize,
    stats: Arc<Stats>,
    /// str0m's buffer of sent video packets (for NACKs): the largest access unit's packets.
    send_buffer: usize,
}

impl Server {
    pub fn new(local: SocketAddr, cameras: Vec<(usize, Camera)>, max_sessions: usize, stats: Arc<Stats>) -> Server {
        let max_au = cameras.iter().map(|(_, c)| c.video.max_au_bytes).max().unwrap_or(0);
        let cams = cameras
            .into_iter()
            .map(|(index, camera)| {
                let au = Vec::with_capacity(camera.video.max_au_bytes);
                Cam { index, camera, sent: 0, au }
            })
            .collect();
        Server {
            local,
            cams,
            sessions: Vec::with_capacity(max_sessions),
            max_sessions,
            stats,
            send_buffer: super::send_buffer_packets(max_au),
        }
    }

    /// Serves until `stop`, or until HTTP is gone.
    pub async fn run(
        mut self,
        socket: UdpSocket,
        mut asks: mpsc::Receiver<Ask>,
        beat: Box<dyn Fn() + Send>,
        stop: &Stop,
    ) {
        let mut buf = vec![0u8; DATAGRAM];
        let mut changes = StreamMap::new();
        for (i, c) in self.cams.iter().enumerate() {
            changes.insert(i, WatchStream::from_changes(c.camera.video.ring.subscribe()));
        }
        loop {
            beat();
            let deadline = self.deadline();
            tokio::select! {
                _ = stop.cancelled() => break,
                ask = asks.recv() => match ask {
                    Some(ask) => self.ask(ask, &socket),
                    None => break,
                },
                r = socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = r {
                        self.receive(&buf[..n], source, &socket);
                    }
                }
                Some((cam, _)) = changes.next() => self.media(cam, &socket),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            // What the viewers sent meanwhile, before anything is judged silent: a long turn
            // (a large offer) must not count against them.
            self.read_waiting(&socket, &mut buf);
            self.tick(&socket);
        }
        for s in &mut self.sessions {
            let ctx = Ctx { socket: &socket, stats: &self.stats, video: &self.cams[s.cam].camera.video };
            s.close(End::Deleted, &ctx);
        }
        self.sessions.clear();
        self.gauges();
    }

    /// Takes every datagram that waits on the socket (bounded per turn).
    fn read_waiting(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 0..READ_BATCH {
            match socket.try_recv_from(buf) {
                Ok((n, source)) => self.receive(&buf[..n], source, socket),
                Err(_) => return,
            }
        }
    }

    /// The next moment something is due: a session's timeout, its reaping, or the next
    /// second (the loop's liveness beat).
    fn deadline(&self) -> Instant {
        let second = Instant::now() + Duration::from_secs(1);
        self.sessions.iter().map(|s| s.timeout.min(reap_at(s))).fold(second, Instant::min)
    }

    fn ask(&mut self, ask: Ask, socket: &UdpSocket) {
        match ask {
            Ask::Offer { camera, offer, local, reply } => {
                // HTTP gave up waiting (503 sent): a session made now would hold a place that
                // nobody can DELETE.
                if reply.is_closed() {
                    return;
                }
                let made = self.offer(camera, *offer, local, socket);
                if let Err(Ok(answer)) = reply.send(made) {
                    if let Ok(i) = self.find(camera, answer.id) {
                        let s = &mut self.sessions[i];
                        let ctx = Ctx { socket, stats: &self.stats, video: &self.cams[s.cam].camera.video };
                        s.close(End::Deleted, &ctx);
                    }
                }
            }
            Ask::Trickle { camera, id, frag, reply } => {
                let _ = reply.send(self.trickle(camera, id, frag, socket));
            }
            Ask::End { camera, id, reply } => {
                let r = self.find(camera, id).map(|i| {
                    let s = &mut self.sessions[i];
                    let ctx = Ctx { socket, stats: &self.stats, video: &self.cams[s.cam].camera.video };
                    s.close(End::Deleted, &ctx);
                });
                let _ = reply.send(r);
            }
        }
    }

    fn offer(
        &mut self,
        camera: usize,
        offer: str0m::change::SdpOffer,
        local: std::net::IpAddr,
        socket: &UdpSocket,
    ) -> Result<Answer, Refused> {
        let refuse = |stats: &Stats, why: String| {
            stats.refused_offer.fetch_add(1, Relaxed);
            Refused::Offer(why)
        };
        if self.sessions.iter().filter(|s| s.ended.is_none()).count() >= self.max_sessions && !self.evict_idle(socket) {
            self.stats.refused_full.fetch_add(1, Relaxed);
            return Err(Refused::Full(self.max_sessions));
        }
        let Some(cam) = self.cams.iter().position(|c| c.index == camera) else {
            return Err(refuse(&self.stats, "this camera has no video".into()));
        };
        let text = offer.to_sdp_string();
        let (media, candidates) = (text.matches("\nm=").count(), text.matches("a=candidate:").count());
        if media > MAX_MEDIA || candidates > MAX_REMOTE_CANDIDATES / 2 {
            let why = format!(
                "{media} media and {candidates} candidates: at most {MAX_MEDIA} media (video, audio, data) and {} candidates",
                MAX_REMOTE_CANDIDATES / 2
            );
            return Err(refuse(&self.stats, why));
        }
        let ufrag = offer_ufrag(&text).unwrap_or_default();
        // str0m names the media only once DTLS is up; the answer must be checked now.
        let Some(mid) = video_mid(&text) else { return Err(refuse(&self.stats, "the offer has no video".into())) };
        // Bound to every address: offer the one the viewer reached HTTP on.
        let ip = if self.local.ip().is_unspecified() { local } else { self.local.ip() };
        let candidate_addr = SocketAddr::new(ip, self.local.port());
        let now = Instant::now();
        // Opus too, though camjobd sends no sound: clients that offer audio (Mainsail, go2rtc,
        // MediaMTX) get it accepted and silent, not rejected (aiortc refuses a rejected m-line).
        // ICE lite: camjobd's host candidate is reachable by the viewer, so it only answers
        // the viewer's checks and never sends checks of its own to addresses a client names
        // (which would let any page make it send datagrams to hosts and ports of its choice).
        let config = RtcConfig::new().set_ice_lite(true).clear_codecs().enable_h264(true).enable_opus(true, false);
        let mut rtc = config.set_send_buffer_video(self.send_buffer).build(now);
        let candidate = Candidate::host(candidate_addr, "udp").map_err(|e| refuse(&self.stats, e.to_string()))?;
        rtc.add_local_candidate(candidate);
        // str0m asserts on some offers it should refuse (the fuzzer found payload types it
        // claims twice): caught here, that offer is refused; the thread and its viewers go on.
        let accepted = std::panic::catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)));
        let answer = match accepted {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(refuse(&self.stats, e.to_string())),
            Err(_) => {
                log::warn!("webrtc: str0m panicked on an offer (refused; see fuzz/regressions/whep/)");
                return Err(refuse(&self.stats, "str0m cannot take this offer (it failed inside str0m)".into()));
            }
        };
        let id = SessionId::random();
        let c = &self.cams[cam];
        let mut s = Session::new(id, cam, rtc, candidate_addr, ufrag, c.camera.video.watch());
        s.remote_candidates = candidates;
        let ctx = Ctx { socket, stats: &self.stats, video: &c.camera.video };
        let chosen = std::panic::catch_unwind(AssertUnwindSafe(|| {
            s.drain(&ctx);
            s.choose_payload(str0m::media::Mid::from(mid.as_str()), c.camera.profile_idc)
        }));
        match chosen {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(refuse(&self.stats, why)),
            Err(_) => return Err(refuse(&self.stats, "str0m failed on this offer (a bug; see the log)".into())),
        }
        // No keyframe asked for yet: media flows once DTLS is up, and the session asks then
        // (an encoder that was idle starts on one anyway).
        self.stats.offers.fetch_add(1, Relaxed);
        log::info!("webrtc: session {} for {} (candidate {candidate_addr})", id.short(), c.camera.name);
        self.sessions.push(s);
        self.gauges();
        Ok(Answer { id, sdp: list_rejected_formats(&answer.to_sdp_string(), &text) })
    }

    /// Full: the oldest session whose media has not started [`EVICTABLE_AFTER`] after its
    /// offer (one that never connected, or a client that stopped at ICE) makes room for a new
    /// one, so that offers left behind cannot keep real viewers out. A viewer still in its
    /// handshake is spared (on a LAN it plays within a second). `false` when none is idle.
    fn evict_idle(&mut self, socket: &UdpSocket) -> bool {
        let now = Instant::now();
        let idle =
            self.sessions.iter().enumerate().filter(|(_, s)| {
                s.ended.is_none() && !s.media_ready() && now.duration_since(s.created) >= EVICTABLE_AFTER
            });
        let Some(i) = idle.min_by_key(|(_, s)| s.created).map(|(i, _)| i) else { return false };
        let s = &mut self.sessions[i];
        let ctx = Ctx { socket, stats: &self.stats, video: &self.cams[s.cam].camera.video };
        s.close(End::Ice, &ctx);
        self.stats.evicted.fetch_add(1, Relaxed);
        true
    }

    fn trickle(&mut self, camera: usize, id: SessionId, frag: Frag, socket: &UdpSocket) -> Result<(), Refused> {
        let i = self.find(camera, id)?;
        let s = &mut self.sessions[i];
        if frag.ufrag.as_deref().is_some_and(|u| u != s.ufrag) {
            return Err(Refused::Restart);
        }
        if s.remote_candidates + frag.candidates.len() > MAX_REMOTE_CANDIDATES {
            return Err(Refused::TooManyCandidates(MAX_REMOTE_CANDIDATES));
        }
        s.remote_candidates += frag.candidates.len();
        let ctx = Ctx { socket, stats: &self.stats, video: &self.cams[s.cam].camera.video };
        for c in frag.candidates {
            guarded(s, |s| {
                s.rtc.add_remote_candidate(c);
                s.drain(&ctx);
            });
        }
        Ok(())
    }

    /// The session `id` of camera `camera`, if it is still open.
    fn find(&self, camera: usize, id: SessionId) -> Result<usize, Refused> {
        let i = self.sessions.iter().position(|s| s.id == id && s.ended.is_none()).ok_or(Refused::NoSession)?;
        if self.cams[self.sessions[i].cam].index != camera {
            return Err(Refused::OtherCamera);
        }
        Ok(i)
    }

    /// A datagram: to the session whose ICE or address it belongs to.
    fn receive(&mut self, datagram: &[u8], source: SocketAddr, socket: &UdpSocket) {
        let now = Instant::now();
        for s in &mut self.sessions {
            let Ok(r) = Receive::new(Protocol::Udp, source, s.local, datagram) else { break };
            let input = Input::Receive(now, r);
            if s.ended.is_none() && s.rtc.accepts(&input) {
                s.last_rx = now;
                let ctx = Ctx { socket, stats: &self.stats, video: &self.cams[s.cam].camera.video };
                guarded(s, |s| s.input(input, &ctx));
                return;
            }
        }
        self.stats.packets_unmatched.fetch_add(1, Relaxed);
    }

    /// New access units of camera `cam`: each read once and written to its sessions.
    fn media(&mut self, cam: usize, socket: &UdpSocket) {
        let c = &mut self.cams[cam];
        let newest = c.camera.video.ring.newest();
        let watching = self.sessions.iter().any(|s| s.cam == cam && s.ended.is_none());
        let mut id = if c.sent == 0 || !watching { newest } else { c.sent + 1 };
        c.sent = newest;
        if !watching {
            return;
        }
        let ctx = Ctx { socket, stats: &self.stats, video: &c.camera.video };
        while id <= newest {
            match c.camera.video.ring.read(id, &mut c.au) {
                Ok(meta) => {
                    let au: Arc<[u8]> = Arc::from(&c.au[..]);
                    for s in self.sessions.iter_mut().filter(|s| s.cam == cam) {
                        guarded(s, |s| s.send(&au, &meta, &ctx));
                    }
                }
                Err(Missing::NotYet) => break,
                Err(Missing::Gone { .. } | Missing::TooLarge) => {
                    for s in self.sessions.iter_mut().filter(|s| s.cam == cam) {
                        s.resync();
                    }
                    c.camera.video.request_keyframe();
                }
            }
            id += 1;
        }
    }

    /// Feeds due timeouts, then ends the sessions that are over.
    fn tick(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        for s in &mut self.sessions {
            let ctx = Ctx { socket, stats: &self.stats, video: &self.cams[s.cam].camera.video };
            if s.ended.is_none() && s.timeout <= now {
                guarded(s, |s| s.input(Input::Timeout(now), &ctx));
            }
            if s.ended.is_none() && reap_at(s) <= now {
                s.close(if s.media_ready() { End::Silent } else { End::Ice }, &ctx);
            } else if s.ended.is_none() && !s.rtc.is_alive() {
                s.ended = Some(End::Ice);
            }
        }
        let before = self.sessions.len();
        let stats = &self.stats;
        self.sessions.retain(|s| {
            let Some(end) = s.ended else { return true };
            let counter = match end {
                End::Deleted => &stats.ended_deleted,
                End::Ice => &stats.ended_ice,
                End::Silent => &stats.ended_silent,
                End::Closed => &stats.ended_closed,
                End::Error => &stats.ended_error,
            };
            counter.fetch_add(1, Relaxed);
            log::info!("webrtc: session {} ended ({end:?})", s.id.short());
            false
        });
        if self.sessions.len() != before || !self.sessions.is_empty() {
            self.gauges();
        }
    }

    fn gauges(&self) {
        let connected = self.sessions.iter().filter(|s| s.connected).count() as u64;
        self.stats.sessions.store(self.sessions.len() as u64, Relaxed);
        self.stats.connected.store(connected, Relaxed);
        let playing = self.sessions.iter().filter(|s| s.media_ready() && s.ended.is_none()).count() as u64;
        self.stats.playing.store(playing, Relaxed);
        self.stats.checking.store(self.sessions.len() as u64 - connected, Relaxed);
    }
}

/// When a session is over unless it hears from its viewer: ICE not done in time, or silence.
fn reap_at(s: &Session) -> Instant {
    if s.media_ready() {
        s.last_rx + SILENT_TIMEOUT
    } else {
        s.created + CONNECT_TIMEOUT
    }
}

/// Runs `f` on a session; a panic inside str0m ends that session (counted, logged), not the
/// thread and every other viewer with it.
fn guarded(s: &mut Session, f: impl FnOnce(&mut Session)) {
    if std::panic::catch_unwind(AssertUnwindSafe(|| f(s))).is_err() {
        log::error!("webrtc: session {} panicked inside str0m; it is ended, the others go on", s.id.short());
        s.ended = Some(End::Error);
    }
}

/// str0m answers a media it rejects (audio: camjobd sends none) as `m=audio 0 <proto>` with no
/// format, which SDP does not allow (RFC 4566 5.14: one at least) and aiortc cannot parse;
/// RFC 3264 6 has the answerer list one anyway. The offer's first format for that media is
/// listed.
fn list_rejected_formats(answer: &str, offer: &str) -> String {
    let offered: Vec<&str> = offer.lines().filter(|l| l.starts_with("m=")).collect();
    let mut index = 0;
    let mut out = String::with_capacity(answer.len() + 16);
    for line in answer.split_inclusive('\n') {
        let text = line.trim_end();
        if text.starts_with("m=") {
            let fields: Vec<&str> = text.split_ascii_whitespace().collect();
            let first = offered.get(index).and_then(|m| m.split_ascii_whitespace().nth(3));
            index += 1;
            if let (3, Some("0"), Some(fmt)) = (fields.len(), fields.get(1).copied(), first) {
                out.push_str(&format!("{} {} {} {fmt}\r\n", fields[0], fields[1], fields[2]));
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// The `a=mid` of the offer's first video media.
fn video_mid(sdp: &str) -> Option<String> {
    let section = sdp.split("\nm=").skip(1).find(|m| m.starts_with("video "))?;
    section.lines().find_map(|l| l.trim_end().strip_prefix("a=mid:")).map(str::to_string)
}

/// The offer's `a=ice-ufrag` (session level, or the first media's).
fn offer_ufrag(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_media_lists_the_offers_first_format() {
        let offer =
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:v\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:a\r\n";
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\nm=audio 0 UDP/TLS/RTP/SAVPF \r\na=mid:a\r\n";
        let fixed = list_rejected_formats(answer, offer);
        assert_eq!(
            fixed,
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\nm=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\n"
        );
        assert_eq!(video_mid(offer).as_deref(), Some("v"));
        assert_eq!(video_mid("v=0\r\nm=audio 9 RTP/AVP 0\r\na=mid:a\r\n"), None);
        assert_eq!(offer_ufrag("v=0\r\na=ice-ufrag:abc\r\n").as_deref(), Some("abc"));
    }
}
