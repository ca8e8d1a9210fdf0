//! What camjobd keeps in `storage.dir`:
//! - the job id counter (`state.json`), written atomically (temp file, fsync, rename, fsync
//!   of the directory), so a power cut leaves either the old or the new counter;
//! - kept snapshots, `<camera>/<yyyy-mm-dd>/<seq>.jpg`, written by the `store` thread from a
//!   short bounded queue (full → the snapshot is dropped and counted, capture never waits),
//!   each as temp file + rename, within per-camera and total budgets enforced on every write.

pub mod change;
pub mod journal;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::config::{Config, FsyncPolicy, KeepPolicy};
use crate::error::Error;
use crate::events::EventKind;
use crate::frame::Frame;
use crate::index::{snapshot_path, StoredSnapshot};
use crate::shutdown::Stop;
use crate::status::{CameraShared, Shared};

/// The job id state file, `storage.dir/state.json`.
pub struct StateFile {
    /// `storage.dir`, open: the file is read and replaced in it without following a link.
    at: File,
    dir: PathBuf,
}

const NAME: &str = "state.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    next_job_id: u64,
}

impl StateFile {
    /// Creates `dir` if needed and reads the next job id (1 when there is no state yet).
    pub fn open(dir: &Path) -> Result<(StateFile, u64), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::storage(dir, "create the data directory", e))?;
        let at = File::open(dir).map_err(|e| Error::storage(dir, "open the data directory", e))?;
        // Temp files left by a crash are garbage: the rename never happened.
        for (name, _) in crate::sys::list_in(&at).unwrap_or_default() {
            if name.starts_with(NAME) && name.ends_with(".tmp") {
                let _ = crate::sys::remove_in(&at, &name);
            }
        }
        let path = dir.join(NAME);
        let read = crate::sys::open_regular_in(&at, NAME).and_then(|mut f| {
            let mut b = Vec::new();
            io::Read::read_to_end(&mut f, &mut b).map(|_| b)
        });
        let next = match read {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) => s.next_job_id.max(1),
                Err(e) => {
                    return Err(Error::Fatal(format!(
                        "{} is corrupt ({e}); move it away to reset job ids, or fix it by hand",
                        path.display()
                    )))
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => {
                return Err(Error::storage(&path, "read the job id state (it must be a regular file, not a link)", e))
            }
        };
        let file = StateFile { at, dir: dir.to_path_buf() };
        // Prove now, not at the first start command, that the directory is writable.
        file.save(next)?;
        Ok((file, next))
    }

    /// Records the next job id durably.
    pub fn save(&self, next_job_id: u64) -> Result<(), Error> {
        let state = serde_json::to_string(&State { next_job_id }).expect("plain struct");
        crate::sys::write_atomic_in(&self.at, NAME, state.as_bytes(), true)
            .map_err(|e| Error::storage(&self.dir.join(NAME), "write the job id state", e))
    }
}

/// A listed snapshot's file is gone: deleted outside camjobd (by hand, a cleaner script, a
/// failing card). Drops it from the index, and every other listed file of its day that is gone
/// too, so the counters and lists are right at once, with one event. False when it was not
/// listed any more: retention deletes the entry before the file, so that is the normal race.
pub fn forget_missing(events: &crate::events::EventLog, storage_dir: &Path, cam: &CameraShared, seq: u64) -> bool {
    let Some(first) = cam.stored.remove(seq) else { return false };
    let (mut n, mut bytes) = (1u64, first.bytes);
    let mut same_day = Vec::new();
    cam.stored.of_day(first.day, &mut same_day);
    let day_rel = Path::new(&cam.name).join(crate::index::day_name(first.day).as_str());
    let day_dir = crate::sys::open_dir_beneath(storage_dir, &day_rel);
    for s in same_day {
        let gone = match &day_dir {
            Ok(d) => {
                crate::sys::stat_in(d, &format!("{}.jpg", s.seq)).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            }
            // The whole day directory is gone.
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if gone {
            if let Some(s) = cam.stored.remove(s.seq) {
                n += 1;
                bytes += s.bytes;
            }
        }
    }
    events.push(
        EventKind::Error,
        &cam.name,
        None,
        None,
        format_args!(
            "{n} snapshot(s) of {} ({bytes} bytes, seq {seq} among them) were deleted outside camjobd; dropped from the list",
            crate::index::day_name(first.day)
        ),
    );
    true
}

// ---------------------------------------------------------------------------------------
// Snapshot files: the `store` thread, retention, and the start-up scan.
// ---------------------------------------------------------------------------------------

/// A kept snapshot on its way to disk. Holding it holds a pool buffer, so the queue is short.
pub struct StoreItem {
    /// Index into `Shared::cameras`.
    pub camera: usize,
    /// The frame; dropped as soon as its bytes are written.
    pub frame: Arc<Frame>,
}

/// Queue length between capture and the store: each queued snapshot holds a pool buffer, so
/// three buffers are always left: one for capture, the newest snapshot and the live view's
/// newest frame.
pub fn queue_len(config: &Config) -> usize {
    let min_pool = config.cameras.iter().map(|c| c.frame_buffers).min().unwrap_or(4);
    min_pool.saturating_sub(3).max(1)
}

/// How often the journal is looked at when no snapshot arrives (state changes reach the
/// disk within this; batches of other events wait for `storage.journal`'s limits).
const JOURNAL_TICK: Duration = Duration::from_millis(200);
/// How often age retention and free space are checked when nothing is written.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);
/// Store error events per camera at most this often (a full disk fails every write).
const ERROR_EVENT_EVERY: Duration = Duration::from_secs(10);

/// The store thread's state.
pub struct Store {
    shared: Arc<Shared>,
    rx: Receiver<StoreItem>,
    /// Per camera: the day directory known to exist.
    made_day: Vec<Option<u32>>,
    /// Per camera: when the last error event was sent.
    error_event_at: Vec<Option<Instant>>,
    last_housekeeping: Instant,
    /// The event journal; written on this thread so no one else waits for it.
    journal: journal::Journal,
    /// When the last journal error was logged.
    journal_error_at: Option<Instant>,
    /// Decodes snapshots into thumbnails for change scores.
    thumbnailer: change::Thumbnailer,
    /// Per camera: change tracking.
    change: Vec<ChangeState>,
    /// Finds wall-clock jumps; looked at before each snapshot is dated.
    clock: crate::clock::JumpDetector,
    /// Jumps of the last [`JUMP_MEMORY_MS`]: a snapshot still queued from before one is dated
    /// anew when it is written.
    jumps: heapless::Deque<crate::clock::Jump, 4>,
    /// Reused for the entries a jump moved.
    moved: Vec<StoredSnapshot>,
}

/// How long a jump is applied to snapshots arriving late (the store queue is a few frames).
const JUMP_MEMORY_MS: u64 = 120_000;

/// Per-camera change tracking, fixed size.
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
            made_day: vec![None; n],
            error_event_at: vec![None; n],
            last_housekeeping: Instant::now(),
            journal,
            journal_error_at: None,
            thumbnailer: change::Thumbnailer::default(),
            clock,
            jumps: heapless::Deque::new(),
            moved: Vec::new(),
            change: (0..n)
                .map(|_| ChangeState { prev: None, changed: false, last_written: None, last_event: None })
                .collect(),
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
        let deadline = Instant::now() + Duration::from_millis(1500);
        let finished = &self.shared.liveness.supervisor_finished;
        while Instant::now() < deadline && !finished.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.flush_journal(true);
    }

    /// Looks for a wall-clock jump since the last look. On one: an event, the counter, and
    /// every listed snapshot taken before it dated anew on the new timeline (the file's mtime
    /// too, so a restart reads the corrected time), so that retention judges real ages and an
    /// export of "today" finds them. Files stay in the day directory they were written to.
    fn watch_clock(&mut self) {
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
            self.change[i].last_written.is_none_or(|t| t.elapsed() >= Duration::from_secs(c.keepalive_s));
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
                self.change[i].last_written = Some(Instant::now());
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
        let st = &mut self.change[i];
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
        if self.made_day[i] != Some(day) {
            fs::create_dir_all(storage)?;
            crate::sys::mkdir_in(&File::open(storage)?, cam_name)?;
            crate::sys::mkdir_in(&crate::sys::open_dir_beneath(storage, Path::new(cam_name))?, &day_name)?;
            self.made_day[i] = Some(day);
        }
        let rel_day = Path::new(cam_name).join(day_name.as_str());
        let name = path.file_name().and_then(|n| n.to_str()).expect("<seq>.jpg");
        let always = self.shared.config.storage.fsync == FsyncPolicy::Always;
        let r = crate::sys::open_dir_beneath(storage, &rel_day)
            .and_then(|at| crate::sys::write_atomic_in(&at, name, bytes, always));
        if r.is_err() {
            // The directory may have been removed under us; make it again next time.
            self.made_day[i] = None;
        }
        r
    }

    /// Deletes camera `i`'s oldest snapshot. False when there is nothing to delete.
    fn delete_oldest(&mut self, i: usize) -> bool {
        let cam = &self.shared.cameras[i];
        let Some(old) = cam.stored.pop_oldest() else { return false };
        let dir = &self.shared.config.storage.dir;
        let path = snapshot_path(dir, &cam.name, old.day, old.seq);
        // Never through a day directory replaced by a link: only files under storage.dir go.
        match crate::sys::remove_beneath(dir, &crate::index::snapshot_rel(&cam.name, old.day, old.seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                cam.store.errors.fetch_add(1, Relaxed);
                log::warn!("{}: cannot delete {}: {e}", cam.name, path.display());
            }
        }
        cam.store.deleted.fetch_add(1, Relaxed);
        // The last file of a day takes its directory with it.
        if cam.stored.oldest().is_none_or(|next| next.day != old.day) {
            if let Ok(cam_dir) = crate::sys::open_dir_beneath(dir, Path::new(&cam.name)) {
                let _ = crate::sys::remove_dir_in(&cam_dir, &crate::index::day_name(old.day));
            }
            if self.made_day[i] == Some(old.day) {
                self.made_day[i] = None;
            }
        }
        true
    }

    /// Camera `i`'s own budget: bytes, files (kept by the index capacity), age. The newest
    /// file is always kept, so the budget is exceeded by at most that one file.
    fn retain(&mut self, i: usize) {
        let cam = Arc::clone(&self.shared.cameras[i]);
        let c = &cam.config.store;
        // Ages against the wall clock the jump detector just read, so that the index and "now"
        // are on the same side of a jump (NTP may step the clock during a slow write).
        self.watch_clock();
        let now = self.clock.last_wall();
        loop {
            let (files, bytes) = cam.stored.usage();
            let Some(oldest) = cam.stored.oldest() else { break };
            let too_old = c.max_age_s.is_some_and(|a| now - oldest.captured_at > a as f64);
            if files == 0 || (files == 1 && !too_old) || (bytes <= c.max_bytes && !too_old) {
                break;
            }
            self.delete_oldest(i);
        }
    }

    /// The budget of all cameras together: the oldest snapshot anywhere goes first.
    fn retain_total(&mut self) {
        let max = self.shared.config.storage.max_bytes;
        loop {
            let total: u64 = self.shared.cameras.iter().map(|c| c.stored.usage().1).sum();
            if total <= max {
                break;
            }
            let Some(i) = self.oldest_camera() else { break };
            self.delete_oldest(i);
        }
    }

    /// The camera whose oldest snapshot is the oldest of all, among those with more than one.
    fn oldest_camera(&self) -> Option<usize> {
        let cams = &self.shared.cameras;
        (0..cams.len()).filter(|&i| cams[i].stored.usage().0 > 1).min_by(|&a, &b| {
            let t = |i: usize| cams[i].stored.oldest().map_or(f64::MAX, |s| s.captured_at);
            t(a).total_cmp(&t(b))
        })
    }

    /// Low free space (other programs, other data): give back our oldest snapshots.
    fn check_free_space(&mut self) {
        let min = self.shared.config.storage.min_free_bytes;
        let dir = self.shared.config.storage.dir.clone();
        let Some(free) = crate::sys::free_bytes(&dir) else { return };
        if free >= min {
            return;
        }
        let (mut n, mut freed) = (0u64, 0u64);
        while crate::sys::free_bytes(&dir).is_some_and(|f| f < min) {
            let Some(i) = self.oldest_camera() else { break };
            freed += self.shared.cameras[i].stored.oldest().map_or(0, |s| s.bytes);
            self.delete_oldest(i);
            n += 1;
        }
        self.shared.events.push(
            EventKind::Error,
            "",
            None,
            None,
            format_args!(
                "free space {} MiB is below storage.min_free_bytes {} MiB: deleted the {n} oldest snapshots ({} MiB)",
                free >> 20,
                min >> 20,
                freed >> 20
            ),
        );
    }

    fn error_event(&mut self, i: usize, message: std::fmt::Arguments<'_>) {
        if self.error_event_at[i].is_some_and(|t| t.elapsed() < ERROR_EVENT_EVERY) {
            return;
        }
        self.error_event_at[i] = Some(Instant::now());
        let cam = &self.shared.cameras[i];
        let errors = cam.store.errors.load(Relaxed);
        self.shared.events.push(
            EventKind::Error,
            &cam.name,
            None,
            None,
            format_args!("{message} ({errors} store errors so far; capture goes on)"),
        );
    }
}

/// One error event naming (the first few of) the links and other odd entries found in `place`
/// and left alone; nothing when there are none.
pub fn report_left_alone(events: &crate::events::EventLog, camera: &str, place: &str, odd: &[impl AsRef<str>]) {
    if odd.is_empty() {
        return;
    }
    let names: Vec<&str> = odd.iter().take(5).map(AsRef::as_ref).collect();
    events.push(
        EventKind::Error,
        camera,
        None,
        None,
        format_args!(
            "{} entr(ies) in {place} are links or not regular files and were left alone (not listed, served or deleted): {}",
            odd.len(),
            names.join(", ")
        ),
    );
}

/// Lists the snapshot files left by earlier runs into each camera's index, deleting temp
/// files (a write cut short), empty files (a power cut before writeback) and files beyond
/// `max_files`. Returns the next snapshot seq per camera, so seqs (and ETags) never repeat.
pub fn recover(shared: &Shared) -> Vec<u64> {
    let dir = &shared.config.storage.dir;
    let events = &shared.events;
    shared
        .cameras
        .iter()
        .map(|cam| if cam.config.store.enabled { recover_camera(dir, cam, events) } else { 1 })
        .collect()
}

fn recover_camera(dir: &Path, cam: &CameraShared, events: &crate::events::EventLog) -> u64 {
    use crate::sys::{list_in, open_dir_in, remove_dir_in, remove_in, stat_in, EntryKind};
    let now = crate::clock::unix_now();
    let mut found: Vec<StoredSnapshot> = Vec::new();
    let (mut temps, mut empties) = (0, 0);
    // Links and other odd entries (planted, or left by another program): never entered,
    // listed or deleted; named in one event. Everything is listed, examined and deleted
    // relative to directory descriptors opened without following a link.
    let mut odd: Vec<String> = Vec::new();
    let root = match crate::sys::open_dir_beneath(dir, Path::new(&cam.name)) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(_) => {
            odd.push(cam.name.clone());
            None
        }
    };
    let days = root.as_ref().and_then(|r| list_in(r).ok()).unwrap_or_default();
    for (name, kind) in days {
        let Some(day) = crate::index::parse_day(&name) else { continue };
        let root = root.as_ref().expect("listed from it");
        let day_dir = match kind {
            EntryKind::Dir => open_dir_in(root, &name),
            _ => Err(io::Error::from_raw_os_error(libc::ELOOP)),
        };
        let Ok(day_dir) = day_dir else {
            odd.push(format!("{}/{name}", cam.name));
            continue;
        };
        for (fname, kind) in list_in(&day_dir).unwrap_or_default() {
            if kind != EntryKind::File {
                odd.push(format!("{}/{name}/{fname}", cam.name));
                continue;
            }
            if fname.ends_with(".tmp") {
                let _ = remove_in(&day_dir, &fname);
                temps += 1;
                continue;
            }
            let Some(seq) = fname.strip_suffix(".jpg").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let Ok(meta) = stat_in(&day_dir, &fname) else { continue };
            if meta.kind != EntryKind::File {
                continue;
            }
            if meta.len == 0 {
                let _ = remove_in(&day_dir, &fname);
                empties += 1;
                continue;
            }
            found.push(StoredSnapshot {
                seq,
                // A file dated in the future (the clock was ahead when it was written, then
                // corrected) counts as written now: it ages out instead of staying forever.
                captured_at: meta.mtime.min(now),
                mono_ms: crate::index::FOUND_AT_START,
                bytes: meta.len,
                width: 0,
                height: 0,
                change: None,
                day,
            });
        }
        // A day emptied by a crash mid-retention.
        let _ = remove_dir_in(root, &name);
    }
    found.sort_by_key(|s| s.seq);
    let extra = found.len().saturating_sub(cam.stored.capacity());
    for s in &found[..extra] {
        let _ = crate::sys::remove_beneath(dir, &crate::index::snapshot_rel(&cam.name, s.day, s.seq));
    }
    report_left_alone(events, &cam.name, "storage.dir", &odd);
    for s in &found[extra..] {
        let _ = cam.stored.push(*s);
    }
    if temps + empties + found.len() > 0 {
        log::info!(
            "{}: found {} snapshots on disk (newest seq {}); removed {temps} temp files, {empties} empty files, {extra} beyond max_files",
            cam.name,
            found.len() - extra,
            found.last().map_or(0, |s| s.seq)
        );
    }
    found.last().map_or(1, |s| s.seq + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_reopen_and_temp_files_are_removed() {
        let guard = tempfile::tempdir().unwrap();
        let dir = guard.path().join("data");
        let (f, next) = StateFile::open(&dir).unwrap();
        assert_eq!(next, 1);
        f.save(42).unwrap();
        fs::write(dir.join("state.json.7.tmp"), b"{\"next_job_").unwrap();
        let (_, next) = StateFile::open(&dir).unwrap();
        assert_eq!(next, 42);
        assert!(!dir.join("state.json.7.tmp").exists());
        fs::write(dir.join(NAME), b"{oops").unwrap();
        let err = StateFile::open(&dir).err().unwrap().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
