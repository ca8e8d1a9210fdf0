//! Time: a monotonic clock for deadlines and stall detection, wall-clock Unix seconds for the
//! API. Monotonic time is kept as milliseconds since process start so it fits in an atomic.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The instant the process first asked for the time; all `mono_ms` values count from it.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`], monotonic (never jumps with NTP or a wrong RTC on a Pi).
pub fn mono_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// The wall clock as Unix seconds with a fraction, as the API reports times.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The monotonic clock a decision-making loop reads: the system's, or one a test moves by
/// hand so backoff and budget rules are checked without sleeping.
#[derive(Clone, Default)]
pub struct Mono {
    /// `None`: the system clock. `Some`: a start instant plus milliseconds moved by hand.
    manual: Option<Arc<(Instant, AtomicU64)>>,
}

impl Mono {
    /// The system's monotonic clock.
    pub fn system() -> Mono {
        Mono::default()
    }

    /// A clock that stands still until [`Mono::advance`] moves it (tests).
    pub fn manual() -> Mono {
        Mono { manual: Some(Arc::new((Instant::now(), AtomicU64::new(0)))) }
    }

    /// Now, on this clock.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.0 + Duration::from_millis(m.1.load(Relaxed)),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved (no-op).
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.manual {
            m.1.fetch_add(by.as_millis() as u64, Relaxed);
        }
    }
}

/// A wall-clock jump smaller than this is drift or a slow tick, not a jump.
pub const JUMP_S: f64 = 5.0;

/// Finds wall-clock jumps (a Pi without a real-time clock syncing NTP, someone running `date
/// -s`) by comparing how far the wall clock and the monotonic clock moved since the last look.
/// Owned by one thread (the store's, which dates snapshots); what it found is published in a
/// [`ClockState`].
pub struct JumpDetector {
    wall: f64,
    mono: u64,
}

/// A jump found by [`JumpDetector::check`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jump {
    /// Seconds the wall clock moved beyond what the monotonic clock did (+ forward).
    pub by_s: f64,
    /// It happened after this monotonic time (the last look) ...
    pub after_mono_ms: u64,
    /// ... and by this one (the look that found it).
    pub by_mono_ms: u64,
    /// The wall clock at `by_mono_ms` (the new timeline).
    pub wall_now: f64,
}

impl Default for JumpDetector {
    fn default() -> Self {
        JumpDetector { wall: unix_now(), mono: mono_ms() }
    }
}

impl JumpDetector {
    /// Compares both clocks with the last look; `Some` when the wall clock jumped.
    pub fn check(&mut self) -> Option<Jump> {
        self.check_at(unix_now(), mono_ms())
    }

    /// The wall clock at the last look: judge ages against this, not a fresh reading, so that
    /// "now" and the dates it is compared with are on the same side of any jump.
    pub fn last_wall(&self) -> f64 {
        self.wall
    }

    fn check_at(&mut self, wall: f64, mono: u64) -> Option<Jump> {
        let by_s = (wall - self.wall) - mono.saturating_sub(self.mono) as f64 / 1000.0;
        let jump = Jump { by_s, after_mono_ms: self.mono, by_mono_ms: mono, wall_now: wall };
        (self.wall, self.mono) = (wall, mono);
        (by_s.abs() >= JUMP_S).then_some(jump)
    }
}

impl Jump {
    /// How to date something stamped `wall` at monotonic time `mono` on the new timeline:
    /// before the jump, add `by_s`; after it, as it is. A stamp taken between the two looks is
    /// judged by which timeline it fits (they are `by_s` ≥ [`JUMP_S`] apart).
    pub fn redate(&self, wall: f64, mono: u64) -> f64 {
        if mono > self.by_mono_ms {
            return wall;
        }

        if mono > self.after_mono_ms {
            let expected_new = self.wall_now - (self.by_mono_ms - mono) as f64 / 1000.0;
            if (wall - expected_new).abs() < (wall + self.by_s - expected_new).abs() {
                return wall;
            }
        }
        wall + self.by_s
    }
}

/// What the clock has been seen doing, for `/api/status` and `/metrics`.
#[derive(Default)]
pub struct ClockState {
    jumps: std::sync::atomic::AtomicU64,
    /// The last jump's size (f64 bits) and when (wall, f64 bits): written together under a
    /// short lock, read for the API.
    last: std::sync::Mutex<Option<(f64, f64)>>,
}

impl ClockState {
    /// Records a jump.
    pub fn record(&self, j: &Jump) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((j.by_s, j.wall_now));
        self.jumps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Jumps seen since start.
    pub fn jumps(&self) -> u64 {
        self.jumps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last jump: its size in seconds and when it was seen (wall clock after it).
    pub fn last(&self) -> Option<(f64, f64)> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `+21 d 3 h`, `-5 min 3 s`, `+12 s`: a jump's size for people.
pub fn describe(by_s: f64) -> String {
    let sign = if by_s < 0.0 { '-' } else { '+' };
    let s = by_s.abs().round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sign}{sec} s"),
        (0, 0, _) => format!("{sign}{m} min {sec} s"),
        (0, _, _) => format!("{sign}{h} h {m} min"),
        _ => format!("{sign}{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_is_what_the_wall_clock_moved_beyond_the_monotonic_clock() {
        let mut d = JumpDetector { wall: 1000.0, mono: 0 };
        assert_eq!(d.check_at(1001.0, 1000), None, "a second is a second");
        assert_eq!(d.check_at(1003.5, 2000), None, "1.5 s of slack is not a jump");
        let j = d.check_at(1003.5 + 1.0 + 21.0 * 86_400.0, 3000).expect("three weeks forward");
        assert!((j.by_s - 21.0 * 86_400.0).abs() < 1e-6);
        assert_eq!((j.after_mono_ms, j.by_mono_ms), (2000, 3000));
        let back = d.check_at(1000.0, 4000).expect("and back");
        assert!(back.by_s < -21.0 * 86_400.0);
        assert_eq!(describe(j.by_s), "+21 d 0 h");
        assert_eq!(describe(-303.0), "-5 min 3 s");
        assert_eq!(describe(7.0), "+7 s");
        assert_eq!(describe(3.0 * 3600.0 + 60.0), "+3 h 1 min");
    }

    #[test]
    fn stamps_are_redated_by_the_timeline_they_were_taken_on() {
        // Clock 1000 s behind until a jump seen between mono 10,000 and 11,000 ms.
        let j = Jump { by_s: 1000.0, after_mono_ms: 10_000, by_mono_ms: 11_000, wall_now: 2011.0 };
        assert_eq!(j.redate(1005.0, 5_000), 2005.0, "before the last look: old timeline");
        assert_eq!(j.redate(2011.0, 11_000 + 1), 2011.0, "after the look that found it: new");
        // Between the two looks: whichever timeline it fits.
        assert_eq!(j.redate(1010.5, 10_500), 2010.5, "taken just before the jump");
        assert_eq!(j.redate(2010.5, 10_500), 2010.5, "taken just after it");
        // Files found at start-up (u64::MAX) keep their dates.
        assert_eq!(j.redate(900.0, u64::MAX), 900.0);
    }
}
