//! The watchdog thread: decides when a camera has stalled or failed, from the heartbeats
//! alone, and tells the supervisor. It never touches a source, so a read that hangs in a
//! driver cannot hang the watchdog; it never changes job state itself, so the supervisor
//! stays the single writer. Going round anyway, it also closes each camera's history minute
//! (`status::history::Sampler`).

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::clock;
use crate::config::WatchdogConfig;
use crate::shutdown::Stop;
use crossbeam_channel::Sender;

use crate::status::history::{Counters, Sampler};
use crate::status::{CameraShared, Command, Heartbeat, Liveness, Phase, Shared, Unusable};

/// What the watchdog concluded about one open attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong (or nothing to judge).
    Fine,
    /// Recover, for this reason.
    Fault(String),
}

/// What the watchdog saw of one attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// What the capture thread is doing.
    pub phase: Phase,
    /// Time since the last sign of progress (a frame read, the start of the attempt).
    pub silent_ms: u64,
    /// Read errors in a row.
    pub consecutive_errors: u64,
    /// How long the capture thread has not picked up the supervisor's latest order (0 when
    /// it has).
    pub lagging_ms: u64,
    /// How long every frame has been refused (too large, malformed) with none published (0:
    /// the last one was usable).
    pub unusable_ms: u64,
}

/// Judges one attempt. `last_error` and `unusable` say why, when it comes to that: the last
/// read error, and why the frames give no image.
pub fn assess(
    wd: &WatchdogConfig,
    seen: Seen,
    last_error: impl FnOnce() -> String,
    unusable: impl FnOnce() -> String,
) -> Verdict {
    let Seen { phase, silent_ms, consecutive_errors, lagging_ms, unusable_ms } = seen;
    let secs = |ms: u64| ms as f64 / 1000.0;
    if lagging_ms > wd.stall_timeout_ms {
        return Verdict::Fault(format!(
            "the capture thread has not answered for {:.1} s (stall timeout {:.1} s); the camera driver may be hung",
            secs(lagging_ms),
            secs(wd.stall_timeout_ms)
        ));
    }
    match phase {
        Phase::Idle | Phase::Backoff | Phase::Done => Verdict::Fine,
        Phase::Broken => Verdict::Fault(last_error()),
        Phase::Opening | Phase::Streaming => {
            if consecutive_errors >= wd.max_consecutive_errors as u64 {
                Verdict::Fault(format!(
                    "{consecutive_errors} read errors in a row (max_consecutive_errors {}); last: {}",
                    wd.max_consecutive_errors,
                    last_error()
                ))
            } else if unusable_ms > 0 && (unusable_ms > wd.stall_timeout_ms || silent_ms > wd.stall_timeout_ms) {
                // Frames come, or came, but none makes an image: a stall with its cause.
                Verdict::Fault(format!(
                    "{} (no usable frame for {:.1} s, stall timeout {:.1} s)",
                    unusable(),
                    secs(unusable_ms.max(silent_ms)),
                    secs(wd.stall_timeout_ms)
                ))
            } else if silent_ms > wd.stall_timeout_ms {
                Verdict::Fault(format!(
                    "no frame for {:.1} s (stall timeout {:.1} s)",
                    secs(silent_ms),
                    secs(wd.stall_timeout_ms)
                ))
            } else {
                Verdict::Fine
            }
        }
    }
}

/// Why frames give no image, and what to do, for a job's reason.
pub fn unusable_reason(cause: Unusable, bytes: u64, max_frame_bytes: usize) -> String {
    match (cause, bytes) {
        (Unusable::Oversize, 0) => format!(
            "frames exceed max_frame_bytes {max_frame_bytes}: raise it (or lower the camera's size or quality)"
        ),
        (Unusable::Oversize, n) => format!(
            "frames of {} KB exceed max_frame_bytes {max_frame_bytes}: raise it (or lower the camera's size or quality)",
            n.div_ceil(1000)
        ),
        (Unusable::Malformed, _) => {
            "every frame was malformed (not a whole JPEG): check the camera, or what the pipe command writes".into()
        }
    }
}

/// How often to look: a tenth of the shortest stall timeout, within 10..=100 ms.
fn tick(cameras: &[Arc<CameraShared>]) -> Duration {
    let min = cameras.iter().map(|c| c.config.watchdog.stall_timeout_ms).min().unwrap_or(1000);
    Duration::from_millis((min / 10).clamp(10, 100))
}

/// What the watchdog reads and where it reports: nothing else of the shared state.
pub struct Inputs {
    /// The cameras, in config order (faults name them by index).
    pub cameras: Vec<Arc<CameraShared>>,
    /// The supervisor's command channel, for faults.
    pub commands: Sender<Command>,
    /// Where the watchdog's loop records that it went round.
    pub liveness: Arc<Liveness>,
}

impl Inputs {
    /// The watchdog's part of `shared`.
    pub fn from(shared: &Shared) -> Inputs {
        Inputs {
            cameras: shared.cameras.clone(),
            commands: shared.commands.clone(),
            liveness: Arc::clone(&shared.liveness),
        }
    }
}

/// Runs until `stop`.
pub fn run(inputs: Inputs, stop: Stop) {
    let Inputs { cameras, commands, liveness } = inputs;
    let tick = tick(&cameras);
    // Per camera: the (job, attempt) already reported, and since when the capture thread
    // has lagged behind the record.
    let mut reported: Vec<(u64, u32)> = vec![(0, 0); cameras.len()];
    let mut lag_since: Vec<Option<(u64, u32, u64)>> = vec![None; cameras.len()];
    // The history rings' minutes are closed here: this loop goes round every 100 ms at most
    // whatever the cameras do, and reads the heartbeats anyway.
    let mut samplers: Vec<Sampler> = cameras.iter().map(|_| Sampler::default()).collect();
    while !stop.wait(tick) {
        Liveness::beat(&liveness.watchdog);
        let now = clock::mono_ms();
        let unix = clock::unix_now();
        for (i, cam) in cameras.iter().enumerate() {
            samplers[i].tick(&cam.history, unix, now, Counters::of(&cam.heartbeat));
            let (id, state, attempt) = {
                let g = cam.job.lock().unwrap_or_else(|e| e.into_inner());
                (g.id, g.state, g.attempt)
            };
            if !state.is_capturing() || reported[i] == (id, attempt) {
                continue;
            }
            let hb: &Heartbeat = &cam.heartbeat;
            let current = hb.job_id.load(Acquire) == id && hb.attempt.load(Acquire) == attempt;
            let lagging_ms = if current {
                lag_since[i] = None;
                0
            } else {
                match lag_since[i] {
                    Some((j, a, t)) if (j, a) == (id, attempt) => now.saturating_sub(t),
                    _ => {
                        lag_since[i] = Some((id, attempt, now));
                        0
                    }
                }
            };
            let silent = now.saturating_sub(hb.progress_ms.load(Acquire));
            let phase = if current { hb.phase() } else { Phase::Idle };
            let (unusable_ms, cause, bytes) = hb.unusable(now);
            let seen = Seen {
                phase,
                silent_ms: silent,
                consecutive_errors: hb.consecutive_errors.load(Relaxed),
                lagging_ms,
                unusable_ms,
            };
            let verdict = assess(
                &cam.config.watchdog,
                seen,
                || hb.last_error(),
                || unusable_reason(cause, bytes, cam.config.max_frame_bytes),
            );
            if let Verdict::Fault(reason) = verdict {
                let cmd = Command::Fault { camera: i, job_id: id, attempt, reason };
                // A full channel is retried on the next tick.
                if commands.try_send(cmd).is_ok() {
                    reported[i] = (id, attempt);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wd() -> WatchdogConfig {
        WatchdogConfig { stall_timeout_ms: 1000, max_consecutive_errors: 3, ..WatchdogConfig::default() }
    }

    fn seen(phase: Phase, silent_ms: u64, consecutive_errors: u64, lagging_ms: u64) -> Seen {
        Seen { phase, silent_ms, consecutive_errors, lagging_ms, unusable_ms: 0 }
    }

    fn judge(s: Seen) -> Verdict {
        assess(&wd(), s, || "EIO".into(), || "too big".into())
    }

    #[test]
    fn stall_is_reported_with_a_readable_reason() {
        assert_eq!(judge(seen(Phase::Streaming, 999, 0, 0)), Verdict::Fine);
        assert_eq!(
            judge(seen(Phase::Streaming, 1500, 0, 0)),
            Verdict::Fault("no frame for 1.5 s (stall timeout 1.0 s)".into())
        );
        assert!(matches!(judge(seen(Phase::Opening, 1001, 0, 0)), Verdict::Fault(_)));
    }

    #[test]
    fn error_threshold_and_broken_sources() {
        assert_eq!(judge(seen(Phase::Streaming, 0, 2, 0)), Verdict::Fine);
        let v = judge(seen(Phase::Streaming, 0, 3, 0));
        assert_eq!(v, Verdict::Fault("3 read errors in a row (max_consecutive_errors 3); last: EIO".into()));
        assert_eq!(judge(seen(Phase::Broken, 0, 0, 0)), Verdict::Fault("EIO".into()));
    }

    #[test]
    fn waiting_phases_are_not_judged_but_a_hung_thread_is() {
        for p in [Phase::Idle, Phase::Backoff, Phase::Done] {
            assert_eq!(judge(seen(p, 60_000, 99, 0)), Verdict::Fine, "{p:?}");
        }
        assert!(matches!(judge(seen(Phase::Idle, 0, 0, 1001)), Verdict::Fault(r) if r.contains("has not answered")));
    }

    #[test]
    fn frames_that_give_no_image_are_a_stall_that_names_its_cause() {
        // Frames keep coming (not silent), but every one is refused.
        let s = Seen { unusable_ms: 999, ..seen(Phase::Streaming, 10, 0, 0) };
        assert_eq!(judge(s), Verdict::Fine);
        let s = Seen { unusable_ms: 1200, ..s };
        assert_eq!(judge(s), Verdict::Fault("too big (no usable frame for 1.2 s, stall timeout 1.0 s)".into()));
        // A source that drops refused frames before they count as read goes silent as well:
        // the refusal is still the reason.
        let s = Seen { unusable_ms: 900, ..seen(Phase::Opening, 1001, 0, 0) };
        assert!(matches!(judge(s), Verdict::Fault(r) if r.starts_with("too big")));
        assert_eq!(
            unusable_reason(Unusable::Oversize, 412_345, 65_536),
            "frames of 413 KB exceed max_frame_bytes 65536: raise it (or lower the camera's size or quality)"
        );
        assert!(unusable_reason(Unusable::Oversize, 0, 65_536).starts_with("frames exceed max_frame_bytes 65536"));
    }
}
