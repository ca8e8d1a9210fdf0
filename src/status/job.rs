//! The job's types as threads exchange them: the supervisor's [`JobRecord`], the API's
//! [`JobView`] (record + this job's counters), the history's [`JobSummary`] (an ended job, its
//! counters known only for jobs of this process), and the commands and refusals of the
//! supervisor's channel.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::lifecycle::JobState;

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

/// The API's view of a job (docs/http-api.md names the minimum fields).
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

impl JobLimits {
    /// Limits from a start request (HTTP body, MQTT command), in the config's ranges; the
    /// error names the key and the range.
    pub fn checked(max_frames: Option<u64>, max_duration_s: Option<u64>) -> Result<JobLimits, String> {
        use crate::config::{MAX_DURATION_S, MAX_FRAMES};
        for (key, v, max) in
            [("max_frames", max_frames, MAX_FRAMES), ("max_duration_s", max_duration_s, MAX_DURATION_S)]
        {
            match v {
                Some(0) => return Err(format!("{key} must be >= 1 (or left out)")),
                Some(n) if n > max => return Err(format!("{key} must be <= {max} (got {n})")),
                _ => {}
            }
        }
        Ok(JobLimits { max_frames, max_duration_s })
    }
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

/// The last [`JOB_HISTORY`] ended jobs, oldest first (allocated once, at start).
pub struct JobHistory(Mutex<VecDeque<JobSummary>>);

impl Default for JobHistory {
    fn default() -> Self {
        JobHistory(Mutex::new(VecDeque::with_capacity(JOB_HISTORY)))
    }
}

impl JobHistory {
    /// Remembers an ended job, forgetting the oldest beyond [`JOB_HISTORY`].
    pub fn push(&self, job: JobSummary) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == JOB_HISTORY {
            h.pop_front();
        }
        h.push_back(job);
    }

    /// Ended jobs, newest first, at most `limit`, optionally of one camera.
    pub fn list(&self, camera: Option<&str>, limit: usize) -> Vec<JobSummary> {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().rev().filter(|j| camera.is_none_or(|c| j.camera == c)).take(limit).cloned().collect()
    }
}
