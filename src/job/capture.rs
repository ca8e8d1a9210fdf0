//! The capture loop: one thread per camera (`capture-<name>`), the only owner of the camera's
//! source and frame pool.
//!
//! It does what the supervisor orders through a one-slot mailbox ([`Orders`]: the latest
//! order wins, so it can never fill up) and reports only through atomics ([`Heartbeat`]) and
//! the snapshot ring. It never waits on another thread: publishing is a pointer swap under a
//! short lock, and every source read is bounded by [`READ_WAIT`], so orders and the stop token
//! are looked at several times a second even when the camera is silent.
//!
//! Steady state allocates nothing per frame: buffers come from the pool, metadata goes into
//! fixed rings, counters are atomics.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};

use crate::capture::{DropCause, Opener, Read, Source};
use crate::clock;
use crate::events::EventKind;
use crate::frame::FramePool;
use crate::shutdown::Stop;
use crate::status::{CameraShared, Phase, Shared};
use crate::store::StoreItem;

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
        crossbeam::select! {
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
    shared: Arc<Shared>,
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
    store: Option<(Sender<StoreItem>, usize)>,
    /// When the next frame is due to be kept.
    next_keep: Instant,
    interval: Duration,
    /// When the next frame is due for the live view (only while somebody watches).
    next_live: Instant,
    /// The id of the next published frame (see [`crate::frame::Frame::id`]).
    next_id: u64,
    pending: Pending,
}

impl CaptureLoop {
    /// Prepares the loop: allocates the frame pool and builds the source opener.
    pub fn new(
        shared: Arc<Shared>,
        cam: Arc<CameraShared>,
        orders: Arc<Orders>,
        opener: Box<dyn Opener>,
        stop: Stop,
    ) -> CaptureLoop {
        let c = &cam.config;
        let pool = FramePool::new(c.frame_buffers, c.max_frame_bytes);
        let interval = Duration::from_millis(c.snapshot_interval_ms);
        CaptureLoop {
            shared,
            orders,
            opener,
            pool,
            stop,
            order: Order { job_id: 0, attempt: 0, max_frames: None, action: Action::Halt },
            seen_order: 0,
            source: None,
            next_seq: 1,
            store: None,
            next_keep: Instant::now(),
            interval,
            next_live: Instant::now(),
            next_id: 1,
            pending: Pending::default(),
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

    /// Runs until the stop token is triggered; then closes the source.
    pub fn run(mut self) {
        let hb = &self.cam.heartbeat;
        hb.set_phase(Phase::Idle);
        while !self.stop.is_set() {
            if let Some(order) = self.orders.take_new(&mut self.seen_order) {
                self.apply(order);
            }
            self.flush_events(false);
            match self.cam.heartbeat.phase() {
                Phase::Idle | Phase::Done | Phase::Broken => self.orders.wait(&self.stop, Duration::from_millis(500)),
                Phase::Backoff => self.backoff(),
                Phase::Opening if self.source.is_none() => self.open(),
                Phase::Opening | Phase::Streaming => self.read_one(),
            }
        }
        self.close();
        self.flush_events(true);
        self.cam.heartbeat.set_phase(Phase::Idle);
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
            self.orders.wait(&self.stop, until - now);
        }
    }

    fn open(&mut self) {
        let hb = &self.cam.heartbeat;
        hb.progress_ms.store(clock::mono_ms(), Release);
        match self.opener.open(self.order.job_id) {
            Ok(source) => {
                self.source = Some(source);
                self.next_keep = Instant::now();
            }
            Err(e) => {
                hb.errors_total.fetch_add(1, Relaxed);
                hb.set_last_error(&e.message);
                hb.set_phase(Phase::Broken);
                self.pending.last_error = crate::events::fixed(format_args!("{}", e.message));
                self.pending.errors += 1;
                self.pending.note();
            }
        }
    }

    fn close(&mut self) {
        // Dropping a source closes the device or kills and reaps the child.
        self.source = None;
    }

    /// Reads one frame (or times out) and publishes it if it is due to be kept or somebody
    /// watches the live view.
    fn read_one(&mut self) {
        let Some(source) = self.source.as_mut() else { return };
        let hb = &self.cam.heartbeat;
        let now = Instant::now();
        let keep = now >= self.next_keep;
        let live_every = self.cam.live.wanted_interval();
        let live = live_every.is_some() && now >= self.next_live;
        let mut slot = if keep || live { self.pool.acquire() } else { None };
        let dst = slot.as_mut().map(|s| s.frame().buffer_mut());
        let result = source.read(dst, READ_WAIT);
        match result {
            Ok(Read::Frame { len, width, height }) => {
                good_frame(hb);
                if let Some(mut slot) = slot {
                    let f = slot.frame();
                    f.set_len(len);
                    f.id = self.next_id;
                    f.seq = if keep { self.next_seq } else { 0 };
                    f.captured_at = clock::unix_now();
                    f.width = width;
                    f.height = height;
                    self.next_id += 1;
                    let frame = slot.share();
                    if keep {
                        self.next_seq += 1;
                        if let Some((tx, camera)) = &self.store {
                            // Never wait for the disk: a full queue drops the write, not the frame.
                            if tx.try_send(StoreItem { camera: *camera, frame: Arc::clone(&frame) }).is_err() {
                                self.cam.store.dropped.fetch_add(1, Relaxed);
                            }
                        }
                        let old = self.cam.snapshots.publish(Arc::clone(&frame));
                        drop(old);
                        hb.snapshots.fetch_add(1, Relaxed);
                        self.advance_keep(now);
                    }
                    // Every encoded frame is the live view's newest, kept or not.
                    let old = self.cam.live.publish(frame);
                    drop(old);
                    if let Some(every) = live_every {
                        self.next_live = (self.next_live + every).max(now);
                    }
                }
                self.check_limit();
            }
            Ok(Read::Consumed) => {
                good_frame(hb);
                if keep {
                    // Due to be kept, but every buffer is held by a reader.
                    self.dropped(None);
                    self.advance_keep(now);
                } else if live {
                    // Wanted only by the live view: skipped for it, not lost (it was captured).
                    hb.frames_skipped.fetch_add(1, Relaxed);
                }
                self.check_limit();
            }
            Ok(Read::Dropped(cause)) => self.dropped(Some(cause)),
            Ok(Read::Timeout) => {}
            Err(e) => {
                hb.errors_total.fetch_add(1, Relaxed);
                hb.consecutive_errors.fetch_add(1, Relaxed);
                hb.set_last_error(&e.message);
                self.pending.last_error = crate::events::fixed(format_args!("{}", e.message));
                self.pending.errors += 1;
                self.pending.note();
                if e.fatal {
                    self.source = None;
                    hb.set_phase(Phase::Broken);
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
        self.cam.heartbeat.frames_dropped.fetch_add(1, Relaxed);
        match cause {
            Some(DropCause::Oversize) => self.pending.oversize += 1,
            Some(DropCause::Garbage) => self.pending.garbage += 1,
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
            self.shared.events.push(
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
            self.shared.events.push(
                EventKind::Error,
                name,
                job,
                None,
                format_args!("{} source error(s); last: {last}", p.errors),
            );
        }
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
