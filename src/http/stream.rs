//! The MJPEG live stream (`multipart/x-mixed-replace`), one body per client.
//!
//! The body is pulled, and paced by the client: the next part is chosen only once the client
//! has taken the last one (all of it sent, all but its last segment acknowledged: a client may
//! delay that acknowledgement; asked of the kernel through [`Peer`]), and it is the newest frame
//! at that moment. So a slow client skips
//! to the newest frame and is never more than the one it is reading behind, however large the
//! socket buffers; a client that takes no byte for `http.write_timeout_ms` is dropped, one that
//! takes a few KB a second is served for as long as it reads. Frames are the feed's copies
//! ([`crate::live`]): a client never holds a capture buffer.
//!
//! The body starts with `--camjobdframe`; every part has `Content-Type: image/jpeg`,
//! `Content-Length` (go2rtc and Mainsail's parser need it) and `X-Timestamp`, and its JPEG is
//! followed at once by CRLF and the next boundary. While the camera is
//! not delivering (its job is not `RUNNING`, or there is no frame yet to send), a placeholder
//! JPEG naming the state and reason (its part marked `X-Camjobd-State: <state>`) goes out every
//! [`PLACEHOLDER_EVERY`], so clients neither time out nor go blank without a why; real frames
//! resume by themselves.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::Stream;

use super::conns::Peer;
use super::stats::{bump, Stats};
use crate::frame::Frame;
use crate::lifecycle::JobState;
use crate::live::Watcher;
use crate::status::CameraShared;

/// The multipart boundary (without the leading dashes).
pub const BOUNDARY: &str = "camjobdframe";
/// The stream's `Content-Type`.
pub const CONTENT_TYPE: &str = "multipart/x-mixed-replace;boundary=camjobdframe";
/// The start of the body.
const FIRST: &str = "--camjobdframe\r\n";
/// What follows every JPEG: the end of the part and the next part's boundary.
const PART_END: &[u8] = b"\r\n--camjobdframe\r\n";
/// How often a placeholder goes out while the camera delivers nothing.
pub const PLACEHOLDER_EVERY: Duration = Duration::from_secs(1);

/// The placeholder JPEG of one camera, rendered again only when its text changes.
#[derive(Default)]
pub struct Placeholder {
    cached: Mutex<Option<(String, Bytes)>>,
}

impl Placeholder {
    /// The placeholder for the camera's current state.
    pub fn for_camera(&self, cam: &CameraShared) -> Bytes {
        let job = cam.job();
        let state = job.state.as_str();
        let reason = job.reason.unwrap_or_default();
        let key = format!("{state}\n{reason}");
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, b)) = cached.as_ref() {
            if *k == key {
                return b.clone();
            }
        }
        let reason = match (job.state, reason.is_empty()) {
            (JobState::Running, true) => "waiting for the camera's first usable frame".to_string(),
            _ => reason,
        };
        let (w, h) = cam.snapshots.latest_meta().map_or_else(|| cam.config.source.size(), |m| (m.width, m.height));
        let title = format!("{state} - NO LIVE VIDEO");
        let camera = format!("camera {}", cam.name);
        let lines: Vec<&str> =
            [title.as_str(), camera.as_str(), reason.as_str()].into_iter().filter(|l| !l.is_empty()).collect();
        let jpeg = Bytes::from(super::placeholder::render(w, h, &lines));
        *cached = Some((key, jpeg.clone()));
        jpeg
    }
}

/// Holds one place in `streams_active` until dropped.
pub struct StreamSlot(Arc<Stats>);

impl StreamSlot {
    /// Takes a place if fewer than `max` clients stream now.
    pub fn take(stats: &Arc<Stats>, max: usize) -> Option<StreamSlot> {
        stats
            .streams_active
            .fetch_update(Relaxed, Relaxed, |n| (n < max as u64).then_some(n + 1))
            .ok()
            .map(|_| StreamSlot(Arc::clone(stats)))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams_active.fetch_sub(1, Relaxed);
    }
}

/// One client's stream.
pub struct MjpegBody {
    cam: Arc<CameraShared>,
    placeholder: Arc<Placeholder>,
    stats: Arc<Stats>,
    /// Keeps capture publishing frames at this client's rate while it is connected.
    _watcher: Watcher,
    _slot: StreamSlot,
    /// Wakes when a frame is published.
    changes: WatchStream<u64>,
    /// A frame was published since the last part.
    changed: bool,
    /// The id of the last frame sent (0: none).
    last_id: u64,
    /// This client's cap: the next frame is not sent before `next_due`.
    interval: Duration,
    next_due: Instant,
    /// When the last part (frame or placeholder) went out.
    last_part: Option<Instant>,
    /// Parts waiting to go out: head, JPEG, CRLF.
    out: [Option<Bytes>; 3],
    timer: Pin<Box<Sleep>>,
    /// The client's socket, when the body paces itself by it.
    pace: Option<Pace>,
}

/// Waiting for the client to take the last part before choosing the next.
struct Pace {
    peer: Peer,
    /// The client is dropped after taking no byte for this long.
    timeout: Duration,
    /// Bytes it had acknowledged at the last look, and since when.
    acked: u64,
    moved_at: Instant,
    /// How long it may take nothing now: longer after a long burst (`conns::grace`).
    grace: Duration,
    /// The next look, backing off from 2 ms to 50 ms while the client is slow.
    every: Duration,
}

/// What [`Pace::check`] found.
enum Drained {
    /// The last part is with the client (or the socket cannot say): choose the next.
    Yes,
    /// Not yet: look again at this instant.
    Not(Instant),
    /// The client has taken nothing for the timeout.
    Stuck,
}

impl Pace {
    fn check(&mut self, now: Instant) -> Drained {
        // Not a TCP socket, or one the client closed: hyper's next write finds out.
        let Some(p) = self.peer.progress().filter(|p| p.open) else { return Drained::Yes };
        if p.acked != self.acked {
            self.grace = super::conns::grace(p.acked.saturating_sub(self.acked), self.timeout);
            self.acked = p.acked;
            self.moved_at = now;
        }
        if p.drained {
            self.every = Duration::from_millis(2);
            return Drained::Yes;
        }
        if now.duration_since(self.moved_at) >= self.grace {
            return Drained::Stuck;
        }
        let at = now + self.every;
        self.every = (self.every * 2).min(Duration::from_millis(50));
        Drained::Not(at)
    }
}

impl MjpegBody {
    /// A stream of `cam`, capped at one frame per `interval` (zero: every frame).
    pub fn new(
        cam: Arc<CameraShared>,
        placeholder: Arc<Placeholder>,
        stats: Arc<Stats>,
        watcher: Watcher,
        slot: StreamSlot,
        interval: Duration,
    ) -> MjpegBody {
        let changes = WatchStream::new(cam.live.subscribe());
        MjpegBody {
            cam,
            placeholder,
            stats,
            _watcher: watcher,
            _slot: slot,
            changes,
            changed: false,
            last_id: 0,
            interval,
            next_due: Instant::now(),
            last_part: None,
            out: [None, None, None],
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            pace: None,
        }
    }

    /// Paces the stream by what the client behind `peer` has taken; drops it after `timeout`
    /// without a byte taken.
    pub fn paced_by(mut self, peer: Option<Peer>, timeout: Duration) -> MjpegBody {
        self.pace = peer.map(|peer| Pace {
            peer,
            timeout,
            acked: 0,
            moved_at: Instant::now(),
            grace: timeout,
            every: Duration::from_millis(2),
        });
        self
    }

    fn queue(&mut self, jpeg: Bytes, captured_at: f64, state: Option<JobState>) {
        // The body starts with the boundary; after that each JPEG is followed by the next
        // boundary at once, so a reader that shows a part when it sees the boundary after it
        // (Fluidd) is not one frame behind.
        let first = if self.last_part.is_none() { FIRST } else { "" };
        // A placeholder says so: the state it stands for.
        let (mark, state) = state.map_or(("", ""), |s| ("X-Camjobd-State: ", s.as_str()));
        let end = if state.is_empty() { "" } else { "\r\n" };
        let head = format!(
            "{first}Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: {captured_at:.6}\r\n{mark}{state}{end}\r\n",
            jpeg.len()
        );
        self.out = [Some(Bytes::from(head)), Some(jpeg), Some(Bytes::from_static(PART_END))];
        self.last_part = Some(Instant::now());
    }

    fn next_out(&mut self) -> Option<Bytes> {
        self.out.iter_mut().find_map(Option::take)
    }

    /// The next part to send now, if one is due; else when to look again.
    fn decide(&mut self, now: Instant) -> Result<(), Instant> {
        if self.changed && now >= self.next_due {
            self.changed = false;
            if let Some(frame) = self.cam.live.newest().filter(|f| f.id != self.last_id) {
                self.last_id = frame.id;
                self.next_due = (self.next_due + self.interval).max(now);
                let at = frame.captured_at;
                self.queue(Bytes::from_owner(FrameBytes(frame)), at, None);
                bump(&self.stats.stream_frames);
                return Ok(());
            }
        }
        let quiet_until = self.last_part.map_or(now, |t| t + PLACEHOLDER_EVERY);
        let state = self.cam.state();
        // Nothing real to send yet (a job whose frames are all refused, a first frame still
        // coming): the client is not left waiting on an empty body.
        let nothing = self.last_id == 0 && self.cam.live.newest().is_none();
        if (state != JobState::Running || nothing) && now >= quiet_until {
            let jpeg = self.placeholder.for_camera(&self.cam);
            self.queue(jpeg, crate::clock::unix_now(), Some(state));
            bump(&self.stats.stream_placeholders);
            return Ok(());
        }
        let mut at = quiet_until.max(now + Duration::from_millis(1));
        if self.changed {
            at = at.min(self.next_due);
        }
        Err(at)
    }
}

impl Body for MjpegBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<BodyFrame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.next_out() {
                return Poll::Ready(Some(Ok(BodyFrame::data(b))));
            }
            // The next part is chosen once the client has the last one.
            if this.last_part.is_some() {
                if let Some(pace) = &mut this.pace {
                    match pace.check(Instant::now()) {
                        Drained::Yes => {}
                        Drained::Not(at) => {
                            this.timer.as_mut().reset(at);
                            // Frames published meanwhile are looked at once it is drained.
                            if this.timer.as_mut().poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                            continue;
                        }
                        Drained::Stuck => {
                            bump(&this.stats.timeouts);
                            let e = io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the client took no data for http.write_timeout_ms",
                            );
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
            }
            // Registers the waker for the next publication; yields at most the newest value.
            while let Poll::Ready(item) = Pin::new(&mut this.changes).poll_next(cx) {
                match item {
                    Some(_) => this.changed = true,
                    None => return Poll::Ready(None),
                }
            }
            match this.decide(Instant::now()) {
                Ok(()) => continue,
                Err(at) => {
                    this.timer.as_mut().reset(at);
                    if this.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A frame copy as `Bytes` without copying; the copy goes back to the feed when dropped.
pub struct FrameBytes(pub Arc<Frame>);

impl AsRef<[u8]> for FrameBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}
