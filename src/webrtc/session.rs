//! One viewer: its str0m `Rtc`, where it is in the stream, and why it ended. Every change to
//! the `Rtc` is followed by [`Session::drain`], which sends what str0m has to send and reads
//! its events (str0m's contract: mutate, then poll until it returns a timeout).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{MediaTime, Mid, Pt};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use super::{SessionId, Stats};
use crate::h264::ring::AuMeta;
use crate::h264::stage::{Video, Watch};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// DELETE, or the service stopping.
    Deleted,
    /// ICE failed, or did not complete in time.
    Ice,
    /// The viewer went silent.
    Silent,
    /// The viewer said goodbye (DTLS close): it closed its peer connection.
    Closed,
    /// str0m failed or panicked.
    Error,
}

/// One viewer.
pub(super) struct Session {
    pub id: SessionId,
    /// The camera's place in the server's list.
    pub cam: usize,
    pub rtc: Rtc,
    /// The local candidate it was given (the address its packets are addressed to).
    pub local: SocketAddr,
    /// The viewer's ICE user fragment, from its offer (another one in a PATCH is a restart).
    pub ufrag: String,
    /// Remote candidates taken so far (offer and trickles), against a cap.
    pub remote_candidates: usize,
    /// The video media and the payload type the stream goes out as.
    media: Option<(Mid, Pt)>,
    _watch: Watch,
    pub created: Instant,
    /// The last datagram from the viewer.
    pub last_rx: Instant,
    /// ICE connected.
    pub connected: bool,
    /// DTLS done: media can flow.
    media_ready: bool,
    /// Media waits for the next keyframe (a start, a gap, packets that did not fit).
    waiting_keyframe: bool,
    /// str0m's next timeout.
    pub timeout: Instant,
    pub ended: Option<End>,
}

impl Session {
    pub fn new(id: SessionId, cam: usize, rtc: Rtc, local: SocketAddr, ufrag: String, watch: Watch) -> Session {
        let now = Instant::now();
        Session {
            id,
            cam,
            rtc,
            local,
            ufrag,
            remote_candidates: 0,
            media: None,
            _watch: watch,
            created: now,
            last_rx: now,
            connected: false,
            media_ready: false,
            waiting_keyframe: true,
            timeout: now,
            ended: None,
        }
    }

    /// Picks the payload type for a stream of profile `profile_idc` (0x42 baseline, 0x4d main,
    /// 0x64 high) among those the viewer offered: H.264 with packetization mode 1, the
    /// stream's profile first. `Err` says why none fits.
    pub fn choose_payload(&mut self, mid: Mid, profile_idc: u8) -> Result<(), String> {
        let Some(media) = self.rtc.media(mid) else { return Err("the offer has no video".into()) };
        if !media.direction().is_sending() {
            return Err("the offer's video does not receive (it must be recvonly or sendrecv)".into());
        }
        let writer = self.rtc.writer(mid).ok_or("the offer's video cannot be sent to")?;
        let h264: Vec<_> = writer
            .payload_params()
            .filter(|p| p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1))
            .map(|p| (p.pt(), p.spec().format.profile_level_id.map(|id| (id >> 16) as u8)))
            .collect();
        let pick = h264.iter().find(|(_, idc)| *idc == Some(profile_idc)).or(h264.first());
        let Some((pt, _)) = pick else {
            return Err("the offer's video takes no H.264 with packetization-mode=1".into());
        };
        self.media = Some((mid, *pt));
        Ok(())
    }

    /// Feeds an input, then drains.
    pub fn input(&mut self, input: Input, ctx: &Ctx<'_>) {
        if let Err(e) = self.rtc.handle_input(input) {
            self.fail(ctx, format_args!("{e}"));
            return;
        }
        self.drain(ctx);
    }

    /// Sends what str0m has to send and handles its events, until it names its next timeout.
    pub fn drain(&mut self, ctx: &Ctx<'_>) {
        let mut congested = false;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => match ctx.socket.try_send_to(&t.contents, t.destination) {
                    Ok(n) => {
                        ctx.stats.packets.fetch_add(1, Relaxed);
                        ctx.stats.bytes.fetch_add(n as u64, Relaxed);
                    }
                    Err(e) => {
                        ctx.stats.packets_dropped.fetch_add(1, Relaxed);
                        congested |= e.kind() == std::io::ErrorKind::WouldBlock;
                    }
                },
                Ok(Output::Event(e)) => self.event(e, ctx),
                Err(e) => {
                    self.fail(ctx, format_args!("{e}"));
                    return;
                }
            }
        }
        if congested && self.media_ready && !self.waiting_keyframe {
            // The frame is broken for this viewer: on from the next keyframe.
            self.waiting_keyframe = true;
            ctx.video.request_keyframe();
        }
    }

    fn event(&mut self, e: Event, ctx: &Ctx<'_>) {
        match e {
            Event::IceConnectionStateChange(s) => match s {
                IceConnectionState::Connected | IceConnectionState::Completed => self.connected = true,
                IceConnectionState::Disconnected => self.ended = self.ended.or(Some(End::Ice)),
                _ => {}
            },
            Event::Connected => {
                self.media_ready = true;
                self.waiting_keyframe = true;
                ctx.video.request_keyframe();
            }
            Event::Closed => self.ended = self.ended.or(Some(End::Closed)),
            Event::KeyframeRequest(_) => {
                ctx.stats.keyframe_requests.fetch_add(1, Relaxed);
                ctx.video.request_keyframe();
            }
            _ => {}
        }
    }

    /// Writes one access unit (shared by every session of the camera), then drains.
    pub fn send(&mut self, au: &Arc<[u8]>, meta: &AuMeta, ctx: &Ctx<'_>) {
        let Some((mid, pt)) = self.media else { return };
        if !self.media_ready || self.ended.is_some() {
            return;
        }
        if self.waiting_keyframe {
            if !meta.keyframe {
                ctx.stats.frames_skipped.fetch_add(1, Relaxed);
                return;
            }
            self.waiting_keyframe = false;
        }
        // The capture time, as an Instant and on the 90 kHz clock (it strictly increases).
        let age = Duration::from_millis(crate::clock::mono_ms().saturating_sub(meta.captured_mono_ms));
        let wallclock = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let rtp_time = MediaTime::from_90khz(meta.captured_mono_ms * 90);
        let hook = crate::testhook::Fault::WebrtcPanic;
        assert!(!crate::testhook::hit(hook), "test hook: {}", hook.name());
        let Some(writer) = self.rtc.writer(mid) else { return };
        match writer.write(pt, wallclock, rtp_time, Arc::clone(au)) {
            Ok(()) => {
                ctx.stats.frames_sent.fetch_add(1, Relaxed);
                self.drain(ctx);
            }
            Err(e) => self.fail(ctx, format_args!("{e}")),
        }
    }

    /// DTLS is up and media can flow: the viewer really is one (until then a session is an
    /// offer that may never connect, ended after [`super::CONNECT_TIMEOUT`] or evicted).
    pub fn media_ready(&self) -> bool {
        self.media_ready
    }

    /// The stream has a gap for this camera (the ring overwrote what was not sent yet, or an
    /// access unit was too large): on from the next keyframe.
    pub fn resync(&mut self) {
        self.waiting_keyframe = true;
    }

    /// Ends the session with a goodbye (RTCP BYE and DTLS close_notify, sent by the drain),
    /// so that the viewer knows at once; then nothing more is sent or taken.
    pub fn close(&mut self, why: End, ctx: &Ctx<'_>) {
        self.ended = self.ended.or(Some(why));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.rtc.close().is_ok() {
                self.drain(ctx);
            }
        }));
        self.rtc.disconnect();
    }

    /// str0m gave up on the session. Before media flowed that is the viewer's doing (a DTLS
    /// handshake never finished: counted with ICE failures); after, a real error.
    fn fail(&mut self, _ctx: &Ctx<'_>, why: std::fmt::Arguments<'_>) {
        let end = if self.media_ready { End::Error } else { End::Ice };
        if self.ended.is_none() {
            let id = self.id.short();
            if end == End::Error {
                log::warn!("webrtc: session {id} ended: {why}");
            } else {
                log::debug!("webrtc: session {id} never started: {why}");
            }
        }
        self.ended = Some(self.ended.unwrap_or(end));
    }
}

/// What a session needs from the server while it runs.
pub(super) struct Ctx<'a> {
    pub socket: &'a tokio::net::UdpSocket,
    pub stats: &'a Stats,
    pub video: &'a Video,
}
