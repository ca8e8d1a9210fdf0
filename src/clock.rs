//! Time: a monotonic clock for deadlines and stall detection, wall-clock Unix seconds for the
//! API. Monotonic time is kept as milliseconds since process start so it fits in an atomic.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
