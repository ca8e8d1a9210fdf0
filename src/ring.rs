//! The snapshot ring: the newest kept frame plus the metadata of the last
//! [`SNAPSHOT_RING`] snapshots, in fixed memory (a `heapless::HistoryBuf`).
//!
//! Capture is the only writer; it takes the lock just long enough to swap one `Arc` and
//! write one metadata entry. Readers take it just long enough to clone the `Arc`. Nothing in
//! here allocates after start-up.

use std::sync::{Arc, Mutex};

use heapless::HistoryBuf;
use serde::Serialize;

use crate::frame::Frame;

/// Snapshot metadata entries kept in memory per camera.
pub const SNAPSHOT_RING: usize = 64;

/// What the API says about a snapshot (`latest` in the job view).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SnapshotMeta {
    /// Per-camera sequence number; the `ETag` of `latest.jpg`.
    pub seq: u64,
    /// Capture time, Unix seconds.
    pub captured_at: f64,
    /// JPEG size in bytes.
    pub bytes: usize,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl SnapshotMeta {
    /// The metadata of a filled frame.
    pub fn of(frame: &Frame) -> SnapshotMeta {
        SnapshotMeta {
            seq: frame.seq,
            captured_at: frame.captured_at,
            bytes: frame.bytes().len(),
            width: frame.width,
            height: frame.height,
        }
    }
}

struct Inner {
    /// The newest kept frame; holding it keeps one pool buffer busy.
    latest: Option<Arc<Frame>>,
    /// Recent snapshots, oldest overwritten.
    history: HistoryBuf<SnapshotMeta, SNAPSHOT_RING>,
}

/// One camera's published snapshots.
pub struct SnapshotRing {
    inner: Mutex<Inner>,
}

impl Default for SnapshotRing {
    fn default() -> Self {
        SnapshotRing { inner: Mutex::new(Inner { latest: None, history: HistoryBuf::new() }) }
    }
}

impl SnapshotRing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent (two plain writes).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a frame as the newest snapshot. Returns the previous one so the caller drops
    /// it outside the lock.
    #[must_use = "drop the previous frame outside the lock"]
    pub fn publish(&self, frame: Arc<Frame>) -> Option<Arc<Frame>> {
        let meta = SnapshotMeta::of(&frame);
        let mut g = self.lock();
        g.history.write(meta);
        g.latest.replace(frame)
    }

    /// The newest snapshot, held until the returned `Arc` is dropped.
    pub fn latest(&self) -> Option<Arc<Frame>> {
        self.lock().latest.clone()
    }

    /// Metadata of the newest snapshot.
    pub fn latest_meta(&self) -> Option<SnapshotMeta> {
        self.lock().history.recent().copied()
    }

    /// Up to `limit` snapshots older than `before` (all when `None`), newest first.
    pub fn recent(&self, before: Option<u64>, limit: usize, out: &mut Vec<SnapshotMeta>) {
        let g = self.lock();
        let mut items: heapless::Vec<SnapshotMeta, SNAPSHOT_RING> = heapless::Vec::new();
        for m in g.history.oldest_ordered() {
            if before.is_none_or(|b| m.seq < b) {
                let _ = items.push(*m);
            }
        }
        out.extend(items.iter().rev().take(limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FramePool;

    fn frame(pool: &mut FramePool, seq: u64) -> Arc<Frame> {
        let mut s = pool.acquire().expect("free buffer");
        let f = s.frame();
        f.seq = seq;
        f.set_len(seq as usize % 8);
        s.share()
    }

    #[test]
    fn publish_replaces_latest_and_frees_the_old_buffer() {
        let mut pool = FramePool::new(2, 8);
        let ring = SnapshotRing::default();
        assert!(ring.latest().is_none());
        assert!(ring.publish(frame(&mut pool, 1)).is_none());
        let old = ring.publish(frame(&mut pool, 2)).expect("previous latest");
        assert_eq!(old.seq, 1);
        drop(old);
        assert_eq!(pool.free_count(), 1, "only the latest is held");
        assert_eq!(ring.latest().unwrap().seq, 2);
        assert_eq!(ring.latest_meta().unwrap().seq, 2);
    }

    #[test]
    fn history_is_bounded_and_newest_first() {
        let mut pool = FramePool::new(2, 8);
        let ring = SnapshotRing::default();
        for seq in 1..=(SNAPSHOT_RING as u64 * 3) {
            drop(ring.publish(frame(&mut pool, seq)));
        }
        let mut out = Vec::new();
        ring.recent(None, 1000, &mut out);
        assert_eq!(out.len(), SNAPSHOT_RING);
        assert_eq!(out[0].seq, SNAPSHOT_RING as u64 * 3);
        assert!(out.windows(2).all(|w| w[0].seq == w[1].seq + 1));
        out.clear();
        ring.recent(Some(150), 5, &mut out);
        assert_eq!(out.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![149, 148, 147, 146, 145]);
    }
}
