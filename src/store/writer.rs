//! The `store` thread: writes kept snapshots (temp file, optional fsync, rename) from a short
//! bounded queue, scores each against the previous one (`change`), dates it on today's
//! timeline across wall-clock jumps, flushes the event journal, and runs retention
//! (`retention`) after each write and every few seconds.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{change, journal, StoreItem};
use crate::config::{FsyncPolicy, KeepPolicy};
use crate::events::EventKind;
use crate::index::{snapshot_path, StoredSnapshot};
use crate::shutdown::Stop;
use crate::status::Shared;

/// How often the journal is looked at when no snapshot arrives (state changes reach the
/// disk within this; batches of other events wait for `storage.journal`'s limits).
const JOURNAL_TICK: Duration = Duration::from_millis(200);
/// How often age retention and free space are checked when nothing is written.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);
/// Store error events per camera at most this often (a full disk fails every write).
const ERROR_EVENT_EVERY: Duration = Duration::from_secs(10);

/// The store thread's state.
pub struct Store {
    pub(super) shared: Arc<Shared>,
    rx: Receiver<StoreItem>,
    /// Per camera (config order): what the thread keeps about it.
    pub(super) cams: Vec<CameraStore>,
    last_housekeeping: Instant,
    /// The event journal; written on this thread so no one else waits for it.
    journal: journal::Journal,
    /// When the last journal error was logged.
    journal_error_at: Option<Instant>,
    /// Decodes snapshots into thumbnails for change scores.
    thumbnailer: change::Thumbnailer,
    /// Finds wall-clock jumps; looked at before each snapshot is dated.
    pub(super) clock: crate::clock::JumpDetector,
    /// Jumps of the last [`JUMP_MEMORY_MS`]: a snapshot still queued from before one is dated
    /// anew when it is written.
    jumps: heapless::Deque<crate::clock::Jump, 4>,
    /// Reused for the entries a jump moved.
    moved: Vec<StoredSnapshot>,
}

/// How long a jump is applied to snapshots arriving late (the store queue is a few frames).
const JUMP_MEMORY_MS: u64 = 120_000;

/// What the store thread keeps about one camera, fixed size.
#[derive(Default)]
pub(super) struct CameraStore {
    /// The day directory known to exist.
    pub(super) made_day: Option<u32>,
    /// When the last error event was sent.
    error_event_at: Option<Instant>,
    /// Change tracking.
    change: ChangeState,
}

/// Change tracking of one camera.
#[derive(Default)]
struct ChangeState {
    /// The previous kept snapshot's thumbnail.
    prev: Option<change::Thumb>,
    /// Whether the previous score was a change (events fire on the edge).
    changed: bool,
    /// When a file was last written (for `keepalive_s`).
    last_written: Option<Instant>,
    /// When the last change event was sent.
    last_event: Option<Instant>,
}

/// Change events per camera at most this often.
const CHANGE_EVENT_EVERY: Duration = Duration::from_secs(5);

impl Store {
    /// A store reading from `rx`.
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<StoreItem>,
        journal: journal::Journal,
        clock: crate::clock::JumpDetector,
    ) -> Store {
        let n = shared.cameras.len();
        Store {
            shared,
            rx,
            cams: (0..n).map(|_| CameraStore::default()).collect(),
            last_housekeeping: Instant::now(),
            journal,
            journal_error_at: None,
            thumbnailer: change::Thumbnailer::default(),
            clock,
            jumps: heapless::Deque::new(),
            moved: Vec::new(),
        }
    }

    fn flush_journal(&mut self, force: bool) {
        if let Err(e) = self.journal.flush(&self.shared.events, force) {
            if self.journal_error_at.is_none_or(|t| t.elapsed() >= ERROR_EVENT_EVERY) {
                self.journal_error_at = Some(Instant::now());
                log::warn!("cannot write the event journal: {e}");
            }
        }
    }

    /// Writes snapshots until `stop`; what is still queued then is dropped (it is in no index
    /// yet, so nothing is half-listed). The journal gets the final job states before exit.
    pub fn run(mut self, stop: Stop) {
        loop {
            crossbeam_channel::select! {
                recv(self.rx) -> item => match item {
                    Ok(item) => {
                        self.watch_clock();
                        let cam = Arc::clone(&self.shared.cameras[item.camera]);
                        self.write(item);
                        cam.store.queued.fetch_sub(1, Relaxed);
                    }
                    // No camera stores snapshots (or the capture threads are gone): the journal
                    // and retention still need this thread until the stop token.
                    Err(_) => self.rx = crossbeam_channel::never(),
                },
                recv(stop.receiver()) -> _ => break,
                default(JOURNAL_TICK) => {},
            }
            crate::status::Liveness::beat(&self.shared.liveness.store);
            self.watch_clock();
            self.flush_journal(false);
            self.save_controls();
            if self.last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
                self.last_housekeeping = Instant::now();
                for i in 0..self.shared.cameras.len() {
                    self.retain(i);
                }
                self.retain_total();
                self.check_free_space();
            }
        }
        // The supervisor records STOPPED for every job while shutting down (or, when the
        // service fails, an event that leaves them to the restart); wait (bounded) for that, so
        // a clean stop is not mistaken for a crash at the next start.
        self.shared.liveness.supervisor_finished.wait(Duration::from_millis(1500));
        self.flush_journal(true);
        self.save_controls();
    }

    /// Writes each camera's control values when they changed: the capture thread keeps what the
    /// camera took, and the disk is this thread's. A failed write is retried at the next tick,
    /// counted, and logged at most once a minute.
    fn save_controls(&mut self) {
        static FAILED_LOG: crate::logging::Quiet = crate::logging::Quiet::new();
        for cam in &self.shared.cameras {
            if let Err(e) = cam.controls.save_if_changed(&self.shared.config.storage.dir, &cam.name) {
                FAILED_LOG.warn(format_args!(
                    "camera {}: cannot save its control values in {}/{}/{} ({e}); retrying",
                    cam.name,
                    self.shared.config.storage.dir.display(),
                    cam.name,
                    crate::controls::FILE
                ));
            }
        }
    }

    /// Looks for a wall-clock jump since the last look. On one: an event, the counter, and
    /// every listed snapshot taken before it dated anew on the new timeline (the file's mtime
    /// too, so a restart reads the corrected time), so that retention judges real ages and an
    /// export of "today" finds them. Files stay in the day directory they were written to.
    pub(super) fn watch_clock(&mut self) {
        let Some(jump) = self.clock.check() else { return };
        self.shared.clock.record(&jump);
        if self.jumps.is_full() {
            self.jumps.pop_front();
        }
        let _ = self.jumps.push_back(jump);
        let mut redated = 0;
        let storage = &self.shared.config.storage.dir;
        for cam in &self.shared.cameras {
            cam.stored.redate(&jump, &mut self.moved);
            redated += self.moved.len();
            let mut day_dir: Option<(u32, File)> = None;
            for s in &self.moved {
                if day_dir.as_ref().is_none_or(|(d, _)| *d != s.day) {
                    let rel = Path::new(&cam.name).join(crate::index::day_name(s.day).as_str());
                    day_dir = crate::sys::open_dir_beneath(storage, &rel).ok().map(|f| (s.day, f));
                }
                if let Some((_, dir)) = &day_dir {
                    let _ = crate::sys::set_mtime_in(dir, &format!("{}.jpg", s.seq), s.captured_at);
                }
            }
        }
        // The corrected dates must survive a power cut: a restart reads them back.
        if redated > 0 && self.shared.config.storage.fsync == FsyncPolicy::Always {
            if let Ok(root) = File::open(storage) {
                let _ = crate::sys::sync_filesystem(&root);
            }
        }
        self.shared.events.push(
            EventKind::Info,
            "",
            None,
            None,
            format_args!(
                "the wall clock jumped by {} (NTP sync?); {redated} stored snapshot(s) taken before it are dated anew (their files stay in their day directories)",
                crate::clock::describe(jump.by_s)
            ),
        );
    }

    /// `captured_at` of a frame on today's timeline: moved by the jumps it was taken before.
    fn redate(&mut self, wall: f64, mono: u64) -> f64 {
        let now = crate::clock::mono_ms();
        while self.jumps.front().is_some_and(|j| now.saturating_sub(j.by_mono_ms) > JUMP_MEMORY_MS) {
            self.jumps.pop_front();
        }
        self.jumps.iter().fold(wall, |at, j| j.redate(at, mono))
    }

    fn write(&mut self, item: StoreItem) {
        let i = item.camera;
        let cam = Arc::clone(&self.shared.cameras[i]);
        let frame = item.frame;
        let captured_at = self.redate(frame.captured_at, frame.captured_mono_ms);
        let day = crate::index::day_of(captured_at);
        let score = self.score(i, frame.bytes());
        let c = &cam.config.store;
        let keepalive_due =
            self.cams[i].change.last_written.is_none_or(|t| t.elapsed() >= Duration::from_secs(c.keepalive_s));
        if c.keep == KeepPolicy::Changed && score.is_some_and(|s| s < c.change_threshold) && !keepalive_due {
            cam.store.unchanged.fetch_add(1, Relaxed);
            return;
        }
        let entry = StoredSnapshot {
            seq: frame.seq,
            captured_at,
            bytes: frame.bytes().len() as u64,
            width: frame.width,
            height: frame.height,
            change: score,
            day,
            mono_ms: frame.captured_mono_ms,
        };
        // Make room in the index (and on disk) before the new file exists.
        while cam.stored.usage().0 >= cam.stored.capacity() && self.delete_oldest(i) {}
        let path = snapshot_path(&self.shared.config.storage.dir, &cam.name, day, frame.seq);
        let t = Instant::now();
        let result = self.write_file(i, day, &path, frame.bytes());
        drop(frame); // the pool buffer is free again
        match result {
            Ok(()) => {
                let us = t.elapsed().as_micros() as u64;
                cam.store.write_us_total.fetch_add(us, Relaxed);
                cam.store.write_us_max.fetch_max(us, Relaxed);
                if let Err(e) = cam.stored.push(entry) {
                    // Only if seq went backwards, which the start-up scan prevents.
                    log::warn!("{}: snapshot {} is older than the newest stored one; not listed", cam.name, e.seq);
                }
                cam.store.written.fetch_add(1, Relaxed);
                self.cams[i].change.last_written = Some(Instant::now());
                self.retain(i);
                self.retain_total();
            }
            Err(e) => {
                cam.store.errors.fetch_add(1, Relaxed);
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    self.check_free_space();
                }
                let hint = crate::error::storage_hint(&e);
                self.error_event(i, format_args!("snapshot {} not stored: {e}{hint}", entry.seq));
            }
        }
    }

    /// The change score against camera `i`'s previous kept snapshot; emits a `change` event
    /// when the scene starts changing. `None` for the first snapshot or one that won't decode.
    fn score(&mut self, i: usize, jpeg: &[u8]) -> Option<f32> {
        let mut thumb = [0u8; change::THUMB_W * change::THUMB_H];
        if let Err(e) = self.thumbnailer.thumbnail(jpeg, &mut thumb) {
            log::debug!("{}: no change score: {e}", self.shared.cameras[i].name);
            return None;
        }
        let st = &mut self.cams[i].change;
        let score = st.prev.as_ref().map(|p| change::score(p, &thumb));
        st.prev = Some(thumb);
        let cam = &self.shared.cameras[i];
        let s = score?;
        cam.store.last_change.store(s.to_bits(), Relaxed);
        let threshold = cam.config.store.change_threshold;
        let changed = s >= threshold;
        if changed && !st.changed && st.last_event.is_none_or(|t| t.elapsed() >= CHANGE_EVENT_EVERY) {
            st.last_event = Some(Instant::now());
            self.shared.events.push(
                EventKind::Change,
                &cam.name,
                None,
                None,
                format_args!("scene changed: score {s:.1} (change_threshold {threshold:.1})"),
            );
        }
        st.changed = changed;
        score
    }

    /// Temp file, optional fsync, rename: a listed snapshot is always a whole file.
    fn write_file(&mut self, i: usize, day: u32, path: &Path, bytes: &[u8]) -> io::Result<()> {
        // The camera and day directories are made and opened without following links (one
        // swapped for a link to elsewhere is refused, not written into); the file is created,
        // renamed and synced relative to the day directory.
        let storage = &self.shared.config.storage.dir;
        let cam_name = &self.shared.cameras[i].name;
        let day_name = crate::index::day_name(day);
        if self.cams[i].made_day != Some(day) {
            fs::create_dir_all(storage)?;
            crate::sys::mkdir_in(&File::open(storage)?, cam_name)?;
            crate::sys::mkdir_in(&crate::sys::open_dir_beneath(storage, Path::new(cam_name))?, &day_name)?;
            self.cams[i].made_day = Some(day);
        }
        let rel_day = Path::new(cam_name).join(day_name.as_str());
        let name = path.file_name().and_then(|n| n.to_str()).expect("<seq>.jpg");
        let always = self.shared.config.storage.fsync == FsyncPolicy::Always;
        let r = crate::sys::open_dir_beneath(storage, &rel_day)
            .and_then(|at| crate::sys::write_atomic_in(&at, name, bytes, always));
        if r.is_err() {
            // The directory may have been removed under us; make it again next time.
            self.cams[i].made_day = None;
        }
        r
    }

    fn error_event(&mut self, i: usize, message: std::fmt::Arguments<'_>) {
        if self.cams[i].error_event_at.is_some_and(|t| t.elapsed() < ERROR_EVENT_EVERY) {
            return;
        }
        self.cams[i].error_event_at = Some(Instant::now());
        let cam = &self.shared.cameras[i];
        let errors = cam.store.errors.load(Relaxed);
        self.shared.events.error(&cam.name, format_args!("{message} ({errors} store errors so far; capture goes on)"));
    }
}
