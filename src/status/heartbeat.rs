//! A camera's heartbeat: what its capture thread is doing and the job's counters, as atomics
//! only that thread writes.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

use crate::events::fixed;

/// What the capture thread is doing, as published in [`Heartbeat::phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Phase {
    /// No job.
    #[default]
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
    /// The open attempt in progress (see [`super::JobRecord::attempt`]).
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
    /// Monotonic ms since which every frame wanted has been refused (larger than
    /// `max_frame_bytes`, or malformed) and none published; 0: the last one was usable.
    unusable_since_ms: AtomicU64,
    /// The size of the last frame refused as too large (0: not known).
    unusable_bytes: AtomicU64,
    /// Why the last one was refused ([`Unusable`] as u8).
    unusable_cause: AtomicU8,
    /// The last error, for reasons.
    last_error: Mutex<heapless::String<200>>,
}

/// Why a frame the camera delivered gave no image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Unusable {
    /// Larger than `max_frame_bytes`.
    Oversize = 1,
    /// Not a whole JPEG (or the encoder refused it).
    Malformed = 2,
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
    /// A frame was refused: the job delivers no image while only such frames come.
    /// `bytes` is its size when known (0 otherwise).
    pub fn note_unusable(&self, cause: Unusable, bytes: u64) {
        let now = crate::clock::mono_ms().max(1);
        let _ = self.unusable_since_ms.compare_exchange(0, now, Relaxed, Relaxed);
        self.unusable_bytes.store(bytes, Relaxed);
        self.unusable_cause.store(cause as u8, Relaxed);
    }

    /// A frame was published (the camera delivers images), or a new attempt begins.
    pub fn clear_unusable(&self) {
        if self.unusable_since_ms.load(Relaxed) != 0 {
            self.unusable_since_ms.store(0, Relaxed);
        }
    }

    /// How long only refused frames have come (0: the last one was usable), the last one's
    /// cause and size (0: not known).
    pub fn unusable(&self, now_ms: u64) -> (u64, Unusable, u64) {
        let since = self.unusable_since_ms.load(Relaxed);
        let cause = if self.unusable_cause.load(Relaxed) == Unusable::Malformed as u8 {
            Unusable::Malformed
        } else {
            Unusable::Oversize
        };
        let elapsed = if since == 0 { 0 } else { now_ms.saturating_sub(since).max(1) };
        (elapsed, cause, self.unusable_bytes.load(Relaxed))
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
            &self.unusable_since_ms,
        ] {
            c.store(0, Relaxed);
        }
        self.set_last_error("");
        self.job_id.store(job_id, std::sync::atomic::Ordering::Release);
    }
}
