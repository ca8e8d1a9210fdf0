//! The capture loop: one thread per camera (`capture-<name>`), the only owner of the camera's
//! source and frame pool.
//!
//! It does what the supervisor orders through a one-slot mailbox ([`Orders`]: the latest
//! order wins, so it can never fill up) and reports only through atomics ([`crate::status::Heartbeat`]) and
//! the snapshot ring. It never waits on another thread: publishing is a pointer swap under a
//! short lock, and every source read is bounded by [`READ_WAIT`], so orders and the stop token
//! are looked at several times a second even when the camera is silent.
//!
//! JPEG sources write into a pool buffer that capture publishes itself. Raw sources (YUYV)
//! write into an idle encoder's image ([`crate::encode`]); the encoder publishes, in capture
//! order, through the same [`Outputs`].
//!
//! Steady state allocates nothing per frame: buffers come from the pool, metadata goes into
//! fixed rings, counters are atomics.

use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{self as channel, Receiver, Sender};

use crate::capture::{Delivers, Dest, DropCause, Opener, Read, Source};
use crate::clock;
use crate::encode::{Sink, Stage};
use crate::events::{EventKind, EventLog};
use crate::frame::{Frame, FramePool};
use crate::shutdown::Stop;
use crate::status::{CameraShared, Phase, Unusable};
use crate::store::StoreItem;

mod controls;

/// Longest a source read may wait; bounds how late an order or a stop is noticed.
pub const READ_WAIT: Duration = Duration::from_millis(100);
/// Drop and error events are summarised at most this often, so a flood of bad frames cannot
/// flush the event ring.
const EVENT_EVERY: Duration = Duration::from_secs(1);

/// What the supervisor wants the capture thread to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open the camera (after `not_before`, if set) and read frames.
    Run {
        /// Do not open before this instant (recovery backoff).
        not_before: Option<Instant>,
    },
    /// Close the camera and wait.
    Halt,
}

/// One order. `Copy`, so the mailbox never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// The job this order is for; a different id than before resets the counters.
    pub job_id: u64,
    /// The open attempt (0 at start, +1 per recovery), echoed in the heartbeat.
    pub attempt: u32,
    /// Stop after this many frames in the job.
    pub max_frames: Option<u64>,
    /// What to do.
    pub action: Action,
}

/// A one-slot mailbox from the supervisor to one capture thread, with a doorbell.
pub struct Orders {
    /// Incremented on every post; capture compares it to what it last applied.
    seq: AtomicU64,
    /// The latest order.
    order: Mutex<Order>,
    /// Capacity 1: ringing a bell that is already ringing is a no-op.
    bell_tx: Sender<()>,
    bell_rx: Receiver<()>,
}

impl Default for Orders {
    fn default() -> Self {
        let (bell_tx, bell_rx) = channel::bounded(1);
        Orders {
            seq: AtomicU64::new(0),
            order: Mutex::new(Order { job_id: 0, attempt: 0, max_frames: None, action: Action::Halt }),
            bell_tx,
            bell_rx,
        }
    }
}

impl Orders {
    /// Replaces the current order and wakes the capture thread.
    pub fn post(&self, order: Order) {
        *self.order.lock().unwrap_or_else(|e| e.into_inner()) = order;
        self.seq.fetch_add(1, Release);
        let _ = self.bell_tx.try_send(());
    }

    /// The current order, whatever capture has applied (the supervisor's unit tests).
    #[cfg(test)]
    pub(crate) fn current(&self) -> Order {
        *self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current order if it changed since `seen`.
    fn take_new(&self, seen: &mut u64) -> Option<Order> {
        let s = self.seq.load(Acquire);
        if s == *seen {
            return None;
        }
        *seen = s;
        Some(*self.order.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sleeps up to `d` unless an order arrives or `stop` is triggered.
    fn wait(&self, stop: &Stop, d: Duration) {
        crossbeam_channel::select! {
            recv(self.bell_rx) -> _ => {},
            recv(stop.receiver()) -> _ => {},
            default(d) => {},
        }
    }
}

/// Drops and errors waiting to be summarised in events (at most one of each per second).
#[derive(Default)]
struct Pending {
    oversize: u64,
    garbage: u64,
    no_buffer: u64,
    errors: u64,
    /// The newest of those errors (kept here: a new job clears the heartbeat's copy before
    /// the summary goes out). Fixed size, so noting it does not allocate.
    last_error: heapless::String<{ crate::events::MESSAGE_BYTES }>,
    /// When the oldest unsummarised drop or error happened.
    since: Option<Instant>,
}

impl Pending {
    fn drops(&self) -> u64 {
        self.oversize + self.garbage + self.no_buffer
    }
    fn note(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }
}

/// The capture thread's state. Built on the spawning thread, moved into the capture thread.
pub struct CaptureLoop {
    /// Where drop and error summaries go.
    events: Arc<EventLog>,
    cam: Arc<CameraShared>,
    orders: Arc<Orders>,
    opener: Box<dyn Opener>,
    pool: FramePool,
    stop: Stop,
    /// The order being carried out.
    order: Order,
    seen_order: u64,
    source: Option<Box<dyn Source>>,
    /// The next snapshot sequence number for this camera.
    next_seq: u64,
    /// The store's queue and this camera's index in `Shared::cameras`; `None` writes nothing.
    /// Moved into [`Outputs`] when the loop starts.
    store: Option<(Sender<StoreItem>, usize)>,
    /// Where frames go; set up when the loop starts.
    outputs: Option<Arc<Outputs>>,
    /// The encoders, for a camera whose source can deliver raw frames; started with the loop.
    stage: Option<Stage>,
    /// The H.264 encoder, for a camera with `video`; started with the loop.
    h264: Option<crate::h264::stage::Stage>,
    /// When the next frame is due to be kept.
    next_keep: Instant,
    interval: Duration,
    /// When the next frame is due for the live view (only while somebody watches).
    next_live: Instant,
    /// The id of the next published frame (see [`crate::frame::Frame::id`]).
    next_id: u64,
    pending: Pending,
    /// Whether the controls were last published as open.
    controls_open: bool,
    /// A control change that restarted the camera, until it shows it works.
    settling: Option<controls::Settling>,
}

impl CaptureLoop {
    /// Prepares the loop: allocates the frame pool and builds the source opener.
    pub fn new(
        events: Arc<EventLog>,
        cam: Arc<CameraShared>,
        orders: Arc<Orders>,
        opener: Box<dyn Opener>,
        stop: Stop,
    ) -> CaptureLoop {
        let c = &cam.config;
        let pool = FramePool::new(c.frame_buffers, c.max_frame_bytes);
        let interval = Duration::from_millis(c.snapshot_interval_ms);
        CaptureLoop {
            events,
            orders,
            opener,
            pool,
            stop,
            order: Order { job_id: 0, attempt: 0, max_frames: None, action: Action::Halt },
            seen_order: 0,
            source: None,
            next_seq: 1,
            store: None,
            outputs: None,
            stage: None,
            h264: None,
            next_keep: Instant::now(),
            interval,
            next_live: Instant::now(),
            next_id: 1,
            pending: Pending::default(),
            controls_open: false,
            settling: None,
            cam,
        }
    }

    /// Sends kept snapshots of camera `index` to the store, numbering them from `first_seq`
    /// (the store's next seq, so numbers never repeat across restarts).
    pub fn with_store(mut self, tx: Sender<StoreItem>, index: usize, first_seq: u64) -> CaptureLoop {
        if self.cam.config.store.enabled {
            self.store = Some((tx, index));
        }
        self.next_seq = first_seq;
        self
    }

    /// Starts the encoders (a camera that can deliver raw frames), then runs until the stop
    /// token is triggered; then closes the source and ends the encoders.
    pub fn run(mut self) {
        let outputs = Arc::new(Outputs {
            cam: Arc::clone(&self.cam),
            store: self.store.take(),
            failed: [0, 0].map(AtomicU64::new),
            retry_keep: AtomicBool::new(false),
        });
        self.outputs = Some(Arc::clone(&outputs));
        let c = &self.cam.config;
        if let Some(quality) = c.raw_quality() {
            let (width, height) = c.source.size();
            let settings = crate::encode::Settings {
                camera: self.cam.name.clone(),
                threads: c.encoder_threads,
                quality,
                width: width as usize,
                height: height as usize,
                pool: c.frame_buffers,
            };
            // Threads are few and started once; failing to start them (TasksMax, a memory
            // limit) leaves a camera that can never deliver: the service fails (exit 1).
            match Stage::start(&settings, outputs, &self.stop) {
                Ok(stage) => self.stage = Some(stage),
                Err(e) => {
                    log::error!("cannot start the encoder threads of camera {}: {e}", self.cam.name);
                    self.stop.fail(&format!("enc0-{}", self.cam.name), crate::shutdown::Broke::NotStarted);
                    return;
                }
            }
        }
        if !self.start_h264() {
            return;
        }
        let hb = &self.cam.heartbeat;
        hb.set_phase(Phase::Idle);
        while !self.stop.is_set() {
            if let Some(order) = self.orders.take_new(&mut self.seen_order) {
                self.apply(order);
            }
            self.serve_controls();
            self.note_encoder_drops();
            self.flush_events(false);
            match self.cam.heartbeat.phase() {
                // READ_WAIT, not longer: a control change for a closed camera is answered soon.
                Phase::Idle | Phase::Done | Phase::Broken => self.orders.wait(&self.stop, READ_WAIT),
                Phase::Backoff => self.backoff(),
                Phase::Opening if self.source.is_none() => self.open(),
                Phase::Opening | Phase::Streaming => self.read_one(),
            }
        }
        self.close();
        self.stage = None;
        self.h264 = None;
        self.note_encoder_drops();
        self.flush_events(true);
        self.cam.heartbeat.set_phase(Phase::Idle);
    }

    /// Starts the H.264 encoder thread of a camera with `video`. False: it could not start
    /// (the service fails).
    fn start_h264(&mut self) -> bool {
        let (Some(video), Some(vc)) = (&self.cam.video, &self.cam.config.video) else { return true };
        let c = &self.cam.config;
        let settings = crate::h264::Settings {
            bitrate_kbps: vc.bitrate_kbps,
            keyframe_interval_s: vc.keyframe_interval_s,
            profile: vc.profile,
            fps: c.source.fps().unwrap_or(30),
        };
        let choice = match crate::h264::choose::choose(
            vc.encoder,
            vc.device.as_deref(),
            c.may_deliver_jpeg(),
            &crate::h264::probe_m2m,
        ) {
            Ok(choice) => choice,
            Err(e) => {
                log::error!("camera {}: {e}", self.cam.name);
                self.stop.fail(&format!("h264-{}", self.cam.name), crate::shutdown::Broke::NotStarted);
                return false;
            }
        };
        let (w, h) = c.source.size();
        let size = (w as usize, h as usize);
        let make = crate::h264::maker(&choice.backend, &settings, size);
        let software = crate::h264::choose::Backend::Software;
        let fallback = choice.fallback.then(|| crate::h264::maker(&software, &settings, size));
        *video.encoder.lock().unwrap_or_else(|e| e.into_inner()) = choice.why;
        let jpeg_bytes = if c.may_deliver_jpeg() { c.max_frame_bytes } else { 0 };
        let stage = crate::h264::stage::Stage::start(
            &self.cam.name,
            Arc::clone(video),
            make,
            fallback,
            &settings,
            size,
            jpeg_bytes,
            &self.stop,
        );
        match stage {
            Ok(stage) => {
                self.h264 = Some(stage);
                true
            }
            Err(e) => {
                log::error!("cannot start the H.264 encoder thread of camera {}: {e}", self.cam.name);
                self.stop.fail(&format!("h264-{}", self.cam.name), crate::shutdown::Broke::NotStarted);
                false
            }
        }
    }

    /// Folds the encoders' failed frames into the drop summary.
    fn note_encoder_drops(&mut self) {
        let Some(out) = &self.outputs else { return };
        let [oversize, garbage] = [0, 1].map(|i| out.failed[i].swap(0, Relaxed));
        if oversize + garbage > 0 {
            self.pending.oversize += oversize;
            self.pending.garbage += garbage;
            self.pending.note();
        }
    }

    fn apply(&mut self, order: Order) {
        let hb = &self.cam.heartbeat;
        // Observers read job id and attempt, then the phase. Publishing a neutral phase
        // first, then the ids, then the real phase means that whoever sees the new ids also
        // sees a phase that belongs to them (never the last attempt's Streaming or Done).
        hb.set_phase(Phase::Backoff);
        self.source = None;
        if order.job_id != self.order.job_id {
            hb.reset_for_job(order.job_id);
        }
        // Each attempt is judged afresh: errors of the last one must not fail the next.
        hb.consecutive_errors.store(0, Relaxed);
        hb.clear_unusable();
        hb.progress_ms.store(clock::mono_ms(), Release);
        hb.attempt.store(order.attempt, Release);
        self.order = order;
        match order.action {
            Action::Halt => hb.set_phase(Phase::Idle),
            Action::Run { not_before: Some(t) } if t > Instant::now() => {}
            Action::Run { .. } => hb.set_phase(Phase::Opening),
        }
    }

    fn backoff(&mut self) {
        let until = match self.order.action {
            Action::Run { not_before: Some(t) } => t,
            _ => Instant::now(),
        };
        let now = Instant::now();
        if now >= until {
            // The stall clock starts now, not when the backoff began.
            self.cam.heartbeat.progress_ms.store(clock::mono_ms(), Release);
            self.cam.heartbeat.set_phase(Phase::Opening);
        } else {
            // In steps of READ_WAIT: control changes are answered during a long backoff too.
            self.orders.wait(&self.stop, (until - now).min(READ_WAIT));
        }
    }

    fn open(&mut self) {
        let hb = &self.cam.heartbeat;
        hb.progress_ms.store(clock::mono_ms(), Release);
        match self.opener.open(self.order.job_id, &self.cam.controls.saved()) {
            Ok(source) => {
                self.source = Some(source);
                self.next_keep = Instant::now();
                self.reapply_controls();
            }
            Err(e) => {
                self.record_error(&e.message);
                self.cam.heartbeat.set_phase(Phase::Broken);
            }
        }
    }

    /// Counts a source error in the heartbeat and queues it for the next error event.
    fn record_error(&mut self, message: &str) {
        let hb = &self.cam.heartbeat;
        hb.errors_total.fetch_add(1, Relaxed);
        hb.set_last_error(message);
        self.pending.last_error = crate::events::fixed(format_args!("{message}"));
        self.pending.errors += 1;
        self.pending.note();
    }

    fn close(&mut self) {
        // Dropping a source closes the device or kills and reaps the child.
        self.source = None;
        self.serve_controls();
    }

    /// Reads a frame from a source that delivers JPEGs; what became of it.
    fn read_jpeg(
        &mut self,
        source: &mut dyn Source,
        wanted: bool,
        keep: bool,
    ) -> (Result<Read, crate::capture::SourceError>, Got) {
        // H.264 takes every frame while an RTSP client watches: a copy of the JPEG, or
        // the JPEG itself when nothing else wants it.
        let h264 = self.h264.as_ref().filter(|h| h.video().wanted());
        let mut slot = if wanted { self.pool.acquire() } else { None };
        let mut only_h264 = if slot.is_none() { h264.and_then(crate::h264::stage::Stage::claim_jpeg) } else { None };
        let dst = match (slot.as_mut(), only_h264.as_mut()) {
            (Some(s), _) => Dest::Jpeg(s.frame().buffer_mut()),
            (None, Some(c)) => Dest::Jpeg(c.buffer()),
            (None, None) => Dest::Discard,
        };
        let result = source.read(dst, READ_WAIT);
        let (mono_ms, unix) = (clock::mono_ms(), clock::unix_now());
        let got = match (&result, slot) {
            (Ok(Read::Frame { len, width, height }), Some(mut slot)) => {
                let f = slot.frame();
                f.set_len(*len);
                (f.width, f.height) = (*width, *height);
                if let Some(mut c) = h264.and_then(crate::h264::stage::Stage::claim_jpeg) {
                    c.buffer()[..*len].copy_from_slice(&f.bytes()[..*len]);
                    h264.expect("claimed from it").submit_jpeg(c, *len, mono_ms, unix);
                }
                self.next_id = stamp(f, self.next_id, keep, &mut self.next_seq);
                let outputs = self.outputs.as_ref().expect("set up by run");
                outputs.publish(slot.share());
                Got::Taken
            }
            (Ok(Read::Frame { len, .. }), None) if only_h264.is_some() => {
                let c = only_h264.take().expect("checked");
                h264.expect("claimed from it").submit_jpeg(c, *len, mono_ms, unix);
                if wanted {
                    Got::NoBuffer
                } else {
                    Got::Taken
                }
            }
            (_, None) if wanted => Got::NoBuffer,
            (Ok(Read::Consumed), Some(_)) => Got::NotOffered,
            _ => Got::Taken,
        };
        (result, got)
    }

    /// Reads a frame from a source that delivers raw frames; what became of it.
    fn read_raw(
        &mut self,
        source: &mut dyn Source,
        wanted: bool,
        keep: bool,
    ) -> (Result<Read, crate::capture::SourceError>, Got) {
        // H.264 takes every frame while an RTSP client watches; JPEG what is due.
        let h264 = self.h264.as_ref().filter(|h| h.video().wanted());
        let mut target = RawTarget {
            stage: self.stage.as_ref().filter(|_| wanted),
            pool: Some(&mut self.pool),
            got: None,
            missing: Got::NotOffered,
            h264,
            got_h264: None,
        };
        let dst = if wanted || h264.is_some() { Dest::Yuv(&mut target) } else { Dest::Discard };
        let result = source.read(dst, READ_WAIT);
        let raw = matches!(result, Ok(Read::Raw));
        let (mono_ms, unix) = (clock::mono_ms(), clock::unix_now());
        let got = match (raw, target.got) {
            (true, Some((mut claim, mut slot))) => {
                // Both want it: the source filled the JPEG encoder's image; H.264 gets a copy.
                if let Some(mut c) = h264.and_then(crate::h264::stage::Stage::claim) {
                    c.image().copy_from(claim.image());
                    h264.expect("claimed from it").submit(c, mono_ms, unix);
                }
                let (w, h) = (claim.image().width() as u32, claim.image().height() as u32);
                let f = slot.frame();
                f.set_len(0);
                (f.width, f.height) = (w, h);
                self.next_id = stamp(f, self.next_id, keep, &mut self.next_seq);
                let stage = self.stage.as_ref().expect("claimed from it");
                stage.submit(claim, slot.lend());
                Got::Taken
            }
            _ => {
                if let (true, Some(c)) = (raw, target.got_h264) {
                    h264.expect("claimed from it").submit(c, mono_ms, unix);
                }
                target.missing
            }
        };
        (result, got)
    }

    /// Reads one frame (or times out) and publishes it, or hands it to an encoder, if it is
    /// due to be kept or somebody watches the live view.
    fn read_one(&mut self) {
        let Some(mut source) = self.source.take() else { return };
        let now = Instant::now();
        // A kept frame an encoder refused (too large): the next one is kept instead, so a
        // single large frame is followed by a usable one, and only a camera whose every
        // frame is refused counts as giving no image.
        if self.outputs.as_ref().is_some_and(|o| o.retry_keep.swap(false, Relaxed)) {
            self.next_keep = now;
        }
        let keep = now >= self.next_keep;
        let live_every = self.cam.live.wanted_interval();
        let live = live_every.is_some() && now >= self.next_live;
        let wanted = keep || live;
        // Read into the kind of destination the source fills; `got` says what became of a
        // wanted frame.
        let jpeg = source.delivers() == Delivers::Jpeg;
        let (result, got) = match source.delivers() {
            Delivers::Jpeg => self.read_jpeg(&mut *source, wanted, keep),
            Delivers::Yuv => self.read_raw(&mut *source, wanted, keep),
        };
        self.source = Some(source);
        let hb = &self.cam.heartbeat;
        match result {
            Ok(Read::Frame { .. } | Read::Raw | Read::Consumed) => {
                good_frame(hb);
                if jpeg {
                    // It fit within max_frame_bytes (a raw frame says so only once encoded).
                    hb.clear_unusable();
                }
                match got {
                    Got::Taken if wanted => {
                        if keep {
                            self.advance_keep(now);
                        }
                        if let Some(every) = live_every {
                            self.next_live = (self.next_live + every).max(now);
                        }
                    }
                    // Not wanted, or the source had no pixels to give (a V4L2 buffer
                    // skipped to resynchronise): what was due stays due.
                    Got::Taken | Got::NotOffered => {}
                    // Every encoder is busy: skipped for the live view (it was captured); a
                    // snapshot due stays due for the next frame an encoder can take.
                    Got::NoEncoder => {
                        hb.frames_skipped.fetch_add(1, Relaxed);
                    }
                    Got::NoBuffer if keep => {
                        // Due to be kept, but every buffer is held by a reader.
                        self.dropped(None);
                        self.advance_keep(now);
                    }
                    // Wanted only by the live view: skipped for it, not lost.
                    Got::NoBuffer => {
                        hb.frames_skipped.fetch_add(1, Relaxed);
                    }
                }
                self.check_limit();
            }
            Ok(Read::Dropped(cause)) => self.dropped(Some(cause)),
            Ok(Read::Timeout) => {}
            Err(e) => {
                // An open error is not a read error: only reads count towards
                // `max_consecutive_errors`.
                hb.consecutive_errors.fetch_add(1, Relaxed);
                self.record_error(&e.message);
                if e.fatal {
                    self.source = None;
                    self.cam.heartbeat.set_phase(Phase::Broken);
                }
            }
        }
    }

    fn advance_keep(&mut self, now: Instant) {
        // Keep the cadence, but never try to catch up on missed snapshots.
        self.next_keep = (self.next_keep + self.interval).max(now);
    }

    fn check_limit(&mut self) {
        let hb = &self.cam.heartbeat;
        if let Some(max) = self.order.max_frames {
            if hb.frames_captured.load(Relaxed) >= max {
                self.source = None;
                hb.set_phase(Phase::Done);
            }
        }
    }

    fn dropped(&mut self, cause: Option<DropCause>) {
        let hb = &self.cam.heartbeat;
        hb.frames_dropped.fetch_add(1, Relaxed);
        match cause {
            Some(DropCause::Oversize) => {
                self.pending.oversize += 1;
                hb.note_unusable(Unusable::Oversize, 0);
            }
            Some(DropCause::Garbage) => {
                self.pending.garbage += 1;
                hb.note_unusable(Unusable::Malformed, 0);
            }
            None => self.pending.no_buffer += 1,
        }
        self.pending.note();
    }

    /// Summarises pending drops and errors in (at most) one event each, at most once per
    /// [`EVENT_EVERY`], so a flood of bad frames cannot flush the event ring.
    fn flush_events(&mut self, force: bool) {
        let Some(since) = self.pending.since else { return };
        if !force && since.elapsed() < EVENT_EVERY {
            return;
        }
        let p = std::mem::take(&mut self.pending);
        let (name, job) = (&self.cam.name, Some(self.order.job_id));
        if p.drops() > 0 {
            let max = self.cam.config.max_frame_bytes;
            self.events.push(
                EventKind::Drop,
                name,
                job,
                None,
                format_args!(
                    "dropped {} frame(s): {} larger than max_frame_bytes {max}, {} malformed, {} with every buffer in use",
                    p.drops(),
                    p.oversize,
                    p.garbage,
                    p.no_buffer
                ),
            );
        }
        if p.errors > 0 {
            let last = &p.last_error;
            self.events.push(
                EventKind::Error,
                name,
                job,
                None,
                format_args!("{} source error(s); last: {last}", p.errors),
            );
        }
    }
}

/// What became of a frame somebody wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// Published or handed to an encoder (or not wanted, or nothing was read).
    Taken,
    /// Every encoder was busy.
    NoEncoder,
    /// Every frame buffer was held by readers (or lent to encoders).
    NoBuffer,
    /// The source counted a frame but had no pixels to put anywhere.
    NotOffered,
}

/// Finds an encoder and a frame buffer for a raw frame when the source has one, not before
/// the read: the encoder of the previous frame is likely still at work when a read starts.
struct RawTarget<'a> {
    /// The JPEG encoders, when the frame is wanted as a JPEG.
    stage: Option<&'a Stage>,
    pool: Option<&'a mut FramePool>,
    got: Option<(crate::encode::Claim<'a>, crate::frame::Slot<'a>)>,
    /// What was missing when the source asked.
    missing: Got,
    /// The H.264 encoder, when an RTSP client watches.
    h264: Option<&'a crate::h264::stage::Stage>,
    /// Its image, when the source filled it directly (no JPEG wanted, or none free).
    got_h264: Option<crate::h264::stage::Claim<'a>>,
}

impl crate::capture::YuvTarget for RawTarget<'_> {
    fn image(&mut self) -> Option<&mut crate::jpeg::Yuv> {
        if self.got.is_none() && self.got_h264.is_none() {
            self.claim_jpeg();
            if self.got.is_none() {
                self.got_h264 = self.h264.and_then(crate::h264::stage::Stage::claim);
            }
        }
        match (&mut self.got, &mut self.got_h264) {
            (Some((claim, _)), _) => Some(claim.image()),
            (None, Some(claim)) => Some(claim.image()),
            (None, None) => None,
        }
    }
}

impl RawTarget<'_> {
    fn claim_jpeg(&mut self) {
        let Some(stage) = self.stage else { return };
        let Some(pool) = self.pool.take() else { return };
        let Some(claim) = stage.claim() else {
            self.missing = Got::NoEncoder;
            return;
        };
        // After the claim: a worker hands its buffer back before it turns idle.
        stage.reclaim(pool);
        let Some(slot) = pool.acquire() else {
            self.missing = Got::NoBuffer;
            return;
        };
        self.got = Some((claim, slot));
    }
}

/// Sets a frame's id, capture time and snapshot seq (0 when only the live view wants it);
/// returns the next id.
fn stamp(f: &mut Frame, id: u64, keep: bool, next_seq: &mut u64) -> u64 {
    f.id = id;
    f.captured_at = clock::unix_now();
    f.captured_mono_ms = clock::mono_ms();
    f.seq = if keep { *next_seq } else { 0 };
    if keep {
        *next_seq += 1;
    }
    id + 1
}

/// Where a camera's frames go: the live view always, and a kept frame (seq > 0) to the
/// snapshot ring and the store. Used by capture for JPEG sources and by the encoders.
pub struct Outputs {
    cam: Arc<CameraShared>,
    store: Option<(Sender<StoreItem>, usize)>,
    /// Frames the encoders could not encode: [larger than max_frame_bytes, refused].
    failed: [AtomicU64; 2],
    /// A kept frame could not be encoded: capture keeps the next one.
    retry_keep: AtomicBool,
}

impl Outputs {
    fn publish(&self, frame: Arc<Frame>) {
        if frame.seq != 0 {
            if let Some((tx, camera)) = &self.store {
                // Never wait for the disk: a full queue drops the write, not the frame.
                // Counted before the send: the store thread may finish it before try_send returns.
                self.cam.store.queued.fetch_add(1, Relaxed);
                if tx.try_send(StoreItem { camera: *camera, frame: Arc::clone(&frame) }).is_err() {
                    self.cam.store.queued.fetch_sub(1, Relaxed);
                    self.cam.store.dropped.fetch_add(1, Relaxed);
                }
            }
            drop(self.cam.snapshots.publish(Arc::clone(&frame)));
            self.cam.heartbeat.snapshots.fetch_add(1, Relaxed);
        }
        self.cam.heartbeat.clear_unusable();
        drop(self.cam.live.publish(frame));
    }
}

impl Sink for Outputs {
    fn publish(&self, frame: Arc<Frame>) {
        Outputs::publish(self, frame);
    }
    fn failed(&self, frame: &Frame, error: &crate::jpeg::Error) {
        let hb = &self.cam.heartbeat;
        if frame.seq != 0 {
            self.retry_keep.store(true, Relaxed);
        }
        hb.frames_dropped.fetch_add(1, Relaxed);
        let (i, cause, bytes) = match *error {
            crate::jpeg::Error::Full { needed } => (0, Unusable::Oversize, needed as u64),
            _ => (1, Unusable::Malformed, 0),
        };
        hb.note_unusable(cause, bytes);
        self.failed[i].fetch_add(1, Relaxed);
    }
}

/// Records a good frame: the camera is alive.
fn good_frame(hb: &crate::status::Heartbeat) {
    hb.frames_captured.fetch_add(1, Relaxed);
    hb.consecutive_errors.store(0, Relaxed);
    hb.last_frame_unix_ms.store((clock::unix_now() * 1000.0) as u64, Relaxed);
    hb.progress_ms.store(clock::mono_ms(), Release);
    if hb.phase() == Phase::Opening {
        hb.set_phase(Phase::Streaming);
    }
}
