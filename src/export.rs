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

pub mod archive;
pub mod timelapse;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::config::ExportsConfig;
use crate::error::Error;
use crate::events::EventKind;
use crate::index::StoredSnapshot;
use crate::shutdown::Stop;
use crate::status::{CameraShared, Shared};

/// What an export makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A `.tar` of the snapshot files, byte for byte, plus `manifest.json`.
    Archive,
    /// An animated GIF.
    Timelapse,
}

impl Kind {
    fn ext(self) -> &'static str {
        match self {
            Kind::Archive => "tar",
            Kind::Timelapse => "gif",
        }
    }

    /// The download's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Archive => "application/x-tar",
            Kind::Timelapse => "image/gif",
        }
    }
}

/// An export's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExportState {
    /// Waiting for a worker.
    Queued,
    /// Being written.
    Running,
    /// The file is ready.
    Succeeded,
    /// Ended with `error`.
    Failed,
    /// Cancelled by a `DELETE`.
    Cancelled,
}

impl ExportState {
    /// Queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, ExportState::Queued | ExportState::Running)
    }
}

/// An export as the API shows it and as `<id>.json` keeps it. No paths: the file is reached
/// through `download` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportView {
    /// Increasing, also across restarts.
    pub id: u64,
    /// The camera whose snapshots are exported.
    pub camera: String,
    /// `archive` or `timelapse`.
    pub kind: Kind,
    /// The range, Unix seconds: `from <= captured_at < to`.
    pub from: f64,
    /// End of the range (exclusive).
    pub to: f64,
    /// Timelapse playback rate.
    pub fps: Option<u32>,
    /// Timelapse frame cap.
    pub max_frames: Option<u32>,
    /// The state.
    pub state: ExportState,
    /// What it is doing, for people.
    pub step: String,
    /// 0–100; never decreases; 100 exactly when `SUCCEEDED`.
    pub percent: u8,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was queued, started and ended (Unix seconds).
    pub created_at: f64,
    /// When a worker took it.
    pub started_at: Option<f64>,
    /// When it reached a final state.
    pub ended_at: Option<f64>,
    /// Snapshots in the range when it started.
    pub snapshots: u64,
    /// Snapshots written so far (timelapse: frames).
    pub done: u64,
    /// Bytes written so far; the file size once `SUCCEEDED`.
    pub bytes: u64,
    /// The file name offered to the browser.
    pub filename: String,
    /// `GET` this for the file, once `SUCCEEDED`.
    pub download: Option<String>,
}

/// Why a request about exports was refused; the route turns it into a status.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// 400: a bad body or range.
    Bad(&'static str, String),
    /// 404.
    NotFound(String),
    /// 409: not in a state that allows it.
    Conflict(String),
    /// 503: the queue is full.
    QueueFull(String),
    /// 500.
    Internal(String),
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
    /// By id, oldest first; at most `max_queued + max_concurrent + history` (allocated once).
    records: VecDeque<Record>,
    next_id: u64,
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
    /// Counters.
    pub stats: ExportStats,
}

/// How long an idle worker sleeps before looking at the stop token and the forget timer.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Progress is published at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Snapshots fetched from the index at a time.
const PAGE: usize = 64;
const NEXT_ID: &str = "next_id";
/// The largest export id: 2^53 − 1, read exactly by JavaScript; ids never wrap.
const MAX_EXPORT_ID: u64 = (1 << 53) - 1;
/// How far ahead of everything on disk the next id jumps when `next_id` exists but cannot be
/// read: ids of exports already forgotten (pruned) leave no trace, and must not come back.
const ID_GAP_AFTER_DAMAGE: u64 = 1 << 20;

/// The request body of `POST /api/exports`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewExport {
    camera: String,
    from: serde_json::Value,
    to: serde_json::Value,
    kind: Kind,
    fps: Option<u32>,
    max_frames: Option<u32>,
}

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
        let capacity = cfg.max_queued + cfg.max_concurrent + cfg.history;
        let exports = Exports {
            cfg,
            dir,
            at,
            inner: Mutex::new(Inner { records: VecDeque::with_capacity(capacity), next_id: 1 }),
            wake: Condvar::new(),
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
    // Start-up

    fn recover(&self) -> Result<(), Error> {
        let entries = crate::sys::list_in(&self.at).map_err(|e| Error::storage(&self.dir, "list the exports", e))?;
        let mut found: Vec<ExportView> = Vec::new();
        let mut max_id = 0;
        let mut reaped = 0;
        let mut odd: Vec<&str> = Vec::new();
        for (name, kind) in &entries {
            let name = name.as_str();
            let path = self.dir.join(name);
            // Every name that is an id counts (an unreadable record, a data or part file, a
            // planted link): no id seen on disk is handed out again.
            if let Some(id) = name.split('.').next().and_then(|n| n.parse::<u64>().ok()) {
                max_id = max_id.max(id);
            }
            if *kind != crate::sys::EntryKind::File {
                // A link, directory or FIFO: not camjobd's; never read, followed or deleted.
                odd.push(name);
                continue;
            }
            if name.ends_with(".part") || name.ends_with(".tmp") {
                let _ = crate::sys::remove_in(&self.at, name);
                reaped += 1;
                continue;
            }
            if let Some(id) = name.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) {
                let read = crate::sys::open_regular_in(&self.at, name).and_then(|mut f| {
                    let mut b = Vec::new();
                    io::Read::read_to_end(&mut f, &mut b).map(|_| b)
                });
                match read.ok().and_then(|b| serde_json::from_slice::<ExportView>(&b).ok()) {
                    Some(v) if v.id == id => found.push(v),
                    _ => {
                        log::warn!("exports: {} is unreadable; removed it", path.display());
                        let _ = crate::sys::remove_in(&self.at, name);
                    }
                }
            }
        }
        crate::store::report_left_alone(&self.shared.events, "", "storage.dir/exports", &odd);
        let now = unix_now();
        found.sort_by_key(|v| v.id);
        let mut fixed = Vec::new();
        for mut v in found {
            let data = Self::file_name(v.id, v.kind);
            let size = self.size_of(&data);
            match (v.state, size) {
                (ExportState::Succeeded, Some(n)) => v.bytes = n,
                // Renamed into place but the crash came before the record said so: the file
                // is complete (it is renamed only after its last byte).
                (ExportState::Running, Some(n)) => {
                    self.succeed_view(&mut v, n, now);
                    fixed.push(v.id);
                }
                (ExportState::Running, None) => {
                    v.state = ExportState::Failed;
                    v.step = "interrupted".into();
                    v.error = Some("camjobd stopped during this export; the partial file was deleted".into());
                    v.ended_at = Some(now);
                    fixed.push(v.id);
                }
                (ExportState::Queued, _) => {}
                (ExportState::Succeeded, None) => {
                    log::warn!("exports: the file of export {} is gone; forgetting it", v.id);
                    let _ = crate::sys::remove_in(&self.at, &format!("{}.json", v.id));
                    continue;
                }
                (ExportState::Failed | ExportState::Cancelled, _) => {
                    let _ = crate::sys::remove_in(&self.at, &data);
                }
            }
            let mut g = self.lock();
            if g.records.len() == g.records.capacity() {
                // More on disk than the config now allows (it was lowered): the oldest go.
                if let Some(old) = g.records.pop_front() {
                    drop(g);
                    self.remove_files(&old.view);
                    g = self.lock();
                }
            }
            g.records.push_back(Record { view: v, cancel: Arc::default() });
        }
        // Data files nobody lists (their record was deleted by hand) only take budget.
        for (name, kind) in &entries {
            let Some((id, ext)) = name.split_once('.') else { continue };
            let Ok(id) = id.parse::<u64>() else { continue };
            let listed = self.lock().records.iter().any(|r| r.view.id == id);
            if *kind == crate::sys::EntryKind::File && matches!(ext, "tar" | "gif") && !listed {
                log::warn!("exports: {} has no record; removed it", self.dir.join(name).display());
                let _ = crate::sys::remove_in(&self.at, name);
            }
        }
        let read = crate::sys::open_regular_in(&self.at, NEXT_ID).and_then(io::read_to_string);
        let damaged = |what: &str| {
            let next = max_id.saturating_add(1).saturating_add(ID_GAP_AFTER_DAMAGE);
            log::warn!("exports: next_id is {what}; continuing at {next} so that no id comes back");
            next
        };
        let next = match read {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(n) => n.max(max_id.saturating_add(1)),
                Err(_) => damaged(&format!("damaged ({} bytes that are not a number)", text.len())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => max_id.saturating_add(1),
            // A link or FIFO planted in its place: never read; replaced at the next export.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.kind() == io::ErrorKind::InvalidData => {
                damaged("not a regular file (a link or something planted there)")
            }
            Err(e) => return Err(Error::storage(&self.dir.join(NEXT_ID), "read the export id counter", e)),
        };
        self.lock().next_id = next;
        for id in fixed {
            self.save(id);
        }
        let removed = self.prune();
        let g = self.lock();
        let queued = g.records.iter().filter(|r| r.view.state == ExportState::Queued).count();
        if reaped > 0 || !g.records.is_empty() {
            log::info!(
                "exports: {} listed ({queued} queued again), {reaped} partial file(s) deleted, {removed} over budget removed",
                g.records.len()
            );
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // The API's side

    /// `POST /api/exports`: validates the body and queues the export.
    pub fn submit(&self, body: &[u8]) -> Result<ExportView, Refused> {
        let req: NewExport = serde_json::from_slice(body).map_err(|e| {
            Refused::Bad(
                "bad_json",
                format!(
                    "export body: {e}; expected {{\"camera\": NAME, \"from\": TIME, \"to\": TIME, \"kind\": \"archive\"|\"timelapse\"}}"
                ),
            )
        })?;
        let cam = self.shared.camera_index(&req.camera).map(|i| &self.shared.cameras[i]).ok_or_else(|| {
            Refused::Bad("bad_value", format!("camera: no camera named {:?}; GET /api/status lists them", req.camera))
        })?;
        let from = parse_time(&req.from).map_err(|m| Refused::Bad("bad_value", format!("from: {m}")))?;
        let to = parse_time(&req.to).map_err(|m| Refused::Bad("bad_value", format!("to: {m}")))?;
        if from >= to {
            return Err(Refused::Bad(
                "bad_range",
                format!("the range is empty or inverted: from ({from}) must be before to ({to})"),
            ));
        }
        let t = &self.cfg.timelapse;
        if req.kind == Kind::Archive && (req.fps.is_some() || req.max_frames.is_some()) {
            return Err(Refused::Bad("bad_value", "fps and max_frames apply to timelapse exports only".into()));
        }
        if req.fps.is_some_and(|f| !(1..=50).contains(&f)) {
            return Err(Refused::Bad("bad_value", "fps must be from 1 to 50".into()));
        }
        if req.max_frames.is_some_and(|n| !(2..=t.max_frames).contains(&n)) {
            return Err(Refused::Bad(
                "bad_value",
                format!("max_frames must be from 2 to {} (exports.timelapse.max_frames)", t.max_frames),
            ));
        }
        let (count, bytes) = cam.stored.count_range(from, to, u64::MAX);
        if count == 0 {
            let (oldest, newest) = (cam.stored.oldest(), cam.stored.newest());
            let have = match (oldest, newest) {
                (Some(a), Some(b)) => format!("stored snapshots span {:.0} to {:.0}", a.captured_at, b.captured_at),
                _ if !cam.config.store.enabled => "it does not store snapshots (its store.enabled is false)".into(),
                _ => "it has no stored snapshots yet".into(),
            };
            return Err(Refused::Bad(
                "empty_range",
                format!("camera {} has no stored snapshot in that range; {have}", cam.name),
            ));
        }
        // A tar costs the files plus a 512-byte header each (and padding).
        let estimate = bytes + count * 1024;
        if req.kind == Kind::Archive && estimate > self.cfg.max_bytes {
            return Err(Refused::Bad(
                "too_large",
                format!(
                    "that range holds {} MiB of snapshots, more than exports.max_bytes ({} MiB): choose a shorter range or a timelapse",
                    estimate >> 20,
                    self.cfg.max_bytes >> 20
                ),
            ));
        }
        let (fps, max_frames) = match req.kind {
            Kind::Timelapse => (Some(req.fps.unwrap_or(t.fps)), Some(req.max_frames.unwrap_or(t.max_frames))),
            Kind::Archive => (None, None),
        };
        let mut g = self.lock();
        let queued = g.records.iter().filter(|r| r.view.state == ExportState::Queued).count();
        if queued >= self.cfg.max_queued {
            drop(g);
            self.stats.rejected.fetch_add(1, Relaxed);
            return Err(Refused::QueueFull(format!(
                "export queue is full ({queued} queued, exports.max_queued); try again once current exports finish"
            )));
        }
        let id = g.next_id;
        if id > MAX_EXPORT_ID {
            return Err(Refused::Internal(format!(
                "export ids are used up (the next would be {id}); exports/next_id or a planted record in storage.dir was tampered with: stop camjobd and clear storage.dir/exports"
            )));
        }
        g.next_id += 1;
        // Ids must never repeat (a bookmarked download would fetch another export), so the
        // counter is on disk before the id is handed out.
        if let Err(e) = crate::sys::write_atomic_in(&self.at, NEXT_ID, format!("{}\n", g.next_id).as_bytes(), false) {
            g.next_id -= 1;
            return Err(Refused::Internal(format!(
                "cannot record the export id: {e}{}",
                crate::error::storage_hint(&e)
            )));
        }
        let view = ExportView {
            id,
            camera: cam.name.clone(),
            kind: req.kind,
            from,
            to,
            fps,
            max_frames,
            state: ExportState::Queued,
            step: format!(
                "queued ({} ahead)",
                queued + g.records.iter().filter(|r| r.view.state == ExportState::Running).count()
            ),
            percent: 0,
            error: None,
            created_at: unix_now(),
            started_at: None,
            ended_at: None,
            snapshots: count,
            done: 0,
            bytes: 0,
            filename: download_name(&cam.name, req.kind, from, id),
            download: None,
        };
        // Make room: the finished ones are bounded by `history`, the active ones by the queue
        // and the workers, so there is always a finished one to forget when full.
        let mut evicted = None;
        if g.records.len() == g.records.capacity() {
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
        self.event(&view, format_args!("export {id} queued: {} of {count} snapshots", kind_name(view.kind)));
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

    /// `DELETE /api/exports/{id}`: a queued export is cancelled at once (200), a running one
    /// is asked to stop (202; it becomes `CANCELLED` within one file), a finished one is
    /// deleted with its file (200).
    pub fn delete(&self, id: u64) -> Result<(u16, ExportView), Refused> {
        let mut g = self.lock();
        let i = g.records.iter().position(|r| r.view.id == id).ok_or_else(|| not_found(id))?;
        match g.records[i].view.state {
            ExportState::Queued => {
                let v = &mut g.records[i].view;
                v.state = ExportState::Cancelled;
                v.step = "cancelled before it started".into();
                v.ended_at = Some(unix_now());
                let v = v.clone();
                drop(g);
                self.stats.cancelled.fetch_add(1, Relaxed);
                self.save_view(&v);
                self.event(&v, format_args!("export {id} cancelled before it started"));
                Ok((200, v))
            }
            ExportState::Running => {
                g.records[i].cancel.store(true, Relaxed);
                g.records[i].view.step = "cancelling".into();
                Ok((202, g.records[i].view.clone()))
            }
            _ => {
                let r = g.records.remove(i).expect("index from position");
                drop(g);
                self.remove_files(&r.view);
                Ok((200, r.view))
            }
        }
    }

    /// `GET /api/exports/{id}/file`: the finished file, opened (so retention deleting it
    /// meanwhile does not cut the download).
    pub fn open_file(&self, id: u64) -> Result<(File, u64, ExportView), Refused> {
        let v = self.get(id).ok_or_else(|| not_found(id))?;
        if v.state != ExportState::Succeeded {
            return Err(Refused::Conflict(format!(
                "export {id} is {:?} ({}%); its file is there once it is SUCCEEDED",
                v.state, v.percent
            )));
        }
        let f = crate::sys::open_regular_in(&self.at, &Self::file_name(id, v.kind)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Refused::NotFound(format!("the file of export {id} was just deleted (exports budget)"))
            }
            // A link or FIFO planted in place of the file: never served.
            _ => Refused::NotFound(format!("the file of export {id} is not a regular file in storage.dir; refused")),
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((f, len, v))
    }

    // -----------------------------------------------------------------------------------
    // Workers

    /// A worker thread's body (`export-N`): takes the oldest queued export, runs it, repeats
    /// until `stop`. A panic outside an export restarts the loop instead of ending the thread.
    pub fn run_worker(&self, n: usize, stop: Stop) {
        if let Err(e) = crate::sys::lower_thread_priority() {
            log::warn!("export-{n}: {e}; exports may compete with capture for the CPU");
        }
        loop {
            match panic::catch_unwind(AssertUnwindSafe(|| self.work(&stop))) {
                Ok(()) => return,
                Err(p) => {
                    self.stats.worker_restarts.fetch_add(1, Relaxed);
                    log::error!(
                        "export-{n}: the worker loop panicked ({}); restarting it",
                        crate::error::panic_message(&*p)
                    );
                    if stop.wait(Duration::from_secs(1)) {
                        return;
                    }
                }
            }
        }
    }

    fn work(&self, stop: &Stop) {
        let mut page = Vec::with_capacity(PAGE);
        let mut last_prune = Instant::now();
        loop {
            if stop.is_set() {
                return;
            }
            if last_prune.elapsed() >= Duration::from_secs(5) {
                self.prune();
                last_prune = Instant::now();
            }
            let Some((view, cancel)) = self.take_next() else { continue };
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.execute(&view, &cancel, stop, &mut page)));
            page.clear();
            let outcome = match outcome {
                Ok(o) => o,
                Err(p) => {
                    self.stats.panics.fetch_add(1, Relaxed);
                    let msg = crate::error::panic_message(&*p);
                    log::error!("export {}: panicked: {msg}", view.id);
                    Err(Ended::Failed(format!("internal error in the export ({msg}); the worker goes on")))
                }
            };
            self.finish(&view, outcome, stop);
        }
    }

    /// The oldest queued export, now `RUNNING`; waits up to [`IDLE_WAIT`] for one.
    fn take_next(&self) -> Option<(ExportView, Arc<AtomicBool>)> {
        let mut g = self.lock();
        if !g.records.iter().any(|r| r.view.state == ExportState::Queued) {
            g = self.wake.wait_timeout(g, IDLE_WAIT).unwrap_or_else(|e| e.into_inner()).0;
        }
        let r = g.records.iter_mut().find(|r| r.view.state == ExportState::Queued)?;
        r.view.state = ExportState::Running;
        r.view.step = "selecting snapshots".into();
        r.view.started_at = Some(unix_now());
        let taken = (r.view.clone(), Arc::clone(&r.cancel));
        drop(g);
        self.save_view(&taken.0);
        self.event(&taken.0, format_args!("export {} running", taken.0.id));
        Some(taken)
    }

    fn execute(
        &self,
        view: &ExportView,
        cancel: &AtomicBool,
        stop: &Stop,
        page: &mut Vec<StoredSnapshot>,
    ) -> Result<u64, Ended> {
        let cam = self
            .shared
            .camera_index(&view.camera)
            .map(|i| Arc::clone(&self.shared.cameras[i]))
            .ok_or_else(|| Ended::Failed(format!("camera {:?} is no longer configured", view.camera)))?;
        // Only what existed at the start: progress is then exact and the export ends.
        let last = cam.stored.newest().map_or(0, |s| s.seq);
        let (total, _) = cam.stored.count_range(view.from, view.to, last);
        if total == 0 {
            return Err(Ended::Failed("no stored snapshot is left in the range (retention deleted them)".into()));
        }
        self.update(view.id, |v| {
            v.snapshots = total;
            v.step = "writing".into();
        });
        let name = Self::file_name(view.id, view.kind);
        let part = format!("{name}.part");
        let file = crate::sys::create_in(&self.at, &part).map_err(|e| io_failed("create the export file", &e))?;
        let mut run = Run {
            cam: &cam,
            events: &self.shared.events,
            storage_dir: &self.shared.config.storage.dir,
            exports: &self.at,
            view,
            last,
            total,
            cancel,
            stop,
            max_bytes: self.cfg.max_bytes,
            min_free: self.shared.config.storage.min_free_bytes,
            panic_at_file: None, // moved to an env var by the export split
            max_files_per_s: self.cfg.max_files_per_s,
            started: Instant::now(),
            opened: 0,
            page,
            visited: 0,
            published: Instant::now(),
            percent: 0,
            last_reported: (0, 0),
            progress: &|done, bytes, percent| {
                self.update(view.id, |v| {
                    v.done = done;
                    v.bytes = bytes;
                    v.percent = v.percent.max(percent);
                })
            },
        };
        let written = match view.kind {
            Kind::Archive => archive::write(&mut run, file),
            Kind::Timelapse => timelapse::write(&mut run, file, &self.cfg.timelapse),
        };
        let (done, bytes) = run.last_reported;
        run.publish(done, bytes);
        let result = written.and_then(|n| {
            crate::sys::rename_in(&self.at, &part, &name).map_err(|e| io_failed("rename the export file", &e))?;
            let _ = self.at.sync_all();
            Ok(n)
        });
        if result.is_err() {
            let _ = crate::sys::remove_in(&self.at, &part);
        }
        result
    }

    fn finish(&self, view: &ExportView, outcome: Result<u64, Ended>, stop: &Stop) {
        let now = unix_now();
        let mut g = self.lock();
        let Some(r) = g.records.iter_mut().find(|r| r.view.id == view.id) else { return };
        let v = &mut r.view;
        match outcome {
            Ok(size) => {
                self.stats.succeeded.fetch_add(1, Relaxed);
                self.succeed_view(v, size, now);
            }
            Err(Ended::Cancelled) if !stop.is_set() => {
                self.stats.cancelled.fetch_add(1, Relaxed);
                v.state = ExportState::Cancelled;
                v.step = "cancelled".into();
                v.ended_at = Some(now);
            }
            Err(Ended::Cancelled) => {
                self.stats.failed.fetch_add(1, Relaxed);
                v.state = ExportState::Failed;
                v.step = "interrupted".into();
                v.error = Some("camjobd was stopped during this export; start it again".into());
                v.ended_at = Some(now);
            }
            Err(Ended::Failed(msg)) => {
                self.stats.failed.fetch_add(1, Relaxed);
                v.state = ExportState::Failed;
                v.step = "failed".into();
                v.error = Some(msg);
                v.ended_at = Some(now);
            }
        }
        let v = v.clone();
        drop(g);
        self.save_view(&v);
        match v.state {
            ExportState::Succeeded => {
                self.event(&v, format_args!("export {} succeeded: {} snapshots, {} KiB", v.id, v.done, v.bytes >> 10))
            }
            ExportState::Failed => {
                self.event(&v, format_args!("export {} failed: {}", v.id, v.error.as_deref().unwrap_or("?")))
            }
            _ => self.event(&v, format_args!("export {} cancelled", v.id)),
        }
        self.prune();
    }

    fn succeed_view(&self, v: &mut ExportView, size: u64, now: f64) {
        v.state = ExportState::Succeeded;
        v.step = "done".into();
        v.percent = 100;
        v.bytes = size;
        v.ended_at = Some(now);
        v.error = None;
        v.download = Some(format!("/api/exports/{}/file", v.id));
    }

    /// Applies a change to a running export's record.
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
            let on_disk = |g: &Inner| {
                g.records.iter().filter(|r| r.view.state == ExportState::Succeeded).map(|r| r.view.bytes).sum::<u64>()
            };
            while on_disk(&g) > self.cfg.max_bytes {
                let i = g.records.iter().position(|r| r.view.state == ExportState::Succeeded).expect("bytes > 0");
                gone.push(g.records.remove(i).expect("index from position").view);
            }
        }
        for v in &gone {
            self.remove_files(v);
        }
        gone.len()
    }

    fn remove_files(&self, v: &ExportView) {
        let _ = crate::sys::remove_in(&self.at, &Self::file_name(v.id, v.kind));
        let _ = crate::sys::remove_in(&self.at, &format!("{}.json", v.id));
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

/// How an export ended when it did not succeed.
#[derive(Debug)]
pub enum Ended {
    /// Cancelled, or interrupted by shutdown.
    Cancelled,
    /// With this message (no paths in it).
    Failed(String),
}

fn io_failed(what: &str, e: &io::Error) -> Ended {
    Ended::Failed(format!("cannot {what}: {e}{}", crate::error::storage_hint(e)))
}

/// One export in progress, handed to the writer of its kind: walks the range page by page
/// and keeps the progress.
pub struct Run<'a> {
    cam: &'a CameraShared,
    events: &'a crate::events::EventLog,
    storage_dir: &'a Path,
    exports: &'a File,
    /// The export.
    pub view: &'a ExportView,
    last: u64,
    /// Snapshots in the range when it started.
    pub total: u64,
    cancel: &'a AtomicBool,
    stop: &'a Stop,
    max_bytes: u64,
    min_free: u64,
    panic_at_file: Option<u64>,
    max_files_per_s: Option<u32>,
    started: Instant,
    /// Snapshot files opened (what `max_files_per_s` paces; a timelapse skips most files).
    opened: u64,
    page: &'a mut Vec<StoredSnapshot>,
    visited: u64,
    published: Instant,
    percent: u8,
    /// The last `(done, bytes)` reported, published however the export ends.
    last_reported: (u64, u64),
    progress: &'a dyn Fn(u64, u64, u8),
}

impl Run<'_> {
    /// The camera's name (archive paths).
    pub fn camera(&self) -> &str {
        &self.cam.name
    }

    /// The file of a stored snapshot.
    pub fn snapshot_path(&self, s: &StoredSnapshot) -> PathBuf {
        crate::index::snapshot_path(self.storage_dir, &self.cam.name, s.day, s.seq)
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
                self.events.push(
                    EventKind::Error,
                    &self.cam.name,
                    None,
                    None,
                    format_args!("{} in storage.dir is not a regular file (a link or something planted there); left out of export {}", rel.display(), self.view.id),
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
                if self.panic_at_file == Some(self.visited) {
                    panic!("exports.panic_at_file reached at file {}", self.visited);
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
        if bytes > self.max_bytes {
            return Err(Ended::Failed(format!(
                "the export grew past exports.max_bytes ({} MiB): choose a shorter range",
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

fn not_found(id: u64) -> Refused {
    Refused::NotFound(format!("no export {id}; GET /api/exports lists them"))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Archive => "archive",
        Kind::Timelapse => "timelapse",
    }
}

/// `camjobd-<camera>-<yyyymmddThhmmssZ>-<id>.<ext>`.
fn download_name(camera: &str, kind: Kind, from: f64, id: u64) -> String {
    let secs = from.max(0.0) as u64;
    let day = crate::index::day_name((secs / 86_400) as u32).replace('-', "");
    let t = secs % 86_400;
    format!("camjobd-{camera}-{day}T{:02}{:02}{:02}Z-{id}.{}", t / 3600, t / 60 % 60, t % 60, kind.ext())
}

/// A time in a request: Unix seconds (a number), or RFC 3339 text
/// (`2026-11-23T08:00:00Z`, `2026-11-23T09:00:00+01:00`), or a UTC day (`2026-11-23`).
pub fn parse_time(v: &serde_json::Value) -> Result<f64, String> {
    const HINT: &str = "use Unix seconds or RFC 3339 like \"2026-11-23T08:00:00Z\" or a day like \"2026-11-23\"";
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(t) if t.is_finite() && (0.0..=253_402_300_799.0).contains(&t) => Ok(t),
            _ => Err(format!("{n} is out of range; {HINT}")),
        },
        serde_json::Value::String(s) => parse_rfc3339(s).ok_or_else(|| format!("{s:?} is not a time; {HINT}")),
        other => Err(format!("{other} is not a time; {HINT}")),
    }
}

fn parse_rfc3339(s: &str) -> Option<f64> {
    let day = crate::index::parse_day(s.get(..10)?)? as f64 * 86_400.0;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(day);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let b = rest.as_bytes();
    if b.len() < 9 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = rest.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (h, m, sec) = (num(0..2)?, num(3..5)?, num(6..8)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut tail = &rest[8..];
    let mut frac = 0.0;
    if let Some(t) = tail.strip_prefix('.') {
        let n = t.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        frac = format!("0.{}", &t[..n]).parse::<f64>().ok()?;
        tail = &t[n..];
    }
    let offset = match tail {
        "Z" | "z" => 0.0,
        _ => {
            let sign = match tail.as_bytes().first()? {
                b'+' => 1.0,
                b'-' => -1.0,
                _ => return None,
            };
            let o = tail.get(1..)?;
            if o.len() != 5 || o.as_bytes()[2] != b':' {
                return None;
            }
            let (oh, om) = (o[..2].parse::<u32>().ok()?, o[3..].parse::<u32>().ok()?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * f64::from(oh * 3600 + om * 60)
        }
    };
    Some(day + f64::from(h * 3600 + m * 60 + sec) + frac - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_requests() {
        assert_eq!(parse_time(&json!(1_795_449_316)), Ok(1_795_449_316.0));
        assert_eq!(parse_time(&json!(12.5)), Ok(12.5));
        assert_eq!(parse_time(&json!("1970-01-02")), Ok(86_400.0));
        assert_eq!(parse_time(&json!("1970-01-01T01:00:00Z")), Ok(3600.0));
        assert_eq!(parse_time(&json!("1970-01-01T01:00:00.25Z")), Ok(3600.25));
        assert_eq!(parse_time(&json!("1970-01-01T02:00:00+01:00")), Ok(3600.0));
        assert_eq!(parse_time(&json!("1970-01-01T00:00:00-01:30")), Ok(5400.0));
        for bad in
            [json!(-1), json!("yesterday"), json!("2026-11-23T25:00:00Z"), json!("2026-11-23T10:00:00"), json!(true)]
        {
            let e = parse_time(&bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn download_names_carry_camera_time_and_id() {
        assert_eq!(download_name("cam0", Kind::Archive, 3661.0, 7), "camjobd-cam0-19700101T010101Z-7.tar");
        assert_eq!(download_name("door", Kind::Timelapse, 86_400.0, 12), "camjobd-door-19700102T000000Z-12.gif");
    }
}
