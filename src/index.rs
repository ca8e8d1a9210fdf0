//! The on-disk snapshot index: what the store has written, per camera, in a deque whose
//! capacity is `store.max_files`, allocated once (the store deletes the oldest file before it
//! would need more). The store thread writes it; HTTP reads it to list and serve snapshots.
//! Also the file layout: `storage.dir/<camera>/<yyyy-mm-dd>/<seq>.jpg`, days in UTC.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// `StoredSnapshot::mono_ms` of a file found at start-up: no jump seen now says anything
/// about the clock that dated it.
pub const FOUND_AT_START: u64 = u64::MAX;

/// One snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StoredSnapshot {
    /// Snapshot sequence number (the file name).
    pub seq: u64,
    /// Capture time, Unix seconds (the file's mtime for files found at start-up).
    pub captured_at: f64,
    /// File size.
    pub bytes: u64,
    /// Image size; 0 when not known (files found at start-up).
    pub width: u32,
    /// Image size; 0 when not known.
    pub height: u32,
    /// Change score against the previous kept snapshot (0–100); null when not known.
    pub change: Option<f32>,
    /// The UTC day directory it lives in, as days since 1970-01-01.
    #[serde(skip)]
    pub day: u32,
    /// Capture time on this process's monotonic clock: which side of a wall-clock jump
    /// `captured_at` was read on; [`FOUND_AT_START`] for files found at start-up, dated by a
    /// clock this process never saw (a jump it sees does not move them).
    #[serde(skip)]
    pub mono_ms: u64,
}

struct Inner {
    /// Ascending by seq; never grows past its initial capacity.
    files: VecDeque<StoredSnapshot>,
    bytes: u64,
}

/// One camera's stored snapshots.
pub struct SnapshotIndex {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl SnapshotIndex {
    /// An empty index for at most `capacity` files. Every slot is written once, so the
    /// memory is committed now rather than as the index fills over hours.
    pub fn new(capacity: usize) -> SnapshotIndex {
        let mut files = VecDeque::with_capacity(capacity);
        let blank = StoredSnapshot {
            seq: 0,
            captured_at: 0.0,
            bytes: 0,
            width: 0,
            height: 0,
            change: None,
            day: 0,
            mono_ms: 0,
        };
        files.resize(capacity, blank);
        files.clear();
        SnapshotIndex { inner: Mutex::new(Inner { files, bytes: 0 }), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Most files it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Files and bytes listed.
    pub fn usage(&self) -> (usize, u64) {
        let g = self.lock();
        (g.files.len(), g.bytes)
    }

    /// Appends a newer snapshot. Refused (returned) when full or not newer than the last:
    /// the caller makes room first.
    pub fn push(&self, s: StoredSnapshot) -> Result<(), StoredSnapshot> {
        let mut g = self.lock();
        if g.files.len() >= self.capacity || g.files.back().is_some_and(|b| b.seq >= s.seq) {
            return Err(s);
        }
        g.bytes += s.bytes;
        g.files.push_back(s);
        Ok(())
    }

    /// The oldest snapshot.
    pub fn oldest(&self) -> Option<StoredSnapshot> {
        self.lock().files.front().copied()
    }

    /// The newest snapshot.
    pub fn newest(&self) -> Option<StoredSnapshot> {
        self.lock().files.back().copied()
    }

    /// Removes the oldest entry (after its file was deleted).
    pub fn pop_oldest(&self) -> Option<StoredSnapshot> {
        let mut g = self.lock();
        let s = g.files.pop_front()?;
        g.bytes -= s.bytes;
        Some(s)
    }

    /// Removes the entry with this seq (its file is gone); `None` when it is not listed.
    pub fn remove(&self, seq: u64) -> Option<StoredSnapshot> {
        let mut g = self.lock();
        // Seqs rise from front to back: binary search over the whole deque.
        let (mut lo, mut hi) = (0, g.files.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match g.files[mid].seq.cmp(&seq) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let s = g.files.remove(mid)?;
                    g.bytes -= s.bytes;
                    return Some(s);
                }
            }
        }
        None
    }

    /// Dates every entry anew after a wall-clock jump (see [`crate::clock::Jump::redate`]);
    /// the entries that moved go into `out` (cleared first), so their files can follow.
    pub fn redate(&self, jump: &crate::clock::Jump, out: &mut Vec<StoredSnapshot>) {
        out.clear();
        for s in self.lock().files.iter_mut() {
            let at = jump.redate(s.captured_at, s.mono_ms);
            if at != s.captured_at {
                s.captured_at = at;
                out.push(*s);
            }
        }
    }

    /// The entries filed under `day`, into `out` (cleared first).
    pub fn of_day(&self, day: u32, out: &mut Vec<StoredSnapshot>) {
        out.clear();
        out.extend(self.lock().files.iter().filter(|s| s.day == day).copied());
    }

    /// The snapshot with this seq.
    pub fn find(&self, seq: u64) -> Option<StoredSnapshot> {
        let g = self.lock();
        let (a, b) = g.files.as_slices();
        for part in [a, b] {
            if let Ok(i) = part.binary_search_by_key(&seq, |s| s.seq) {
                return Some(part[i]);
            }
        }
        None
    }

    /// Snapshots with `from <= captured_at < to` and `seq <= last`: how many and their bytes.
    /// (An export counts what it will visit before it starts, so its progress is exact.)
    pub fn count_range(&self, from: f64, to: f64, last: u64) -> (u64, u64) {
        let g = self.lock();
        g.files
            .iter()
            .filter(|s| s.seq <= last && s.captured_at >= from && s.captured_at < to)
            .fold((0, 0), |(n, b), s| (n + 1, b + s.bytes))
    }

    /// Up to `limit` snapshots with `after < seq <= last` and `from <= captured_at < to`, oldest
    /// first. Pages of a range, so a long export never copies the whole index.
    pub fn range_after(&self, after: u64, last: u64, from: f64, to: f64, limit: usize, out: &mut Vec<StoredSnapshot>) {
        let g = self.lock();
        let start = g.files.partition_point(|s| s.seq <= after);
        out.extend(
            g.files
                .range(start..)
                .take_while(|s| s.seq <= last)
                .filter(|s| s.captured_at >= from && s.captured_at < to)
                .take(limit)
                .copied(),
        );
    }

    /// Up to `limit` snapshots older than `before` (all when `None`), newest first.
    pub fn page(&self, before: Option<u64>, limit: usize, out: &mut Vec<StoredSnapshot>) {
        let g = self.lock();
        out.extend(g.files.iter().rev().filter(|s| before.is_none_or(|b| s.seq < b)).take(limit).copied());
    }
}

/// Days since 1970-01-01 for Unix seconds (UTC).
pub fn day_of(unix_s: f64) -> u32 {
    (unix_s.max(0.0) / 86_400.0) as u32
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

/// `yyyy-mm-dd` for days since 1970-01-01 (proleptic Gregorian calendar).
pub fn day_name(day: u32) -> heapless::String<10> {
    let date = i32::try_from(day)
        .ok()
        .and_then(|d| time::Date::from_julian_day(UNIX_EPOCH_JULIAN_DAY.checked_add(d)?).ok())
        .unwrap_or(time::Date::MAX);
    let mut s = heapless::String::new();
    let _ = write!(s, "{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day());
    s
}

/// Days since 1970-01-01 for a `yyyy-mm-dd` name, if it is one (exactly: a name in another
/// spelling is not one of ours).
pub fn parse_day(name: &str) -> Option<u32> {
    let date = time::Date::parse(name, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    let days = u32::try_from(date.to_julian_day() - UNIX_EPOCH_JULIAN_DAY).ok()?;
    (day_name(days).as_str() == name).then_some(days)
}

/// The file of a snapshot. Built from numbers only, so no request can reach outside the
/// camera's directory.
pub fn snapshot_path(dir: &Path, camera: &str, day: u32, seq: u64) -> PathBuf {
    dir.join(snapshot_rel(camera, day, seq))
}

/// The same, relative to `storage.dir` (for opening it without following links).
pub fn snapshot_rel(camera: &str, day: u32, seq: u64) -> PathBuf {
    Path::new(camera).join(day_name(day).as_str()).join(format!("{seq}.jpg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: u64, bytes: u64) -> StoredSnapshot {
        StoredSnapshot { seq, captured_at: seq as f64, bytes, width: 0, height: 0, change: None, day: 0, mono_ms: 0 }
    }

    #[test]
    fn an_entry_can_be_removed_from_the_middle() {
        let idx = SnapshotIndex::new(8);
        for seq in 1..=5 {
            idx.push(snap(seq, 10)).unwrap();
        }
        assert_eq!(idx.remove(3).map(|s| s.seq), Some(3));
        assert_eq!(idx.remove(3), None, "already gone");
        assert_eq!(idx.remove(9), None);
        assert_eq!(idx.usage(), (4, 40));
        assert_eq!(idx.find(4).map(|s| s.seq), Some(4));
        assert_eq!((idx.oldest().unwrap().seq, idx.newest().unwrap().seq), (1, 5));
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(day_name(0).as_str(), "1970-01-01");
        assert_eq!(day_name(19_782).as_str(), "2024-02-29");
        assert_eq!(day_name(day_of(1_795_449_316.0)).as_str(), "2026-11-23");
        for d in (0..40_000).step_by(7) {
            assert_eq!(parse_day(day_name(d).as_str()), Some(d));
        }
        for bad in ["2026-02-30", "2026-13-01", "26-11-23", "2026/11/23", "abcd-ef-gh", "2026-11-2x"] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn index_is_bounded_ordered_and_paged() {
        let idx = SnapshotIndex::new(3);
        for s in 1..=3 {
            idx.push(snap(s, 10)).unwrap();
        }
        assert!(idx.push(snap(4, 10)).is_err(), "full: the caller must delete first");
        assert_eq!(idx.pop_oldest().unwrap().seq, 1);
        assert!(idx.push(snap(3, 10)).is_err(), "seq must increase");
        idx.push(snap(9, 5)).unwrap();
        assert_eq!(idx.usage(), (3, 25));
        assert_eq!(idx.find(9).unwrap().bytes, 5);
        assert!(idx.find(1).is_none());
        let mut out = Vec::new();
        idx.page(Some(9), 10, &mut out);
        assert_eq!(out.iter().map(|s| s.seq).collect::<Vec<_>>(), [3, 2]);
    }

    #[test]
    fn ranges_page_oldest_first_within_time_and_seq_bounds() {
        let idx = SnapshotIndex::new(10);
        for s in 1..=8 {
            idx.push(snap(s, 10)).unwrap(); // captured_at == seq
        }
        assert_eq!(idx.count_range(2.0, 7.0, 5), (4, 40), "seq 2..=5: to excludes 7, last cuts 6");
        let mut out = Vec::new();
        idx.range_after(0, 8, 2.0, 7.0, 2, &mut out);
        assert_eq!(out.iter().map(|s| s.seq).collect::<Vec<_>>(), [2, 3]);
        out.clear();
        idx.range_after(3, 8, 2.0, 7.0, 10, &mut out);
        assert_eq!(out.iter().map(|s| s.seq).collect::<Vec<_>>(), [4, 5, 6]);
        out.clear();
        idx.range_after(6, 8, 2.0, 7.0, 10, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn paths_are_built_from_numbers() {
        let p = snapshot_path(Path::new("/data"), "cam0", 19_782, 42);
        assert_eq!(p, Path::new("/data/cam0/2024-02-29/42.jpg"));
    }
}
