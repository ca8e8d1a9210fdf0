//! One export in progress, as the writers ([`super::archive`], [`super::timelapse`]) see it:
//! the range walked page by page, snapshot files opened without following links, and between
//! files everything that may stop it (cancellation, shutdown, the byte budget, free space)
//! and the pacing `exports.max_files_per_s` asks for. Progress only goes up and is published
//! at most once a second.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::record::ExportView;
use crate::index::StoredSnapshot;
use crate::shutdown::Stop;
use crate::status::CameraShared;

/// Progress is published at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Snapshots fetched from the index at a time.
pub(super) const PAGE: usize = 64;

/// The test hook's environment variable: the export panics when it reaches this file
/// (1-based). Debug builds only; a release build has no such hook.
#[cfg(debug_assertions)]
const PANIC_AT_FILE_ENV: &str = "CAMJOBD_TEST_EXPORT_PANIC_AT_FILE";

/// The test hook, read once when the exports are opened (debug builds only).
#[cfg(debug_assertions)]
pub(super) fn panic_hook() -> Option<u64> {
    let text = std::env::var(PANIC_AT_FILE_ENV).ok()?;
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => {
            log::warn!("exports: {PANIC_AT_FILE_ENV}={n}: every export panics at file {n} (a test hook)");
            Some(n)
        }
        _ => {
            log::warn!("exports: {PANIC_AT_FILE_ENV}={text:?} is not a file number from 1; ignored");
            None
        }
    }
}

/// How an export ended when it did not succeed.
#[derive(Debug)]
pub enum Ended {
    /// Cancelled, or interrupted by shutdown.
    Cancelled,
    /// With this message (no paths in it).
    Failed(String),
}

/// An I/O failure as the message an export fails with.
pub(super) fn io_failed(what: &str, e: &io::Error) -> Ended {
    Ended::Failed(format!("cannot {what}: {e}{}", crate::error::storage_hint(e)))
}

/// One export in progress, handed to the writer of its kind: walks the range page by page
/// and keeps the progress.
pub struct Run<'a> {
    pub(super) cam: &'a CameraShared,
    pub(super) events: &'a crate::events::EventLog,
    pub(super) storage_dir: &'a Path,
    pub(super) exports: &'a File,
    /// The export.
    pub view: &'a ExportView,
    /// The newest snapshot when it started: the range ends there.
    pub(super) last: u64,
    /// Snapshots in the range when it started.
    pub total: u64,
    pub(super) cancel: &'a AtomicBool,
    pub(super) stop: &'a Stop,
    /// `exports.max_bytes`, for the message.
    pub(super) max_bytes: u64,
    /// Makes room for this export's file to reach a size (the oldest finished files go);
    /// false when it cannot fit.
    pub(super) room: &'a dyn Fn(u64) -> bool,
    pub(super) min_free: u64,
    #[cfg(debug_assertions)]
    pub(super) panic_at_file: Option<u64>,
    pub(super) max_files_per_s: Option<u32>,
    pub(super) started: Instant,
    /// Snapshot files opened (what `max_files_per_s` paces; a timelapse skips most files).
    pub(super) opened: u64,
    pub(super) page: &'a mut Vec<StoredSnapshot>,
    pub(super) visited: u64,
    pub(super) published: Instant,
    pub(super) percent: u8,
    /// The last `(done, bytes)` reported, published however the export ends.
    pub(super) last_reported: (u64, u64),
    pub(super) progress: &'a dyn Fn(u64, u64, u8),
}

impl Run<'_> {
    /// The camera's name (archive paths).
    pub fn camera(&self) -> &str {
        &self.cam.name
    }

    /// Opens a snapshot file for reading (and counts it for `max_files_per_s`).
    pub fn open(&mut self, s: &StoredSnapshot) -> io::Result<File> {
        self.opened += 1;
        // Never through a link planted in storage.dir (an archive must not carry /etc/shadow).
        let rel = crate::index::snapshot_rel(&self.cam.name, s.day, s.seq);
        match crate::sys::open_regular_beneath(self.storage_dir, &rel) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Gone: by retention (already unlisted) or outside camjobd (unlisted now).
                crate::store::forget_missing(self.events, self.storage_dir, self.cam, s.seq);
                Err(e)
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.kind() == io::ErrorKind::InvalidData => {
                self.events.error(&self.cam.name, format_args!("{} in storage.dir is not a regular file (a link or something planted there); left out of export {}", rel.display(), self.view.id),
                );
                // Skipped like a file retention took: listed as missing, never read.
                Err(io::Error::new(io::ErrorKind::NotFound, e))
            }
            Err(e) => Err(e),
        }
    }

    /// A scratch file next to the export, open for writing and reading back, and already
    /// unlinked: it goes away with its descriptor, whatever ends the export.
    pub fn scratch(&self, what: &str) -> io::Result<File> {
        let name = format!("{}.{what}.part", self.view.id);
        let f = crate::sys::create_in(self.exports, &name)?;
        crate::sys::remove_in(self.exports, &name)?;
        Ok(f)
    }

    /// Calls `f` for each snapshot of the range, oldest first, with its 0-based position.
    /// Between snapshots: cancellation, shutdown, the byte budget and free space.
    pub fn each(
        &mut self,
        mut f: impl FnMut(&mut Self, u64, &StoredSnapshot) -> Result<(), Ended>,
    ) -> Result<(), Ended> {
        let mut after = 0;
        loop {
            let mut page = std::mem::take(self.page);
            page.clear();
            self.cam.stored.range_after(after, self.last, self.view.from, self.view.to, PAGE, &mut page);
            let mut result = Ok(());
            for s in &page {
                after = s.seq;
                if self.cancel.load(Relaxed) || self.stop.is_set() {
                    result = Err(Ended::Cancelled);
                    break;
                }
                self.visited += 1;
                #[cfg(debug_assertions)]
                if self.panic_at_file == Some(self.visited) {
                    panic!("{PANIC_AT_FILE_ENV} reached at file {}", self.visited);
                }
                if let Err(e) = f(self, self.visited - 1, s).and_then(|()| self.pace()) {
                    result = Err(e);
                    break;
                }
            }
            let empty = page.is_empty();
            *self.page = page;
            result?;
            if empty {
                return Ok(());
            }
        }
    }

    /// Waits as `exports.max_files_per_s` asks, waking for cancellation and shutdown.
    fn pace(&self) -> Result<(), Ended> {
        let Some(rate) = self.max_files_per_s else { return Ok(()) };
        let due = self.started + Duration::from_secs_f64(self.opened as f64 / f64::from(rate));
        loop {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if self.cancel.load(Relaxed) || self.stop.wait(left.min(Duration::from_millis(50))) {
                return Err(Ended::Cancelled);
            }
        }
    }

    /// Publishes progress (at most once a second): `done` items, `bytes` written so far.
    /// Also enforces the budget and free space.
    pub fn progress(&mut self, done: u64, bytes: u64) -> Result<(), Ended> {
        self.last_reported = (done, bytes);
        if !(self.room)(bytes) {
            return Err(Ended::Failed(format!(
                "the export grew past what exports.max_bytes ({} MiB) leaves it (the files of other exports being written or downloaded count too): choose a shorter range",
                self.max_bytes >> 20
            )));
        }
        // 99 until the file is complete; 100 is SUCCEEDED.
        let percent = ((self.visited * 100) / self.total.max(1)).min(99) as u8;
        self.percent = self.percent.max(percent);
        if self.published.elapsed() >= PROGRESS_EVERY {
            if crate::sys::free_bytes_at(self.exports).is_some_and(|f| f < self.min_free) {
                return Err(Ended::Failed(format!(
                    "free space is below storage.min_free_bytes ({} MiB); the export stopped to leave room for snapshots",
                    self.min_free >> 20
                )));
            }
            self.publish(done, bytes);
        }
        Ok(())
    }

    /// Publishes progress now (the last figures before the state changes).
    pub fn publish(&mut self, done: u64, bytes: u64) {
        self.published = Instant::now();
        (self.progress)(done, bytes, self.percent);
    }
}
