//! A camera's store counters (written by the store thread) and their API view.

use std::sync::atomic::{AtomicU32, AtomicU64};

use serde::Serialize;

/// What happened to this camera's kept snapshots on their way to disk.
#[derive(Default)]
pub struct StoreStats {
    /// Files written.
    pub written: AtomicU64,
    /// Snapshots handed to the store thread and not yet written (or skipped): 0 when the
    /// store is idle.
    pub queued: AtomicU64,
    /// Snapshots not written because the store queue was full (capture never waits).
    pub dropped: AtomicU64,
    /// Failed writes (full disk, permissions, ...).
    pub errors: AtomicU64,
    /// Files deleted by retention.
    pub deleted: AtomicU64,
    /// Snapshots not written because `keep: changed` found them unchanged.
    pub unchanged: AtomicU64,
    /// The last change score, as `f32` bits (NaN before the second snapshot).
    pub last_change: AtomicU32,
    /// Microseconds spent writing files (create, write, fsync if configured, rename), in all
    /// and the slowest one: what `storage.fsync` costs, measured where it is paid.
    pub write_us_total: AtomicU64,
    /// See `write_us_total`.
    pub write_us_max: AtomicU64,
    /// What the start-up scan found and repaired (set once, before capture starts).
    pub at_start: std::sync::OnceLock<AtStart>,
}

/// What the start-up scan of a camera's snapshot files found and repaired: the files of earlier
/// runs, read back into the index (the power-cut test reads these, not the log line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AtStart {
    /// Snapshot files listed again.
    pub found: u64,
    /// The newest of them (0: none); the new job's snapshots number on after it.
    pub newest_seq: u64,
    /// Temp files of a write cut short, deleted.
    pub temp_files_removed: u64,
    /// Empty files (a power cut before writeback), deleted.
    pub empty_files_removed: u64,
    /// Files beyond `max_files`, deleted.
    pub over_max_files_removed: u64,
}

/// The API's view of a camera's store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreView {
    /// Whether snapshots are written at all.
    pub enabled: bool,
    /// Files on disk.
    pub files: usize,
    /// Bytes on disk.
    pub bytes: u64,
    /// Files written since the process started.
    pub written: u64,
    /// Snapshots waiting for (or being written by) the store thread.
    pub queued: u64,
    /// Snapshots dropped because the store queue was full.
    pub dropped: u64,
    /// Failed writes.
    pub errors: u64,
    /// Files deleted by retention.
    pub deleted: u64,
    /// Snapshots skipped by `keep: changed`.
    pub unchanged: u64,
    /// The last change score (0–100), null before there is one.
    pub last_change: Option<f32>,
    /// The score that counts as a change (from the config).
    pub change_threshold: f32,
    /// Mean time to write one file (ms; null before the first).
    pub write_ms_mean: Option<f64>,
    /// The slowest write since the process started (ms).
    pub write_ms_max: f64,
    /// What the start-up scan found and repaired (null while it has not run, or with `enabled`
    /// false).
    pub at_start: Option<AtStart>,
}
