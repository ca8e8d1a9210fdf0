//! Published state: what the supervisor and capture threads publish and everyone else reads.
//!
//! - [`job`]: the job's record (written only by the supervisor), its API view and history
//!   entry, and the supervisor's commands.
//! - [`heartbeat`]: counters and liveness atomics, written only by the camera's capture thread.
//! - [`store`]: the store thread's counters per camera.
//! - [`CameraShared`] gathers one camera's parts (with its [`SnapshotRing`], [`SnapshotIndex`]
//!   and [`LiveFeed`]); [`Shared`] holds the cameras, the event log, the command channel and the
//!   liveness stamps. Threads that need less get only their part (capture: its camera and the
//!   event log; the watchdog and the MQTT link: their `Inputs`; the LED: the cameras and the
//!   log).
//!
//! HTTP, the watchdog and the LED read these; they talk back only through [`Command`]s on the
//! supervisor's bounded channel. Keeping these types here (below `job`) is what lets `http`
//! and `watchdog` work without importing the capture or supervisor code.

pub mod controls;
pub mod heartbeat;
pub mod history;
pub mod job;
pub mod moonraker;
pub mod store;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use serde::Serialize;

pub use heartbeat::{Heartbeat, Phase, Unusable};
pub use job::{
    Command, JobHistory, JobLimits, JobRecord, JobSummary, JobView, Refusal, Reply, COMMAND_QUEUE, JOB_HISTORY,
};
pub use store::{AtStart, StoreStats, StoreView};

use crate::config::{CameraConfig, Config};
use crate::events::EventLog;
use crate::index::SnapshotIndex;
use crate::lifecycle::JobState;
use crate::live::LiveFeed;
use crate::ring::{SnapshotMeta, SnapshotRing};

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
    /// H.264 for RTSP and WebRTC clients, when the camera has `video`.
    pub video: Option<Arc<crate::h264::stage::Video>>,
    /// The last day of frame rate, drops and state, one point a minute.
    pub history: history::History,
    /// The camera's controls, the values the user chose, the queue of changes to capture.
    pub controls: controls::Hub,
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
            video: self.video.as_ref().map(|v| v.view(self.config.source.fps().unwrap_or(30))),
            controls: self.controls.to_json(),
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
                    at_start: s.at_start.get().copied(),
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
    /// H.264 for RTSP and WebRTC clients (`null`: the camera has no `video`).
    pub video: Option<crate::h264::stage::VideoView>,
    /// The camera's controls: how many, whether open, changes and refusals.
    pub controls: serde_json::Value,
}

/// The API's view of a camera's live view.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    /// MJPEG stream clients of this camera now.
    pub stream_clients: usize,
    /// Reads served an older copy because every copy buffer was held by a slow reader.
    pub copies_missed: u64,
}

/// What every thread shares.
pub struct Shared {
    /// The effective config.
    pub config: Config,
    /// One entry per configured camera, in config order.
    pub cameras: Vec<Arc<CameraShared>>,
    /// The event log (an `Arc`: threads that need only it and their camera get it alone).
    pub events: Arc<EventLog>,
    /// The supervisor's bounded command channel.
    pub commands: Sender<Command>,
    /// The last [`JOB_HISTORY`] ended jobs, oldest first.
    pub history: JobHistory,
    /// When the core loops last went round (for systemd's watchdog).
    pub liveness: Arc<Liveness>,
    /// Wall-clock jumps seen (by the store thread, which dates snapshots).
    pub clock: crate::clock::ClockState,
    /// The RTSP server's counters.
    pub rtsp: Arc<crate::rtsp::Stats>,
    /// The WebRTC server's counters (`/api/status`, `/metrics`).
    pub webrtc: Arc<crate::webrtc::Stats>,
    /// What the Moonraker registration did (`/api/status.moonraker`).
    pub moonraker: Arc<moonraker::Registration>,
    /// What the start-up found and repaired beside the snapshot files (`/api/status.startup`).
    pub startup: Startup,
}

/// What the start-up repaired outside the snapshot files (each camera's own is in its store
/// view, `at_start`). The power-cut test reads these, not log lines.
#[derive(Debug, Default, Serialize)]
pub struct Startup {
    /// Damaged lines of the event journal skipped (a torn write after a power cut).
    pub journal_lines_skipped: AtomicU64,
    /// Partial export files (an export cut short) deleted.
    pub export_partials_deleted: AtomicU64,
}

/// A core loop that has not gone round for this long counts as hung: `/healthz` answers 503
/// and systemd's watchdog is no longer pinged. Generous: a store write on a slow SD card can
/// take seconds.
pub const STALE: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// The WebRTC thread's loop (goes round at least every second), when it runs.
    pub webrtc: AtomicU64,
    /// Triggered when the supervisor has recorded the jobs' final states at shutdown (or left
    /// them for the restart, when the service fails): the store, waiting on it, then writes the
    /// journal's last lines. A latch (the stop token's type), not a flag to poll.
    pub supervisor_finished: crate::shutdown::Stop,
}

impl Liveness {
    /// The name of a loop that has not gone round for `stale_ms`, if any (0: not started yet,
    /// which counts as alive).
    pub fn stuck(&self, now_ms: u64, stale_ms: u64) -> Option<&'static str> {
        [
            ("supervisor", &self.supervisor),
            ("watchdog", &self.watchdog),
            ("store", &self.store),
            ("webrtc", &self.webrtc),
        ]
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
    /// The cameras the WebRTC server serves (those with `video`), with their config index.
    pub fn webrtc_cameras(&self) -> Vec<(usize, crate::webrtc::Camera)> {
        let cameras = self.cameras.iter().enumerate();
        cameras
            .filter_map(|(i, c)| {
                let (video, cfg) = (c.video.as_ref()?, c.config.video.as_ref()?);
                let profile_idc = match cfg.profile {
                    crate::config::Profile::Baseline => 0x42,
                    crate::config::Profile::Main => 0x4d,
                    crate::config::Profile::High => 0x64,
                };
                Some((i, crate::webrtc::Camera { name: c.name.clone(), video: Arc::clone(video), profile_idc }))
            })
            .collect()
    }

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
                    video: c
                        .video
                        .as_ref()
                        .map(|v| Arc::new(crate::h264::stage::Video::new(crate::h264::stage::ring_bytes(v)))),
                    history: history::History::new(),
                    controls: controls::Hub::default(),
                })
            })
            .collect::<Vec<Arc<CameraShared>>>();
        for c in &cameras {
            if let Err(e) = c.controls.load(&config.storage.dir, &c.name) {
                log::warn!("camera {}: {e}", c.name);
            }
        }
        Shared {
            config,
            cameras,
            events: EventLog::committed(),
            commands,
            history: JobHistory::default(),
            liveness: Arc::default(),
            clock: Default::default(),
            rtsp: Arc::default(),
            webrtc: Arc::default(),
            moonraker: Arc::default(),
            startup: Startup::default(),
        }
    }

    /// The index of a camera by name.
    pub fn camera_index(&self, name: &str) -> Option<usize> {
        self.cameras.iter().position(|c| c.name == name)
    }
}
