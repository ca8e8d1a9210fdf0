//! The live view of one camera: the newest encoded frame, who wants frames and how often, and
//! the copies that HTTP readers hold.
//!
//! Capture publishes every frame it encodes here ([`LiveFeed::publish`]: a pointer swap under
//! a short lock and a wake-up, no allocation). It encodes frames beyond the snapshot cadence
//! only while somebody asks for them ([`LiveFeed::wanted_interval`]): a stream client
//! registered with [`LiveFeed::join`], or a `/snapshot?next=1` waiting for a fresh one. With
//! nobody watching, the cost falls back to the snapshot rate's.
//!
//! Readers never hold capture's buffers for long ("readers never slow the writer"). A reader asks
//! [`LiveFeed::copy`] for a frame: the first reader of a newly published frame copies it into
//! one of this camera's `http.frame_copies` buffers (a second fixed pool, allocated at
//! start), and every later reader of that frame shares the copy. Capture's buffer is held
//! only for that one `memcpy`. A client that reads one byte a second holds a copy, never a
//! capture buffer. When every copy is held by a slow reader, a reader gets the newest copy
//! there is (one frame behind) and the miss is counted: memory stays fixed and capture is
//! untouched.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::frame::{Frame, FramePool};

/// What a stream client asked for, kept in one fixed slot per client.
const FREE: u32 = 0;

/// One camera's live view. Built at start-up; nothing in it grows.
pub struct LiveFeed {
    /// The newest frame capture encoded (a capture-pool buffer; readers copy it, see
    /// [`LiveFeed::copy`]).
    latest: Mutex<Option<Arc<Frame>>>,
    /// The id of `latest`, for waking readers (0: none yet).
    published: watch::Sender<u64>,
    /// One slot per possible stream client: the interval in ms it wants frames at (1 for
    /// "every frame"), or [`FREE`]. Fixed length: `http.max_stream_clients`.
    clients: Box<[AtomicU32]>,
    /// Stream clients registered now (the slots in use): capture reads this one atomic per
    /// frame and looks at the slots only while it is not zero.
    registered: AtomicU32,
    /// `/snapshot?next=1` requests waiting now: capture encodes the next frame for them.
    waiters: AtomicU32,
    /// The copies HTTP readers hold.
    copies: Mutex<FramePool>,
    /// Reads answered with an older copy because every copy buffer was held.
    copies_missed: AtomicU64,
}

impl LiveFeed {
    /// A feed for up to `max_clients` stream clients, with `copies` buffers of
    /// `max_frame_bytes` for readers (allocated and touched now).
    pub fn new(max_clients: usize, copies: usize, max_frame_bytes: usize) -> LiveFeed {
        LiveFeed {
            latest: Mutex::new(None),
            published: watch::Sender::new(0),
            clients: (0..max_clients.max(1)).map(|_| AtomicU32::new(FREE)).collect(),
            registered: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            copies: Mutex::new(FramePool::new(copies.max(1), max_frame_bytes)),
            copies_missed: AtomicU64::new(0),
        }
    }

    /// Capture's side: `frame` is the newest encoded frame. Returns the previous one so that
    /// capture drops it outside the lock.
    #[must_use = "drop the previous frame outside the lock"]
    pub fn publish(&self, frame: Arc<Frame>) -> Option<Arc<Frame>> {
        let id = frame.id;
        let old = self.latest.lock().unwrap_or_else(|e| e.into_inner()).replace(frame);
        // No receivers is fine: nobody is watching.
        self.published.send_replace(id);
        old
    }

    /// Capture's side: how often somebody wants a frame beyond the snapshot cadence, or `None`
    /// when nobody does. `Some(ZERO)` means every frame.
    pub fn wanted_interval(&self) -> Option<Duration> {
        if self.waiters.load(Relaxed) > 0 {
            return Some(Duration::ZERO);
        }
        if self.registered.load(Relaxed) == 0 {
            return None;
        }
        let ms = self.clients.iter().map(|c| c.load(Relaxed)).filter(|&v| v != FREE).min()?;
        // 1 ms stands for "every frame" (0 marks a free slot).
        Some(if ms <= 1 { Duration::ZERO } else { Duration::from_millis(u64::from(ms)) })
    }

    /// The id of the newest published frame (0 before the first).
    pub fn latest_id(&self) -> u64 {
        *self.published.borrow()
    }

    /// A receiver that wakes when a frame is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Registers a stream client that wants a frame every `interval` (zero: every frame).
    /// `None` when every slot is taken. The slot is freed when the guard is dropped.
    pub fn join(self: &Arc<Self>, interval: Duration) -> Option<Watcher> {
        let ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX).max(1);
        let slot = self.clients.iter().position(|c| c.compare_exchange(FREE, ms, Relaxed, Relaxed).is_ok())?;
        self.registered.fetch_add(1, Relaxed);
        Some(Watcher { feed: Arc::clone(self), slot })
    }

    /// Marks a `next=1` request as waiting until the guard is dropped.
    pub fn wait_next(self: &Arc<Self>) -> NextWaiter {
        self.waiters.fetch_add(1, Relaxed);
        NextWaiter { feed: Arc::clone(self) }
    }

    /// Stream clients registered now.
    pub fn clients(&self) -> usize {
        self.registered.load(Relaxed) as usize
    }

    /// Reads answered with an older copy because every copy was held.
    pub fn copies_missed(&self) -> u64 {
        self.copies_missed.load(Relaxed)
    }

    /// How old the newest published frame is (by the wall clock it was stamped with), or
    /// `None` before the first.
    pub fn newest_age(&self) -> Option<Duration> {
        let at = self.latest.lock().unwrap_or_else(|e| e.into_inner()).as_ref()?.captured_at;
        Some(Duration::from_secs_f64((crate::clock::unix_now() - at).max(0.0)))
    }

    /// The newest published frame as a copy a reader may hold as long as it likes, or `None`
    /// before the first frame.
    pub fn newest(&self) -> Option<Arc<Frame>> {
        let src = self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(self.copy(&src))
    }

    /// A copy of `src` (a capture-pool frame) that does not hold capture's buffer: shared
    /// with every other reader of the same frame. When every copy buffer is held, the newest
    /// copy there is (counted in [`LiveFeed::copies_missed`]): right for a live view, which
    /// wants *a* recent frame.
    pub fn copy(&self, src: &Arc<Frame>) -> Arc<Frame> {
        let mut pool = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        Self::copy_in(&mut pool, src).unwrap_or_else(|| {
            self.copies_missed.fetch_add(1, Relaxed);
            // Every buffer is held, so each holds a frame: `newest` finds one.
            pool.newest().expect("a held copy")
        })
    }

    /// A copy of exactly `src`, or `None` when every copy buffer is held by other frames
    /// (counted): for readers that name the frame (`latest.jpg` by its `ETag`, a snapshot by
    /// its seq), which must never get another one.
    pub fn copy_exact(&self, src: &Arc<Frame>) -> Option<Arc<Frame>> {
        let mut pool = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        let copy = Self::copy_in(&mut pool, src);
        if copy.is_none() {
            self.copies_missed.fetch_add(1, Relaxed);
        }
        copy
    }

    fn copy_in(pool: &mut FramePool, src: &Arc<Frame>) -> Option<Arc<Frame>> {
        if let Some(c) = pool.find(src.id) {
            return Some(c);
        }
        let mut slot = pool.acquire()?;
        slot.frame().copy_from(src);
        Some(slot.share())
    }
}

/// A registered stream client; its slot is freed on drop.
pub struct Watcher {
    feed: Arc<LiveFeed>,
    slot: usize,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.feed.clients[self.slot].store(FREE, Relaxed);
        self.feed.registered.fetch_sub(1, Relaxed);
    }
}

/// A waiting `next=1` request; uncounted on drop.
pub struct NextWaiter {
    feed: Arc<LiveFeed>,
}

impl Drop for NextWaiter {
    fn drop(&mut self) {
        self.feed.waiters.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pool: &mut FramePool, id: u64, byte: u8) -> Arc<Frame> {
        let mut s = pool.acquire().expect("free buffer");
        let f = s.frame();
        f.id = id;
        f.buffer_mut()[..4].fill(byte);
        f.set_len(4);
        s.share()
    }

    #[test]
    fn demand_is_the_fastest_client_and_leaves_with_it() {
        let feed = Arc::new(LiveFeed::new(2, 2, 16));
        assert_eq!(feed.wanted_interval(), None);
        let slow = feed.join(Duration::from_millis(200)).unwrap();
        assert_eq!(feed.wanted_interval(), Some(Duration::from_millis(200)));
        let fast = feed.join(Duration::ZERO).unwrap();
        assert_eq!(feed.wanted_interval(), Some(Duration::ZERO));
        assert!(feed.join(Duration::ZERO).is_none(), "two slots only");
        assert_eq!(feed.clients(), 2);
        drop(fast);
        assert_eq!(feed.wanted_interval(), Some(Duration::from_millis(200)));
        drop(slow);
        assert_eq!(feed.wanted_interval(), None);
        let waiter = feed.wait_next();
        assert_eq!(feed.wanted_interval(), Some(Duration::ZERO));
        drop(waiter);
        assert_eq!(feed.wanted_interval(), None);
    }

    #[test]
    fn readers_share_one_copy_and_never_hold_capture_buffers() {
        let mut capture = FramePool::new(2, 16);
        let feed = LiveFeed::new(1, 2, 16);
        assert!(feed.newest().is_none());
        drop(feed.publish(frame(&mut capture, 1, 0xAA)));
        let a = feed.newest().unwrap();
        let b = feed.newest().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one copy per published frame");
        assert_eq!(a.bytes(), &[0xAA; 4]);
        // Only the feed's `latest` holds a capture buffer; the readers hold copies.
        assert_eq!(capture.free_count(), 1);
        drop(feed.publish(frame(&mut capture, 2, 0xBB)));
        let c = feed.newest().unwrap();
        assert_eq!((c.id, c.bytes()), (2, &[0xBB; 4][..]));
        // Both copy buffers are held (frames 1 and 2); frame 3 cannot be copied, so a reader
        // gets the newest copy there is, and the miss is counted.
        drop(feed.publish(frame(&mut capture, 3, 0xCC)));
        let d = feed.newest().unwrap();
        assert_eq!(d.id, 2);
        assert_eq!(feed.copies_missed(), 1);
        // A reader that names frame 3 gets it or nothing, never frame 2.
        let three = feed.latest.lock().unwrap().clone().unwrap();
        assert!(feed.copy_exact(&three).is_none());
        assert_eq!(feed.copies_missed(), 2);
        drop((a, b));
        let e = feed.newest().unwrap();
        assert_eq!(e.id, 3, "a released copy buffer takes the newest frame");
        assert_eq!(capture.free_count(), 1, "the feed holds one capture buffer, whatever readers do");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn publishing_wakes_subscribers() {
        let mut capture = FramePool::new(2, 16);
        let feed = LiveFeed::new(1, 1, 16);
        let mut rx = feed.subscribe();
        drop(feed.publish(frame(&mut capture, 7, 1)));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 7);
        assert_eq!(feed.latest_id(), 7);
    }
}
