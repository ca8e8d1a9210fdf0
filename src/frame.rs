//! The frame pool: `count` buffers of `max_frame_bytes`, allocated once at start-up.
//!
//! Ownership is the locking mechanism. The pool is owned by one capture thread and holds an
//! `Arc<Frame>` per slot. A slot whose `Arc` has no other holder (strong count 1) is free:
//! capture gets `&mut Frame` through `Arc::get_mut` and fills it. Publishing clones the `Arc`
//! (a counter increment, no allocation); every reader — an HTTP response, later the store —
//! holds a clone while it uses the bytes, and the slot becomes free again when the last clone
//! is dropped. When no slot is free, capture drops the frame and counts it; the pool never
//! grows. No `unsafe` is needed.
//!
//! A buffer can also be *lent* ([`Slot::lend`]): the pool gives up its `Arc` so another thread
//! (an encoder) holds the only one and may fill it, then hands it back ([`FramePool::restore`])
//! after publishing clones. A lent buffer is simply absent from the pool until it returns.

use std::sync::Arc;

/// One captured JPEG and what is known about it.
#[derive(Debug)]
pub struct Frame {
    /// The buffer, `max_frame_bytes` long; only `..len` is the image.
    data: Box<[u8]>,
    /// Bytes of JPEG at the start of `data`.
    len: usize,
    /// Published frame number (per camera, increasing over the process's life): tells a
    /// stream client that a frame is new, and keys the HTTP copies ([`crate::live`]).
    pub id: u64,
    /// Snapshot sequence number (per camera, increasing) of a kept frame; 0 for a frame that
    /// was published only to the live view.
    pub seq: u64,
    /// Capture time, Unix seconds.
    pub captured_at: f64,
    /// Capture time on the monotonic clock ([`crate::clock::mono_ms`]): lets the store tell
    /// whether `captured_at` was read before or after a wall-clock jump.
    pub captured_mono_ms: u64,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl Frame {
    /// The JPEG bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
    /// The whole buffer, for a source to write into.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
    /// Makes this frame a copy of `other` (bytes and metadata). `other` must fit: both come
    /// from pools of the same `max_frame_bytes`.
    pub fn copy_from(&mut self, other: &Frame) {
        let n = other.len;
        self.data[..n].copy_from_slice(&other.data[..n]);
        self.len = n;
        self.id = other.id;
        self.seq = other.seq;
        self.captured_at = other.captured_at;
        self.captured_mono_ms = other.captured_mono_ms;
        self.width = other.width;
        self.height = other.height;
    }
    /// Records how many bytes of the buffer hold the image.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.data.len(), "frame length beyond its buffer");
        self.len = len;
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// A fixed set of frame buffers. See the module docs for the ownership rules.
pub struct FramePool {
    /// One `Arc` per buffer, `None` while lent; never resized.
    slots: Box<[Option<Arc<Frame>>]>,
    /// Where the search for a free slot starts, so buffers are used round-robin.
    next: usize,
}

impl FramePool {
    /// Allocates `count` buffers of `max_frame_bytes` each and touches every page, so the
    /// memory is committed at start-up (an undersized board fails now, not hours later, and
    /// RSS shows the real footprint from the first second).
    pub fn new(count: usize, max_frame_bytes: usize) -> FramePool {
        assert!(count >= 1, "a frame pool needs at least one buffer");
        let slots = (0..count)
            .map(|_| {
                Some(Arc::new(Frame {
                    // Not zero: the compiler may turn a zeroed allocation into calloc, whose
                    // pages stay untouched.
                    data: vec![0x55u8; max_frame_bytes].into_boxed_slice(),
                    len: 0,
                    id: 0,
                    seq: 0,
                    captured_at: 0.0,
                    captured_mono_ms: 0,
                    width: 0,
                    height: 0,
                }))
            })
            .collect();
        FramePool { slots, next: 0 }
    }

    /// Number of buffers.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Buffers nobody but the pool holds right now.
    pub fn free_count(&self) -> usize {
        self.present().filter(|s| Arc::strong_count(s) == 1).count()
    }

    fn present(&self) -> impl Iterator<Item = &Arc<Frame>> {
        self.slots.iter().flatten()
    }

    /// A buffer holding frame `id`, if one still does (held or not: a free buffer keeps its
    /// bytes until it is filled again).
    pub fn find(&self, id: u64) -> Option<Arc<Frame>> {
        self.present().find(|s| s.id == id && s.len > 0).cloned()
    }

    /// The held buffer with the newest frame (by id), if any buffer holds one.
    pub fn newest(&self) -> Option<Arc<Frame>> {
        self.present().filter(|s| s.len > 0).max_by_key(|s| s.id).cloned()
    }

    /// A free buffer to fill, or `None` when every buffer is held by a reader or lent.
    pub fn acquire(&mut self) -> Option<Slot<'_>> {
        let n = self.slots.len();
        let index = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| self.slots[i].as_ref().is_some_and(|s| Arc::strong_count(s) == 1))?;
        self.next = (index + 1) % n;
        Some(Slot { pool: self, index })
    }

    /// Takes back a buffer lent by [`Slot::lend`] (readers may still hold clones: it is free
    /// again once they are gone).
    pub fn restore(&mut self, frame: Arc<Frame>) {
        let empty = self.slots.iter_mut().find(|s| s.is_none()).expect("a lent buffer has an empty slot to return to");
        *empty = Some(frame);
    }
}

/// A free buffer, exclusively ours until [`Slot::share`] publishes it.
pub struct Slot<'a> {
    pool: &'a mut FramePool,
    index: usize,
}

impl Slot<'_> {
    /// The frame to fill.
    pub fn frame(&mut self) -> &mut Frame {
        // The pool is owned by this thread and the slot had no other holder when acquired;
        // clones are only made by `share`, which consumes the slot, so none exist now.
        let slot = self.pool.slots[self.index].as_mut().expect("acquired slot is present");
        Arc::get_mut(slot).expect("acquired slot is unshared")
    }
    /// Hands out a reference to the filled frame; the buffer stays busy until all are dropped.
    pub fn share(self) -> Arc<Frame> {
        Arc::clone(self.pool.slots[self.index].as_ref().expect("acquired slot is present"))
    }
    /// Gives the buffer away: the caller holds the only reference (so `Arc::get_mut` works on
    /// any thread) until it is handed back with [`FramePool::restore`].
    pub fn lend(self) -> Arc<Frame> {
        self.pool.slots[self.index].take().expect("acquired slot is present")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_pool_refuses_instead_of_growing() {
        let mut pool = FramePool::new(2, 16);
        let a = {
            let mut s = pool.acquire().unwrap();
            s.frame().buffer_mut()[..3].copy_from_slice(b"abc");
            s.frame().set_len(3);
            s.share()
        };
        let b = pool.acquire().unwrap().share();
        assert_eq!(a.bytes(), b"abc");
        assert!(pool.acquire().is_none(), "both buffers are held");
        assert_eq!(pool.free_count(), 0);
        drop(b);
        assert_eq!(pool.free_count(), 1);
        let c = pool.acquire().unwrap().share();
        assert!(!Arc::ptr_eq(&a, &c), "a held buffer is never handed out again");
        assert_eq!(pool.capacity(), 2);
    }

    #[test]
    fn buffers_are_used_round_robin() {
        let mut pool = FramePool::new(3, 8);
        let first = Arc::as_ptr(&pool.acquire().unwrap().share());
        let second = Arc::as_ptr(&pool.acquire().unwrap().share());
        assert_ne!(first, second);
    }

    #[test]
    fn a_lent_buffer_is_filled_elsewhere_and_comes_back() {
        let mut pool = FramePool::new(2, 8);
        let mut lent = pool.acquire().unwrap().lend();
        assert_eq!(pool.free_count(), 1, "a lent buffer is not free");
        let other = pool.acquire().unwrap().share();
        assert!(pool.acquire().is_none(), "one held, one lent");
        let filler = std::thread::spawn(move || {
            let f = Arc::get_mut(&mut lent).expect("the borrower holds the only reference");
            f.buffer_mut()[..2].copy_from_slice(b"hi");
            f.set_len(2);
            f.id = 7;
            lent
        });
        let lent = filler.join().unwrap();
        let reader = Arc::clone(&lent);
        pool.restore(lent);
        assert_eq!(pool.find(7).unwrap().bytes(), b"hi");
        assert!(pool.acquire().is_none(), "restored but still read");
        drop((reader, other));
        assert_eq!(pool.free_count(), 2);
    }

    #[test]
    #[should_panic(expected = "beyond its buffer")]
    fn length_cannot_exceed_buffer() {
        let mut pool = FramePool::new(1, 4);
        pool.acquire().unwrap().frame().set_len(5);
    }
}
