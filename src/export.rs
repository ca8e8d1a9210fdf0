//! Export jobs: a day of stored snapshots turned into one file, in the background.
//!
//! - A bounded queue (`exports.max_queued`; one more is refused, nothing already queued is
//!   lost) served oldest first by `exports.max_concurrent` worker threads (`export-N`) at the
//!   lowest CPU and I/O priority, so capture never notices them.
//! - Each export has a state (`QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED`), a step
//!   and a percent that only goes up; progress is published at most once a second, state
//!   changes at once (with an `export` event).
//! - Kinds: [`archive`] (a tar of the stored JPEGs plus `manifest.json`, streamed) and
//!   [`timelapse`] (an animated GIF, downscaled, frame count capped).
//! - Files live in `storage.dir/exports/`: `<id>.tar`/`<id>.gif` written as `.part` + rename,
//!   and `<id>.json`, the export's record. At start-up a `.part` is deleted (a crash cut it
//!   short) and its export listed as `FAILED`; finished exports are listed again; queued ones
//!   are queued again.
//! - Finished exports are bounded by `exports.history` and, on disk, by `exports.max_bytes`
//!   (oldest first); failed and cancelled ones are forgotten after `exports.forget_after_s`.
//! - A panic inside one export marks it `FAILED`; the worker goes on. A worker whose own loop
//!   panics is restarted in place.
//!
//! The root holds the manager ([`Exports`]): the records, the queue and the API's side of
//! them. Beside it: `record` (the record and its state machine), `request` (checking a
//! `POST` body), `recover` (start-up), `worker` (the `export-N` loop) and `run` (one export
//! in progress, as the writers see it).

pub mod archive;
mod record;
mod recover;
mod request;
mod run;
pub mod timelapse;
mod worker;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use record::Trigger;
pub use record::{ExportState, ExportView, Kind};
pub use request::parse_time;
use run::io_failed;
pub use run::{Ended, Run};

use crate::clock::unix_now;
use crate::config::ExportsConfig;
use crate::error::Error;
use crate::events::EventKind;
use crate::status::Shared;

/// Why a request about exports was refused, in the domain's words; the route chooses the
/// status. Each carries the message for the client (what to do, no paths).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// The body is not JSON, or not an export request (a missing or unknown field).
    BadJson(String),
    /// A field has a value that is not allowed (an unknown camera, a time, `fps`, ...).
    BadValue(String),
    /// `from` is not before `to`.
    BadRange(String),
    /// The camera has no stored snapshot in the range.
    EmptyRange(String),
    /// The range holds more than `exports.max_bytes`.
    TooLarge(String),
    /// No such export, or its file is gone.
    NotFound(String),
    /// The export's file was asked for before it `SUCCEEDED`.
    NotFinished(String),
    /// The queue is full; nothing already queued was touched.
    QueueFull(String),
    /// No id could be handed out: the counter is used up or cannot be written.
    NoId(String),
}

/// What `DELETE` did to an export.
#[derive(Debug, PartialEq)]
pub enum Deleted {
    /// It was queued: now `CANCELLED`, at once.
    Cancelled(ExportView),
    /// It is running: asked to stop; it becomes `CANCELLED` within one file.
    Cancelling(ExportView),
    /// It had finished: forgotten, with its file.
    Removed(ExportView),
}

/// Counters for `/metrics` and `/api/exports`.
#[derive(Default)]
pub struct ExportStats {
    /// Exports refused because the queue was full.
    pub rejected: AtomicU64,
    /// Exports that ended in each final state.
    pub succeeded: AtomicU64,
    /// See `succeeded`.
    pub failed: AtomicU64,
    /// See `succeeded`.
    pub cancelled: AtomicU64,
    /// Panics caught inside an export.
    pub panics: AtomicU64,
    /// Worker loops restarted after a panic outside an export.
    pub worker_restarts: AtomicU64,
}

struct Record {
    view: ExportView,
    /// Set by `DELETE` (or shutdown); the worker looks at it between files.
    cancel: Arc<AtomicBool>,
}

struct Inner {
    /// By id, oldest first; at most `limit` (allocated once).
    records: VecDeque<Record>,
    /// `max_queued + max_concurrent + history`: every active export fits, and the finished
    /// ones beyond `history` make room. Kept here because a `VecDeque`'s capacity is only a
    /// lower bound.
    limit: usize,
    next_id: u64,
    /// Export files being downloaded now (at most one entry per export).
    held: Vec<Held>,
}

/// An export file with downloads in progress. If its export is deleted meanwhile (by `DELETE`,
/// `history` or the budget), the file stays on disk until the last download ends and its bytes
/// still count toward `exports.max_bytes`: the budget is what is on the disk.
struct Held {
    id: u64,
    kind: Kind,
    bytes: u64,
    readers: u32,
    /// The export is gone; the file goes when the last reader does.
    orphaned: bool,
}

impl Inner {
    /// As many records as `limit`: the next one needs an old one to go first.
    fn is_full(&self) -> bool {
        self.records.len() >= self.limit
    }
}

/// The export manager: the queue, the records, and the workers' loop.
pub struct Exports {
    shared: Arc<Shared>,
    cfg: ExportsConfig,
    /// `storage.dir/exports`, for messages and free space.
    dir: PathBuf,
    /// The same directory, open: every file in it is opened, listed, renamed and deleted
    /// relative to this descriptor, never through a link.
    at: File,
    inner: Mutex<Inner>,
    wake: Condvar,
    /// The test hook: every export panics at this file (debug builds only).
    #[cfg(debug_assertions)]
    panic_at_file: Option<u64>,
    /// Counters.
    pub stats: ExportStats,
}

const NEXT_ID: &str = "next_id";
/// The largest export id: 2^53 − 1, read exactly by JavaScript; ids never wrap.
const MAX_EXPORT_ID: u64 = (1 << 53) - 1;

impl Exports {
    /// Opens `storage.dir/exports/`, reaps what a crash left half-done and lists what earlier
    /// runs finished. Call before the workers start.
    pub fn open(shared: Arc<Shared>) -> Result<Exports, Error> {
        let cfg = shared.config.exports.clone();
        let storage = &shared.config.storage.dir;
        let dir = storage.join("exports");
        let at = fs::create_dir_all(storage)
            .and_then(|()| crate::sys::mkdir_in(&File::open(storage)?, "exports"))
            .and_then(|()| crate::sys::open_dir_beneath(storage, Path::new("exports")))
            .map_err(|e| {
                let what = "open the exports directory (a real directory, not a link)";
                Error::storage(&dir, what, e)
            })?;
        let limit = cfg.max_queued + cfg.max_concurrent + cfg.history;
        let exports = Exports {
            cfg,
            dir,
            at,
            inner: Mutex::new(Inner { records: VecDeque::with_capacity(limit), limit, next_id: 1, held: Vec::new() }),
            wake: Condvar::new(),
            #[cfg(debug_assertions)]
            panic_at_file: run::panic_hook(),
            stats: ExportStats::default(),
            shared,
        };
        exports.recover()?;
        Ok(exports)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of an export's file in the exports directory.
    fn file_name(id: u64, kind: Kind) -> String {
        format!("{id}.{}", kind.ext())
    }

    /// The size of a regular file in the exports directory (`None`: missing, or not a
    /// regular file: a link planted there is never followed).
    fn size_of(&self, name: &str) -> Option<u64> {
        crate::sys::open_regular_in(&self.at, name).and_then(|f| f.metadata()).ok().map(|m| m.len())
    }

    // -----------------------------------------------------------------------------------
    // The API's side

    /// `POST /api/exports`: validates the body and queues the export.
    pub fn submit(&self, body: &[u8]) -> Result<ExportView, Refusal> {
        let spec = request::parse(body, &self.shared, &self.cfg)?;
        let mut g = self.lock();
        let queued = g.records.iter().filter(|r| r.view.state == ExportState::Queued).count();
        if queued >= self.cfg.max_queued {
            drop(g);
            self.stats.rejected.fetch_add(1, Relaxed);
            return Err(Refusal::QueueFull(format!(
                "export queue is full ({queued} queued, exports.max_queued); try again once current exports finish"
            )));
        }
        let id = g.next_id;
        if id > MAX_EXPORT_ID {
            return Err(Refusal::NoId(format!(
                "export ids are used up (the next would be {id}); exports/next_id or a planted record in storage.dir was tampered with: stop camjobd and clear storage.dir/exports"
            )));
        }
        g.next_id += 1;
        // Ids must never repeat (a bookmarked download would fetch another export), so the
        // counter is on disk before the id is handed out.
        if let Err(e) = crate::sys::write_atomic_in(&self.at, NEXT_ID, format!("{}\n", g.next_id).as_bytes(), false) {
            g.next_id -= 1;
            return Err(Refusal::NoId(format!("cannot record the export id: {e}{}", crate::error::storage_hint(&e))));
        }
        let running = g.records.iter().filter(|r| r.view.state == ExportState::Running).count();
        let view = ExportView::queued(id, spec, queued + running, unix_now());
        // Make room: the finished ones are bounded by `history`, the active ones by the queue
        // and the workers, so there is always a finished one to forget when full.
        let mut evicted = None;
        if g.is_full() {
            if let Some(i) = g.records.iter().position(|r| !r.view.state.is_active()) {
                evicted = g.records.remove(i);
            }
        }
        g.records.push_back(Record { view: view.clone(), cancel: Arc::default() });
        drop(g);
        if let Some(old) = evicted {
            self.remove_files(&old.view);
        }
        self.save_view(&view);
        let count = view.snapshots;
        self.event(&view, format_args!("export {id} queued: {} of {count} snapshots", view.kind.as_str()));
        self.wake.notify_one();
        Ok(view)
    }

    /// `GET /api/exports`: active exports (oldest first) and finished ones (newest first).
    pub fn list(&self) -> (Vec<ExportView>, Vec<ExportView>) {
        let g = self.lock();
        let active = g.records.iter().filter(|r| r.view.state.is_active()).map(|r| r.view.clone()).collect();
        let done = g.records.iter().rev().filter(|r| !r.view.state.is_active()).map(|r| r.view.clone()).collect();
        (active, done)
    }

    /// `GET /api/exports/{id}`.
    pub fn get(&self, id: u64) -> Option<ExportView> {
        self.lock().records.iter().find(|r| r.view.id == id).map(|r| r.view.clone())
    }

    /// Queued and running exports.
    pub fn depth(&self) -> (usize, usize) {
        let g = self.lock();
        let count = |s| g.records.iter().filter(|r| r.view.state == s).count();
        (count(ExportState::Queued), count(ExportState::Running))
    }

    /// The configured queue length.
    pub fn max_queued(&self) -> usize {
        self.cfg.max_queued
    }

    /// `DELETE /api/exports/{id}`: a queued export is cancelled at once, a running one is
    /// asked to stop (it becomes `CANCELLED` within one file), a finished one is deleted with
    /// its file.
    pub fn delete(&self, id: u64) -> Result<Deleted, Refusal> {
        let mut g = self.lock();
        let i = g.records.iter().position(|r| r.view.id == id).ok_or_else(|| not_found(id))?;
        match g.records[i].view.state {
            ExportState::Queued => {
                let v = &mut g.records[i].view;
                v.end(Trigger::Cancelled, "cancelled before it started", None, unix_now());
                let v = v.clone();
                drop(g);
                self.stats.cancelled.fetch_add(1, Relaxed);
                self.save_view(&v);
                self.event(&v, format_args!("export {id} cancelled before it started"));
                Ok(Deleted::Cancelled(v))
            }
            ExportState::Running => {
                // The worker sees the flag between files and makes the transition itself.
                g.records[i].cancel.store(true, Relaxed);
                g.records[i].view.step = "cancelling".into();
                Ok(Deleted::Cancelling(g.records[i].view.clone()))
            }
            ExportState::Succeeded | ExportState::Failed | ExportState::Cancelled => {
                let r = g.records.remove(i).expect("index from position");
                drop(g);
                self.remove_files(&r.view);
                Ok(Deleted::Removed(r.view))
            }
        }
    }

    /// `GET /api/exports/{id}/file`: the finished file, opened (so retention deleting it
    /// meanwhile does not cut the download) and held until the [`Download`] is dropped.
    pub fn open_file(self: &Arc<Self>, id: u64) -> Result<(Download, u64, ExportView), Refusal> {
        let mut g = self.lock();
        let v = g.records.iter().find(|r| r.view.id == id).map(|r| r.view.clone()).ok_or_else(|| not_found(id))?;
        if v.state != ExportState::Succeeded {
            return Err(Refusal::NotFinished(format!(
                "export {id} is {} ({}%); its file is there once it is SUCCEEDED",
                v.state.as_str(),
                v.percent
            )));
        }
        let f = crate::sys::open_regular_in(&self.at, &Self::file_name(id, v.kind)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Refusal::NotFound(format!("the file of export {id} was just deleted (exports budget)"))
            }
            // A link or FIFO planted in place of the file: never served.
            _ => Refusal::NotFound(format!("the file of export {id} is not a regular file in storage.dir; refused")),
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        match g.held.iter_mut().find(|h| h.id == id) {
            Some(h) => h.readers += 1,
            None => g.held.push(Held { id, kind: v.kind, bytes: len, readers: 1, orphaned: false }),
        }
        drop(g);
        Ok((Download { file: f, exports: Arc::clone(self), id }, len, v))
    }

    /// A download ended: the last reader of a deleted export's file removes it.
    fn release(&self, id: u64) {
        let mut g = self.lock();
        let Some(i) = g.held.iter().position(|h| h.id == id) else { return };
        g.held[i].readers -= 1;
        if g.held[i].readers == 0 {
            let h = g.held.swap_remove(i);
            drop(g);
            if h.orphaned {
                let _ = crate::sys::remove_in(&self.at, &Self::file_name(h.id, h.kind));
            }
        }
    }

    /// A finished file whose deletion frees its bytes now: not being downloaded.
    fn deletable(g: &Inner, r: &Record) -> bool {
        r.view.state == ExportState::Succeeded && !g.held.iter().any(|h| h.id == r.view.id)
    }

    /// Bytes of deleted exports' files still on disk because they are being downloaded.
    fn orphaned_bytes(g: &Inner) -> u64 {
        g.held.iter().filter(|h| h.orphaned).map(|h| h.bytes).sum()
    }

    /// What the exports directory holds: finished files plus orphans still downloading.
    fn on_disk(g: &Inner) -> u64 {
        let files = g.records.iter().filter(|r| r.view.state == ExportState::Succeeded).map(|r| r.view.bytes);
        files.sum::<u64>() + Self::orphaned_bytes(g)
    }

    /// Makes room for running export `id`'s file to reach `bytes`: the oldest finished files
    /// go (one being downloaded stays, and counts) until the files on disk, the other running
    /// exports' and this one fit `exports.max_bytes`. False when they cannot.
    fn make_room(&self, id: u64, bytes: u64) -> bool {
        let mut gone = Vec::new();
        let fits = {
            let mut g = self.lock();
            let running = |r: &&Record| r.view.state == ExportState::Running && r.view.id != id;
            let others: u64 = g.records.iter().filter(running).map(|r| r.view.bytes).sum();
            let need = others + bytes;
            // Deleting only helps if it can make enough room: otherwise nothing goes, and the
            // export fails.
            let freeable: u64 = g.records.iter().filter(|r| Self::deletable(&g, r)).map(|r| r.view.bytes).sum();
            if Self::on_disk(&g) - freeable + need > self.cfg.max_bytes {
                false
            } else {
                while Self::on_disk(&g) + need > self.cfg.max_bytes {
                    let i = g.records.iter().position(|r| Self::deletable(&g, r)).expect("room was counted");
                    gone.push(g.records.remove(i).expect("index from position").view);
                }
                true
            }
        };
        for v in &gone {
            self.remove_files(v);
        }
        fits
    }

    // -----------------------------------------------------------------------------------
    // The records' bookkeeping

    /// Applies a change to a running export's record (its progress; never its state).
    fn update(&self, id: u64, f: impl FnOnce(&mut ExportView)) {
        if let Some(r) = self.lock().records.iter_mut().find(|r| r.view.id == id) {
            f(&mut r.view);
        }
    }

    /// Forgets old failed/cancelled exports, then the oldest finished ones beyond `history`,
    /// then the oldest succeeded files beyond `max_bytes`. Returns how many went.
    fn prune(&self) -> usize {
        let now = unix_now();
        let forget = self.cfg.forget_after_s as f64;
        let mut gone = Vec::new();
        {
            let mut g = self.lock();
            g.records.retain(|r| {
                let v = &r.view;
                let old = matches!(v.state, ExportState::Failed | ExportState::Cancelled)
                    && v.ended_at.is_some_and(|t| now - t > forget);
                if old {
                    gone.push(v.clone());
                }
                !old
            });
            while g.records.iter().filter(|r| !r.view.state.is_active()).count() > self.cfg.history {
                let i = g.records.iter().position(|r| !r.view.state.is_active()).expect("counted above");
                gone.push(g.records.remove(i).expect("index from position").view);
            }
            // Files being downloaded count too, and stay: deleting one would free nothing yet.
            while Self::on_disk(&g) > self.cfg.max_bytes {
                let Some(i) = g.records.iter().position(|r| Self::deletable(&g, r)) else { break };
                gone.push(g.records.remove(i).expect("index from position").view);
            }
        }
        for v in &gone {
            self.remove_files(v);
        }
        gone.len()
    }

    /// Deletes an export's record and file; a file being downloaded stays (counted) until the
    /// download ends.
    fn remove_files(&self, v: &ExportView) {
        let _ = crate::sys::remove_in(&self.at, &format!("{}.json", v.id));
        let mut g = self.lock();
        if let Some(h) = g.held.iter_mut().find(|h| h.id == v.id) {
            h.orphaned = true;
            return;
        }
        drop(g);
        let _ = crate::sys::remove_in(&self.at, &Self::file_name(v.id, v.kind));
    }

    fn save(&self, id: u64) {
        if let Some(v) = self.get(id) {
            self.save_view(&v);
        }
    }

    /// Writes `<id>.json` (temp + rename). A failure is logged: the export itself goes on.
    fn save_view(&self, v: &ExportView) {
        let bytes = serde_json::to_vec(v).expect("plain data");
        let durable = !v.state.is_active();
        if let Err(e) = crate::sys::write_atomic_in(&self.at, &format!("{}.json", v.id), &bytes, durable) {
            log::warn!("exports: cannot write the record of export {}: {e}{}", v.id, crate::error::storage_hint(&e));
        }
    }

    fn event(&self, v: &ExportView, message: std::fmt::Arguments<'_>) {
        self.shared.events.push(EventKind::Export, &v.camera, None, None, message);
    }
}

/// The refusal for an id no record has (the API's 404).
pub fn not_found(id: u64) -> Refusal {
    Refusal::NotFound(format!("no export {id}; GET /api/exports lists them"))
}

/// An export file being downloaded: reads the file; dropping it ends the download (and
/// removes the file if its export was deleted meanwhile).
pub struct Download {
    file: File,
    exports: Arc<Exports>,
    id: u64,
}

impl std::io::Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.exports.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> Record {
        let spec = record::Spec {
            camera: "cam0".into(),
            kind: Kind::Archive,
            from: 0.0,
            to: 1.0,
            fps: None,
            max_frames: None,
            snapshots: 1,
        };
        Record { view: ExportView::queued(id, spec, 0, 0.0), cancel: Arc::default() }
    }

    #[test]
    fn the_record_bound_is_the_limit_not_the_allocation() {
        // A VecDeque may allocate more than asked for; the bound must not grow with it.
        let mut records = VecDeque::with_capacity(2);
        records.reserve(100);
        let mut inner = Inner { records, limit: 2, next_id: 1, held: Vec::new() };
        inner.records.push_back(record(1));
        assert!(!inner.is_full());
        inner.records.push_back(record(2));
        assert!(inner.is_full(), "full at 2 although the capacity is {}", inner.records.capacity());
    }
}
