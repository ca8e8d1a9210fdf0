//! The status LED: which blink pattern each job state shows, and the LED backends.
//!
//! The pattern is a pure function of the state and the time, so it is tested without
//! hardware. Backends implement [`Led`]; a backend that fails is disabled with one warning
//! and never stops a job. The only backend today is `none`; GPIO and sysfs LEDs plug in here.

use crate::status::JobState;

/// Slow blink half-period (STARTING, RECOVERING).
pub const SLOW_MS: u64 = 500;
/// Fast blink half-period (FAILED).
pub const FAST_MS: u64 = 100;

/// Whether the LED is lit for `state` at monotonic time `t_ms`:
/// RUNNING steady on, STARTING/RECOVERING slow blink, FAILED fast blink, otherwise off.
pub fn lit(state: JobState, t_ms: u64) -> bool {
    match state {
        JobState::Running => true,
        JobState::Starting | JobState::Recovering => (t_ms / SLOW_MS) % 2 == 0,
        JobState::Failed => (t_ms / FAST_MS) % 2 == 0,
        _ => false,
    }
}

/// The state one LED shows for several cameras: the one that most needs attention.
pub fn summary(states: impl IntoIterator<Item = JobState>) -> JobState {
    let rank = |s: JobState| match s {
        JobState::Failed => 5,
        JobState::Recovering => 4,
        JobState::Starting => 3,
        JobState::Running => 2,
        JobState::Stopping => 1,
        _ => 0,
    };
    states.into_iter().max_by_key(|s| rank(*s)).unwrap_or(JobState::Idle)
}

/// An LED backend.
pub trait Led: Send {
    /// Turns the LED on or off. An error disables the LED (the caller logs it once).
    fn set(&mut self, on: bool) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_per_state() {
        assert!((0..2000).step_by(50).all(|t| lit(JobState::Running, t)));
        for s in [JobState::Idle, JobState::Stopped, JobState::Completed, JobState::Stopping] {
            assert!((0..2000).step_by(50).all(|t| !lit(s, t)), "{s:?}");
        }
        let toggles = |s| {
            (0..2000u64).step_by(10).map(|t| lit(s, t)).collect::<Vec<_>>().windows(2).filter(|w| w[0] != w[1]).count()
        };
        assert_eq!(toggles(JobState::Starting), 3);
        assert_eq!(toggles(JobState::Recovering), 3);
        assert_eq!(toggles(JobState::Failed), 19);
    }

    #[test]
    fn summary_shows_the_worst() {
        assert_eq!(summary([JobState::Running, JobState::Failed, JobState::Idle]), JobState::Failed);
        assert_eq!(summary([JobState::Running, JobState::Stopped]), JobState::Running);
        assert_eq!(summary([]), JobState::Idle);
    }
}
