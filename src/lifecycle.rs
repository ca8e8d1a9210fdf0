//! The job states and the state machine as a pure function: which trigger may move which
//! state where. A leaf: it imports nothing from the crate, so `events`, `status` and `job` can
//! all name a state without importing each other.
//! The supervisor applies it; anything not listed here is refused, so an impossible
//! transition is a bug report, never a silent state change.

use std::fmt;

use serde::Serialize;

use JobState::*;

/// The job lifecycle states (docs/lifecycle.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    /// No job has run on this camera since the process started.
    Idle,
    /// Opening the camera; no good frame yet.
    Starting,
    /// Frames are arriving.
    Running,
    /// The camera stalled or failed; it is being reopened.
    Recovering,
    /// A stop was asked for; the camera is being closed.
    Stopping,
    /// Stopped on request or at shutdown.
    Stopped,
    /// Given up; `reason` says why.
    Failed,
    /// `max_frames` or `max_duration_s` was reached.
    Completed,
}

impl JobState {
    /// The name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Idle => "IDLE",
            JobState::Starting => "STARTING",
            JobState::Running => "RUNNING",
            JobState::Recovering => "RECOVERING",
            JobState::Stopping => "STOPPING",
            JobState::Stopped => "STOPPED",
            JobState::Failed => "FAILED",
            JobState::Completed => "COMPLETED",
        }
    }

    /// A job in this state holds the camera: a new start is refused with 409.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Starting | JobState::Running | JobState::Recovering | JobState::Stopping)
    }

    /// States from which the camera is being read (the watchdog watches these).
    pub fn is_capturing(self) -> bool {
        matches!(self, JobState::Starting | JobState::Running | JobState::Recovering)
    }

    /// All states, for metrics and tests.
    pub const ALL: [JobState; 8] = [
        JobState::Idle,
        JobState::Starting,
        JobState::Running,
        JobState::Recovering,
        JobState::Stopping,
        JobState::Stopped,
        JobState::Failed,
        JobState::Completed,
    ];
}

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A start command or autostart (a new job).
    Start,
    /// The first good frame of an open attempt.
    GoodFrame,
    /// A stall, an error threshold or a broken source, with recovery budget left.
    Fault,
    /// A fault with no recovery budget left.
    GiveUp,
    /// A stop command or shutdown.
    StopRequested,
    /// The capture thread closed the source after a stop (or gave up waiting for it).
    Closed,
    /// `max_frames` or `max_duration_s` reached while RUNNING.
    LimitReached,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Illegal {
    /// The state the job was in.
    pub from: JobState,
    /// What was attempted.
    pub trigger: Trigger,
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not allowed in state {}", self.trigger, self.from.as_str())
    }
}

/// The state after `trigger` in state `from`, or [`Illegal`].
pub fn next(from: JobState, trigger: Trigger) -> Result<JobState, Illegal> {
    use Trigger as T;
    let to = match (from, trigger) {
        (Idle | Stopped | Failed | Completed, T::Start) => Starting,
        (Starting | Recovering, T::GoodFrame) => Running,
        (Starting | Running | Recovering, T::Fault) => Recovering,
        (Starting | Running | Recovering, T::GiveUp) => Failed,
        (Starting | Running | Recovering, T::StopRequested) => Stopping,
        (Stopping, T::Closed) => Stopped,
        // Only a job that delivers can complete; a limit hit while starting or recovering
        // is a failure (the supervisor gives up instead).
        (Running, T::LimitReached) => Completed,
        _ => return Err(Illegal { from, trigger }),
    };
    Ok(to)
}

/// True for states a job ends in.
pub fn is_terminal(s: JobState) -> bool {
    matches!(s, Stopped | Failed | Completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIGGERS: [Trigger; 7] = [
        Trigger::Start,
        Trigger::GoodFrame,
        Trigger::Fault,
        Trigger::GiveUp,
        Trigger::StopRequested,
        Trigger::Closed,
        Trigger::LimitReached,
    ];

    #[test]
    fn every_documented_transition() {
        use Trigger as T;
        let allowed = [
            (Idle, T::Start, Starting),
            (Stopped, T::Start, Starting),
            (Failed, T::Start, Starting),
            (Completed, T::Start, Starting),
            (Starting, T::GoodFrame, Running),
            (Recovering, T::GoodFrame, Running),
            (Starting, T::Fault, Recovering),
            (Running, T::Fault, Recovering),
            (Recovering, T::Fault, Recovering),
            (Starting, T::GiveUp, Failed),
            (Running, T::GiveUp, Failed),
            (Recovering, T::GiveUp, Failed),
            (Starting, T::StopRequested, Stopping),
            (Running, T::StopRequested, Stopping),
            (Recovering, T::StopRequested, Stopping),
            (Stopping, T::Closed, Stopped),
            (Running, T::LimitReached, Completed),
        ];
        for (from, t, to) in allowed {
            assert_eq!(next(from, t), Ok(to), "{from:?} --{t:?}-->");
        }
        // Everything else is refused.
        let mut refused = 0;
        for from in JobState::ALL {
            for t in TRIGGERS {
                if !allowed.iter().any(|(f, tt, _)| *f == from && *tt == t) {
                    assert_eq!(next(from, t), Err(Illegal { from, trigger: t }));
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 8 * 7 - allowed.len());
    }

    #[test]
    fn illegal_examples_read_well() {
        assert!(next(Running, Trigger::Start).is_err(), "a running job is not started twice");
        assert!(next(Stopped, Trigger::StopRequested).is_err());
        assert!(next(Idle, Trigger::GoodFrame).is_err());
        assert!(next(Stopping, Trigger::Fault).is_err(), "a stopping job does not recover");
        assert!(next(Recovering, Trigger::LimitReached).is_err(), "a job that is not delivering does not complete");
        assert_eq!(next(Running, Trigger::Start).unwrap_err().to_string(), "Start is not allowed in state RUNNING");
    }

    #[test]
    fn terminal_states_are_not_active() {
        for s in JobState::ALL {
            assert!(!(is_terminal(s) && s.is_active()), "{s:?}");
        }
    }
}
