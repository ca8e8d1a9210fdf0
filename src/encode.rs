//! The encode stage of one raw camera: `encoder_threads` named threads (`enc<N>-<camera>`),
//! each with its own planar image ([`Yuv`], allocated at start) and libjpeg encoder.
//!
//! Capture never waits on it. It claims an idle worker (one atomic swap), the source
//! deinterleaves the frame into that worker's image, and the worker gets a frame buffer lent
//! from capture's pool to encode into ([`crate::frame::Slot::lend`]). A frame that finds every
//! worker busy is not encoded: for the live view it is skipped and counted; a snapshot due to
//! be kept stays due, so the next frame a worker can take is kept (keeping is delayed by a
//! frame, never lost to streaming).
//!
//! Workers publish in capture order: each job carries a ticket, and a worker whose frame is
//! ready waits for the previous ticket to be published before publishing its own (it has
//! nothing else to do; capture is never the one waiting). Then it hands the buffer back to
//! the pool through a bounded channel that capture drains before each frame.

use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Release};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{self as channel, Receiver, Sender};

use crate::frame::{Frame, FramePool};
use crate::jpeg::{Encoder, Yuv};
use crate::shutdown::{Broke, Stop};
use crate::testhook::{self, Fault};

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// Where encoded frames go (implemented by the capture loop: the live view, the snapshot ring,
/// the store). Called by the workers, one at a time, in capture order.
pub trait Sink: Send + Sync {
    /// An encoded frame, ready for readers.
    fn publish(&self, frame: Arc<Frame>);
    /// A frame that could not be encoded (larger than `max_frame_bytes`, or refused).
    fn failed(&self, frame: &Frame, error: &crate::jpeg::Error);
}

/// What a worker is handed: the buffer to encode into (metadata already set by capture) and its
/// place in the publishing order.
struct Job {
    ticket: u64,
    frame: Arc<Frame>,
}

/// One worker as capture sees it.
struct Worker {
    /// Set by capture when it claims the worker, cleared by the worker when the job is done.
    busy: AtomicBool,
    /// The frame to encode; written by capture while claimed, read by the worker while busy
    /// (so the lock is never contended: it only makes the hand-over safe).
    image: Mutex<Yuv>,
}

/// A worker and the way to hand it a job (kept apart from [`Worker`], which the thread holds
/// too, so that dropping the stage closes the channel and ends the thread).
struct Lane {
    worker: Arc<Worker>,
    jobs: Sender<Job>,
}

/// Whose turn it is to publish, and whether the turns stopped (a worker broke).
struct Turn {
    next: Mutex<(u64, bool)>,
    moved: Condvar,
}

impl Turn {
    /// A worker broke mid-frame: its ticket will never pass, so nobody waits for it.
    fn give_up(&self) {
        self.next.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.moved.notify_all();
    }
}

/// The stage, owned by the capture thread.
pub struct Stage {
    lanes: Box<[Lane]>,
    /// Buffers the workers are done with, on their way back to the pool.
    returned: Receiver<Arc<Frame>>,
    /// The sending side, for a buffer that never reached its worker.
    back: Sender<Arc<Frame>>,
    next_ticket: std::cell::Cell<u64>,
    threads: Vec<JoinHandle<()>>,
}

/// An idle worker's image, claimed for one frame. Dropping it without [`Stage::submit`] gives
/// the worker back.
pub struct Claim<'a> {
    lane: &'a Lane,
    image: Option<MutexGuard<'a, Yuv>>,
}

impl Claim<'_> {
    /// The image to fill.
    pub fn image(&mut self) -> &mut Yuv {
        self.image.as_mut().expect("present until submitted")
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.image.take().is_some() {
            self.lane.worker.busy.store(false, Release);
        }
    }
}

/// How a worker encodes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Camera name, for thread names and logs.
    pub camera: String,
    /// Number of worker threads (at least 1).
    pub threads: usize,
    /// JPEG quality, 1–100.
    pub quality: u8,
    /// The frame size to allocate images for (a larger frame grows an image once).
    pub width: usize,
    /// See `width`.
    pub height: usize,
    /// Frame buffers in the pool (bounds the buffers out on loan).
    pub pool: usize,
}

impl Stage {
    /// Starts the workers. Each one's image is allocated and touched now.
    pub fn start(settings: &Settings, sink: Arc<dyn Sink>, stop: &Stop) -> std::io::Result<Stage> {
        let (back_tx, returned) = channel::bounded(settings.pool);
        let turn = Arc::new(Turn { next: Mutex::new((0, false)), moved: Condvar::new() });
        let mut lanes = Vec::with_capacity(settings.threads);
        let mut threads = Vec::with_capacity(settings.threads);
        for n in 0..settings.threads {
            let (jobs, rx) = channel::bounded(1);
            let worker = Arc::new(Worker {
                busy: AtomicBool::new(false),
                image: Mutex::new(Yuv::new(settings.width, settings.height)),
            });
            let run = Run {
                worker: Arc::clone(&worker),
                jobs: rx,
                turn: Arc::clone(&turn),
                sink: Arc::clone(&sink),
                back: back_tx.clone(),
                quality: settings.quality,
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new().name(format!("enc{n}-{}", settings.camera)).spawn(move || run.run())?,
            );
            lanes.push(Lane { worker, jobs });
        }
        Ok(Stage { lanes: lanes.into_boxed_slice(), returned, back: back_tx, next_ticket: Default::default(), threads })
    }

    /// An idle worker, or `None` when every one is busy.
    pub fn claim(&self) -> Option<Claim<'_>> {
        let lane = self.lanes.iter().find(|l| !l.worker.busy.swap(true, Acquire))?;
        let image = lane.worker.image.lock().unwrap_or_else(|e| e.into_inner());
        Some(Claim { lane, image: Some(image) })
    }

    /// Hands the claimed worker its filled image and `frame`, a buffer lent from the pool with
    /// the metadata set; the worker encodes into it and publishes it.
    pub fn submit(&self, mut claim: Claim<'_>, frame: Arc<Frame>) {
        drop(claim.image.take());
        let ticket = self.next_ticket.get();
        // Capacity 1 and the worker was idle: the slot is empty, so this fails only when the
        // worker is gone (it stopped the service on its way out). The ticket is then not used
        // (later frames must not wait for it), the buffer goes back to the pool and the lane
        // stays busy for good.
        match claim.lane.jobs.try_send(Job { ticket, frame }) {
            Ok(()) => self.next_ticket.set(ticket + 1),
            Err(e) => {
                let _ = self.back.try_send(e.into_inner().frame);
            }
        }
    }

    /// Puts the buffers the workers are done with back into `pool`.
    pub fn reclaim(&self, pool: &mut FramePool) {
        while let Ok(frame) = self.returned.try_recv() {
            pool.restore(frame);
        }
    }

    /// Workers encoding right now.
    pub fn busy(&self) -> usize {
        self.lanes.iter().filter(|l| l.worker.busy.load(Acquire)).count()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // Closing the job channels ends the workers even when the stop token is not set.
        self.lanes = Box::new([]);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A worker thread's state.
struct Run {
    worker: Arc<Worker>,
    jobs: Receiver<Job>,
    turn: Arc<Turn>,
    sink: Arc<dyn Sink>,
    back: Sender<Arc<Frame>>,
    quality: u8,
    stop: Stop,
}

impl Run {
    fn run(self) {
        let created = std::panic::catch_unwind(|| {
            assert!(!testhook::hit(Fault::EncoderCreate), "test hook: {}", Fault::EncoderCreate.name());
            Encoder::new()
        });
        let Ok(mut encoder) = created else {
            // Frames would wait for this worker's turn for ever: the service fails (exit 1).
            self.stop.fail(&thread_name(), Broke::NotStarted);
            return;
        };
        // The stage owns the sending side: dropping it (capture ending, at stop or not)
        // closes the channel and ends this loop, without a timer. A bounded channel's `recv`
        // allocates nothing.
        while let Ok(job) = self.jobs.recv() {
            // A panic here is a bug; the frames after it would wait forever for its turn, so
            // it fails the service (exit 1; systemd restarts it), as any core thread's does,
            // and the workers waiting for their turn give up.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.encode(&mut encoder, job)));
            if done.is_err() {
                self.turn.give_up();
                self.stop.fail(&thread_name(), Broke::Panicked);
                return;
            }
        }
    }

    fn encode(&self, encoder: &mut Encoder, job: Job) {
        assert!(!testhook::hit(Fault::EncoderPanic), "test hook: {}", Fault::EncoderPanic.name());
        let Job { ticket, mut frame } = job;
        let result = {
            let image = self.worker.image.lock().unwrap_or_else(|e| e.into_inner());
            let f = Arc::get_mut(&mut frame).expect("a lent buffer has one holder");
            let r = encoder.encode(&image, self.quality, f.buffer_mut());
            if let Ok(len) = r {
                f.set_len(len);
            }
            r
        };
        if !self.wait_turn(ticket) {
            return;
        }
        match &result {
            Ok(_) => self.sink.publish(Arc::clone(&frame)),
            Err(e) => self.sink.failed(&frame, e),
        }
        self.pass_turn();
        // Back before the worker is idle again, so a claim never finds the buffer missing.
        let _ = self.back.try_send(frame);
        self.worker.busy.store(false, Release);
    }

    /// Waits until `ticket` is next; false when a worker broke and the turns will not come.
    fn wait_turn(&self, ticket: u64) -> bool {
        let mut next = self.turn.next.lock().unwrap_or_else(|e| e.into_inner());
        while next.0 != ticket {
            if next.1 {
                return false;
            }
            next = self.turn.moved.wait(next).unwrap_or_else(|e| e.into_inner());
        }
        true
    }

    fn pass_turn(&self) {
        self.turn.next.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        self.turn.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    #[derive(Default)]
    struct Collect {
        ids: Mutex<Vec<u64>>,
        failed: AtomicU64,
    }

    impl Sink for Collect {
        fn publish(&self, frame: Arc<Frame>) {
            let n = frame.bytes().len();
            assert_eq!(&frame.bytes()[n - 2..], &[0xFF, 0xD9]);
            self.ids.lock().unwrap().push(frame.id);
        }
        fn failed(&self, frame: &Frame, error: &crate::jpeg::Error) {
            assert!(matches!(*error, crate::jpeg::Error::Full { .. }), "frame {}: {error}", frame.id);
            self.failed.fetch_add(1, Relaxed);
        }
    }

    fn settings(threads: usize, pool: usize) -> Settings {
        Settings { camera: "t".into(), threads, quality: 80, width: 64, height: 48, pool }
    }

    /// Claims a worker when one is free (bounded wait), fills it, lends a buffer and submits.
    fn feed(stage: &Stage, pool: &mut FramePool, id: u64) {
        for _ in 0..30_000 {
            stage.reclaim(pool);
            if let Some(mut claim) = stage.claim() {
                if let Some(mut slot) = pool.acquire() {
                    let img = claim.image();
                    img.set_size(64, 48);
                    let (y, ..) = img.planes_mut();
                    y.fill((id % 200) as u8 + 16);
                    slot.frame().id = id;
                    let lent = slot.lend();
                    stage.submit(claim, lent);
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no worker or buffer became free for frame {id}");
    }

    #[test]
    fn frames_come_out_in_capture_order_from_three_workers() {
        let sink = Arc::new(Collect::default());
        let stop = Stop::new();
        let stage = Stage::start(&settings(3, 6), sink.clone(), &stop).unwrap();
        let mut pool = FramePool::new(6, 16 * 1024);
        for id in 1..=200 {
            feed(&stage, &mut pool, id);
        }
        // Generous: the cross tests run this under qemu-user at the lowest priority.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !(sink.ids.lock().unwrap().len() == 200 && stage.busy() == 0) {
            assert!(std::time::Instant::now() < deadline, "the workers did not finish");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A worker sends its buffer back before it goes idle: all of them are in the channel.
        stage.reclaim(&mut pool);
        assert_eq!(*sink.ids.lock().unwrap(), (1..=200).collect::<Vec<_>>());
        assert_eq!(pool.free_count(), 6, "every lent buffer came back");
        drop(stage);
    }

    #[test]
    fn a_claim_given_up_frees_the_worker_and_a_full_buffer_is_reported() {
        let sink = Arc::new(Collect::default());
        let stop = Stop::new();
        let stage = Stage::start(&settings(1, 2), sink.clone(), &stop).unwrap();
        let claim = stage.claim().expect("idle");
        assert!(stage.claim().is_none(), "the only worker is claimed");
        drop(claim);
        assert!(stage.claim().is_some(), "given back");
        // Buffers too small for any JPEG: the frame fails, the order goes on.
        let mut pool = FramePool::new(2, 64);
        feed(&stage, &mut pool, 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !(sink.failed.load(Relaxed) == 1 && stage.busy() == 0) {
            assert!(std::time::Instant::now() < deadline, "the frame did not fail");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.failed.load(Relaxed), 1);
        stop.trigger();
        drop(stage);
    }
}
