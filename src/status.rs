//! Published state: what the supervisor and capture threads publish and everyone else reads.
//!
//! - [`JobRecord`]: the job's lifecycle fields, written only by the supervisor.
//! - [`Heartbeat`]: counters and liveness atomics, written only by the camera's capture thread.
//! - [`SnapshotRing`]: the newest frame and recent snapshot metadata.
//!
//! HTTP, the watchdog and the LED read these; they talk back only through [`Command`]s on the
//! supervisor's bounded channel. Keeping these types here (below `job`) is what lets `http`
//! and `watchdog` work without importing the capture or supervisor code.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crossbeam::channel::Sender;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::{CameraConfig, Config};
use crate::events::{fixed, EventLog};
use crate::index::SnapshotIndex;
use crate::lifecycle::JobState;
use crate::live::LiveFeed;
use crate::ring::{SnapshotMeta, SnapshotRing};

/// A job's lifecycle fields. Written only by the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Job id, increasing across restarts; 0 before the first job.
    pub id: u64,
    /// Current state.
    pub state: JobState,
    /// Why the job is in this state, where one applies.
    pub reason: Option<String>,
    /// Unix seconds.
    pub started_at: Option<f64>,
    /// Unix seconds, once the job ended.
    pub ended_at: Option<f64>,
    /// Unix seconds of the last transition.
    pub state_since: f64,
    /// Recoveries started in this job.
    pub recoveries: u32,
    /// Open attempt the capture thread should be on: 0 at start, +1 per recovery.
    pub attempt: u32,
    /// Limits of this job.
    pub max_frames: Option<u64>,
    /// Limits of this job.
    pub max_duration_s: Option<u64>,
}

impl JobRecord {
    /// The record of a camera that has not run a job yet.
    pub fn idle() -> JobRecord {
        JobRecord {
            id: 0,
            state: JobState::Idle,
            reason: None,
            started_at: None,
            ended_at: None,
            state_since: crate::clock::unix_now(),
            recoveries: 0,
            attempt: 0,
            max_frames: None,
            max_duration_s: None,
        }
    }
}

/// What the capture thread is doing, as published in [`Heartbeat::phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// No job.
    Idle = 0,
    /// Waiting before a reopen.
    Backoff = 1,
    /// Opening, or open with no good frame yet in this attempt.
    Opening = 2,
    /// At least one good frame in this attempt.
    Streaming = 3,
    /// The source failed fatally (or could not be opened); waiting for a reopen order.
    Broken = 4,
    /// `max_frames` reached; the source is closed.
    Done = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Backoff,
            2 => Phase::Opening,
            3 => Phase::Streaming,
            4 => Phase::Broken,
            5 => Phase::Done,
            _ => Phase::Idle,
        }
    }
}

/// Liveness and counters of one camera's capture thread. Only that thread writes them; the
/// counters belong to job `job_id` and are reset when a new job begins.
#[derive(Default)]
pub struct Heartbeat {
    /// The job these counters belong to.
    pub job_id: AtomicU64,
    /// The open attempt in progress (see [`JobRecord::attempt`]).
    pub attempt: AtomicU32,
    /// A [`Phase`] as u8.
    phase: AtomicU8,
    /// Frames read from the source in this job.
    pub frames_captured: AtomicU64,
    /// Frames lost: oversize, garbage, no free buffer.
    pub frames_dropped: AtomicU64,
    /// Frames captured but not published to the live view because every buffer was held
    /// (not dropped: the camera delivered them and kept snapshots were not affected).
    pub frames_skipped: AtomicU64,
    /// Read and open errors in this job.
    pub errors_total: AtomicU64,
    /// Read errors since the last good frame.
    pub consecutive_errors: AtomicU64,
    /// Snapshots kept in this job.
    pub snapshots: AtomicU64,
    /// Wall clock of the last good frame, Unix milliseconds; 0 = none in this job.
    pub last_frame_unix_ms: AtomicU64,
    /// Monotonic ms of the last sign of progress (a good frame, or the start of an attempt).
    pub progress_ms: AtomicU64,
    /// The last error, for reasons.
    last_error: Mutex<heapless::String<200>>,
}

impl Heartbeat {
    /// The capture thread's phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(std::sync::atomic::Ordering::Acquire))
    }
    /// Sets the phase (capture thread only).
    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, std::sync::atomic::Ordering::Release);
    }
    /// Remembers an error message (no allocation; truncated).
    pub fn set_last_error(&self, msg: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = fixed(format_args!("{msg}"));
    }
    /// The last error message.
    pub fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).to_string()
    }
    /// Zeroes the per-job counters for a new job (capture thread only).
    pub fn reset_for_job(&self, job_id: u64) {
        for c in [
            &self.frames_captured,
            &self.frames_dropped,
            &self.frames_skipped,
            &self.errors_total,
            &self.consecutive_errors,
            &self.snapshots,
            &self.last_frame_unix_ms,
        ] {
            c.store(0, Relaxed);
        }
        self.set_last_error("");
        self.job_id.store(job_id, std::sync::atomic::Ordering::Release);
    }
}

/// Everything published about one camera.
pub struct CameraShared {
    /// The camera's name (from the config).
    pub name: String,
    /// The camera's config, for limits and thresholds.
    pub config: CameraConfig,
    /// Lifecycle, written by the supervisor.
    pub job: Mutex<JobRecord>,
    /// Liveness, written by capture.
    pub heartbeat: Heartbeat,
    /// Snapshots, written by capture.
    pub snapshots: SnapshotRing,
    /// Snapshot files on disk, written by the store thread.
    pub stored: SnapshotIndex,
    /// Store counters.
    pub store: StoreStats,
    /// The live view: the newest encoded frame, stream demand, HTTP's copies.
    pub live: Arc<LiveFeed>,
}

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
}

impl CameraShared {
    /// A copy of the job record.
    pub fn job(&self) -> JobRecord {
        self.job.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The job's state alone (no copy of the record).
    pub fn state(&self) -> JobState {
        self.job.lock().unwrap_or_else(|e| e.into_inner()).state
    }

    /// The `{"camera", "job", "latest"}` view of the API.
    pub fn view(&self) -> CameraView {
        let job = self.job();
        let hb = &self.heartbeat;
        let ours = hb.job_id.load(std::sync::atomic::Ordering::Acquire) == job.id && job.id != 0;
        let count = |c: &AtomicU64| if ours { c.load(Relaxed) } else { 0 };
        let last_ms = count(&hb.last_frame_unix_ms);
        CameraView {
            camera: self.name.clone(),
            job: JobView {
                id: (job.id != 0).then_some(job.id),
                camera: self.name.clone(),
                state: job.state,
                reason: job.reason,
                started_at: job.started_at,
                ended_at: job.ended_at,
                state_since: job.state_since,
                frames_captured: count(&hb.frames_captured),
                frames_dropped: count(&hb.frames_dropped),
                frames_skipped: count(&hb.frames_skipped),
                errors_total: count(&hb.errors_total),
                snapshots: count(&hb.snapshots),
                recoveries: job.recoveries,
                last_frame_at: (last_ms != 0).then(|| last_ms as f64 / 1000.0),
                max_frames: job.max_frames,
                max_duration_s: job.max_duration_s,
            },
            latest: self.snapshots.latest_meta(),
            live: LiveView { stream_clients: self.live.clients(), copies_missed: self.live.copies_missed() },
            store: {
                let (files, bytes) = self.stored.usage();
                let s = &self.store;
                StoreView {
                    enabled: self.config.store.enabled,
                    files,
                    bytes,
                    written: s.written.load(Relaxed),
                    queued: s.queued.load(Relaxed),
                    dropped: s.dropped.load(Relaxed),
                    errors: s.errors.load(Relaxed),
                    deleted: s.deleted.load(Relaxed),
                    unchanged: s.unchanged.load(Relaxed),
                    last_change: Some(f32::from_bits(s.last_change.load(Relaxed))).filter(|v| !v.is_nan()),
                    change_threshold: self.config.store.change_threshold,
                    write_ms_mean: Some(s.written.load(Relaxed))
                        .filter(|&n| n > 0)
                        .map(|n| s.write_us_total.load(Relaxed) as f64 / n as f64 / 1000.0),
                    write_ms_max: s.write_us_max.load(Relaxed) as f64 / 1000.0,
                }
            },
        }
    }
}

/// The API's view of one camera.
#[derive(Debug, Clone, Serialize)]
pub struct CameraView {
    /// Camera name.
    pub camera: String,
    /// Its current (or last) job.
    pub job: JobView,
    /// The newest snapshot, or null before the first.
    pub latest: Option<SnapshotMeta>,
    /// The live view.
    pub live: LiveView,
    /// Snapshots on disk.
    pub store: StoreView,
}

/// The API's view of a camera's live view.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    /// MJPEG stream clients of this camera now.
    pub stream_clients: usize,
    /// Reads served an older copy because every copy buffer was held by a slow reader.
    pub copies_missed: u64,
}

/// The API's view of a job (the README names the minimum fields).
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// Job id; null before the first job.
    pub id: Option<u64>,
    /// Camera name.
    pub camera: String,
    /// Lifecycle state.
    pub state: JobState,
    /// Why, where a reason applies.
    pub reason: Option<String>,
    /// Unix seconds.
    pub started_at: Option<f64>,
    /// Unix seconds.
    pub ended_at: Option<f64>,
    /// Unix seconds of the last transition.
    pub state_since: f64,
    /// Frames read in this job.
    pub frames_captured: u64,
    /// Frames lost in this job.
    pub frames_dropped: u64,
    /// Frames captured in this job but skipped for the live view (every encoder busy or every
    /// buffer held); not lost: they were captured.
    pub frames_skipped: u64,
    /// Errors in this job.
    pub errors_total: u64,
    /// Snapshots kept in this job.
    pub snapshots: u64,
    /// Recoveries in this job.
    pub recoveries: u32,
    /// Unix seconds of the last good frame.
    pub last_frame_at: Option<f64>,
    /// This job's frame limit.
    pub max_frames: Option<u64>,
    /// This job's duration limit.
    pub max_duration_s: Option<u64>,
}

impl From<JobView> for JobSummary {
    /// An ended job of this process, counters included.
    fn from(v: JobView) -> JobSummary {
        JobSummary {
            id: v.id.unwrap_or(0),
            camera: v.camera,
            state: v.state,
            reason: v.reason,
            started_at: v.started_at,
            ended_at: v.ended_at,
            frames_captured: Some(v.frames_captured),
            frames_dropped: Some(v.frames_dropped),
            errors_total: Some(v.errors_total),
            recoveries: Some(v.recoveries),
        }
    }
}

/// Limits a start request may set for one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobLimits {
    /// Complete after this many frames.
    pub max_frames: Option<u64>,
    /// Complete after this many seconds.
    pub max_duration_s: Option<u64>,
}

/// Why the supervisor refused a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The job is not in a state that allows it (409).
    Conflict(String),
    /// Every job id has been used (500): only a tampered or ancient `state.json` gets here.
    IdsExhausted(String),
}

/// Answer to a start or stop command.
pub type Reply = Result<JobView, Refusal>;

/// Commands to the supervisor, the single writer of job state.
#[derive(Debug)]
pub enum Command {
    /// Start a new job on a camera.
    Start {
        /// Index into `Shared::cameras`.
        camera: usize,
        /// Limits for this job (the config's when `None`).
        limits: JobLimits,
        /// Where the answer goes.
        reply: oneshot::Sender<Reply>,
    },
    /// Stop the camera's active job.
    Stop {
        /// Index into `Shared::cameras`.
        camera: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<Reply>,
    },
    /// The watchdog saw a stall or an error threshold in attempt `attempt` of job `job_id`.
    Fault {
        /// Index into `Shared::cameras`.
        camera: usize,
        /// The job it was seen in (stale faults are ignored).
        job_id: u64,
        /// The attempt it was seen in.
        attempt: u32,
        /// A sentence for the job's reason.
        reason: String,
    },
}

/// Capacity of the supervisor's command channel; a full channel answers 503.
pub const COMMAND_QUEUE: usize = 64;
/// Ended jobs remembered for `GET /api/jobs`.
pub const JOB_HISTORY: usize = 100;

/// An ended job, for `GET /api/jobs`. Counters are known for jobs of this process only.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// Job id.
    pub id: u64,
    /// Camera name.
    pub camera: String,
    /// The state it ended in.
    pub state: JobState,
    /// Why.
    pub reason: Option<String>,
    /// Unix seconds.
    pub started_at: Option<f64>,
    /// Unix seconds.
    pub ended_at: Option<f64>,
    /// Frames read (null for jobs of an earlier process).
    pub frames_captured: Option<u64>,
    /// Frames lost.
    pub frames_dropped: Option<u64>,
    /// Errors.
    pub errors_total: Option<u64>,
    /// Recoveries.
    pub recoveries: Option<u32>,
}

/// What every thread shares.
pub struct Shared {
    /// The effective config.
    pub config: Config,
    /// One entry per configured camera, in config order.
    pub cameras: Vec<Arc<CameraShared>>,
    /// The event log.
    pub events: EventLog,
    /// The supervisor's bounded command channel.
    pub commands: Sender<Command>,
    /// The last [`JOB_HISTORY`] ended jobs, oldest first.
    history: Mutex<std::collections::VecDeque<JobSummary>>,
    /// When the core loops last went round (for systemd's watchdog).
    pub liveness: Liveness,
    /// Wall-clock jumps seen (by the store thread, which dates snapshots).
    pub clock: crate::clock::ClockState,
}

/// The monotonic time (`clock::mono_ms`) at which each core loop last went round. systemd's
/// watchdog is pinged only while all of them are recent, so a deadlocked thread gets the
/// process restarted.
#[derive(Default)]
pub struct Liveness {
    /// The supervisor's loop (ticks at least every 100 ms).
    pub supervisor: AtomicU64,
    /// The watchdog's loop.
    pub watchdog: AtomicU64,
    /// The store's loop (ticks at least every 200 ms, but a write may take seconds on an SD card).
    pub store: AtomicU64,
}

impl Liveness {
    /// The name of a loop that has not gone round for `stale_ms`, if any (0: not started yet,
    /// which counts as alive).
    pub fn stuck(&self, now_ms: u64, stale_ms: u64) -> Option<&'static str> {
        [("supervisor", &self.supervisor), ("watchdog", &self.watchdog), ("store", &self.store)]
            .into_iter()
            .find(|(_, t)| {
                let t = t.load(Relaxed);
                t != 0 && now_ms.saturating_sub(t) > stale_ms
            })
            .map(|(n, _)| n)
    }

    /// Records a round of a loop.
    pub fn beat(slot: &AtomicU64) {
        slot.store(crate::clock::mono_ms().max(1), Relaxed);
    }
}

impl Shared {
    /// Builds the published state for a config. `commands` is the supervisor's inbox.
    pub fn new(config: Config, commands: Sender<Command>) -> Shared {
        let cameras = config
            .cameras
            .iter()
            .map(|c| {
                Arc::new(CameraShared {
                    name: c.name.clone(),
                    config: c.clone(),
                    job: Mutex::new(JobRecord::idle()),
                    heartbeat: Heartbeat::default(),
                    snapshots: SnapshotRing::default(),
                    stored: SnapshotIndex::new(if c.store.enabled { c.store.max_files } else { 0 }),
                    store: StoreStats { last_change: AtomicU32::new(f32::NAN.to_bits()), ..StoreStats::default() },
                    live: Arc::new(LiveFeed::new(
                        config.http.max_stream_clients,
                        config.http.frame_copies(),
                        c.max_frame_bytes,
                    )),
                })
            })
            .collect();
        let history = Mutex::new(std::collections::VecDeque::with_capacity(JOB_HISTORY));
        Shared {
            config,
            cameras,
            events: EventLog::default(),
            commands,
            history,
            liveness: Liveness::default(),
            clock: Default::default(),
        }
    }

    /// Remembers an ended job, forgetting the oldest beyond [`JOB_HISTORY`].
    pub fn push_history(&self, job: JobSummary) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == JOB_HISTORY {
            h.pop_front();
        }
        h.push_back(job);
    }

    /// Ended jobs, newest first, at most `limit`, optionally of one camera.
    pub fn history(&self, camera: Option<&str>, limit: usize) -> Vec<JobSummary> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().rev().filter(|j| camera.is_none_or(|c| j.camera == c)).take(limit).cloned().collect()
    }

    /// The index of a camera by name.
    pub fn camera_index(&self, name: &str) -> Option<usize> {
        self.cameras.iter().position(|c| c.name == name)
    }
}
