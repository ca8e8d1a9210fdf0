//! Faults the integration tests inject through the real binary, in debug builds only:
//! `CAMJOBD_TEST_FAULT=encoder-panic@30,mqtt-panic` arms [`Fault::EncoderPanic`] at its 30th
//! occurrence and [`Fault::MqttPanic`] at its first. A release build has no hooks: [`hit`]
//! returns `false` before it reads anything.
//!
//! (The export test hook, `CAMJOBD_TEST_EXPORT_PANIC_AT_FILE`, is the export's own.)
//!
//! Knobs, read once at start, debug builds only: [`HISTORY_INTERVAL_ENV`] and
//! [`HISTORY_CAPACITY_ENV`] shorten the history ring's minute and shrink the ring, so that a
//! test sees points come and the ring wrap in seconds ([`history_knobs`]).

/// The environment variable that arms the hooks.
pub const ENV: &str = "CAMJOBD_TEST_FAULT";

/// A place where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An encoder thread panics while encoding a frame (`encoder-panic`).
    EncoderPanic,
    /// An encoder thread cannot create its encoder (`encoder-create`).
    EncoderCreate,
    /// The MQTT network task panics when the broker accepts the connection (`mqtt-panic`).
    MqttPanic,
    /// The WebRTC thread panics while writing a frame to a session (`webrtc-panic`).
    WebrtcPanic,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::EncoderPanic, Fault::EncoderCreate, Fault::MqttPanic, Fault::WebrtcPanic];

    /// The name used in [`ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Fault::EncoderPanic => "encoder-panic",
            Fault::EncoderCreate => "encoder-create",
            Fault::MqttPanic => "mqtt-panic",
            Fault::WebrtcPanic => "webrtc-panic",
        }
    }
}

/// True when `fault` is armed and this is the occurrence it is armed for (counted per fault
/// across the process: the first one is 1). Allocation-free after the first call; always
/// `false` in a release build.
pub fn hit(fault: Fault) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::OnceLock;
    if !cfg!(debug_assertions) {
        return false;
    }
    static ARMED: OnceLock<[Option<u64>; Fault::ALL.len()]> = OnceLock::new();
    static SEEN: [AtomicU64; Fault::ALL.len()] = [const { AtomicU64::new(0) }; Fault::ALL.len()];
    let armed = ARMED.get_or_init(|| parse(&std::env::var(ENV).unwrap_or_default()));
    let i = Fault::ALL.iter().position(|&f| f == fault).expect("listed");
    armed[i].is_some_and(|at| SEEN[i].fetch_add(1, Relaxed) + 1 == at)
}

/// `name[@N],...` → per fault, the occurrence it is armed for. Unknown names are logged and
/// ignored (a test that misspells one then fails on what it expected).
fn parse(text: &str) -> [Option<u64>; Fault::ALL.len()] {
    let mut armed = [None; Fault::ALL.len()];
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, at) = item.split_once('@').unwrap_or((item, "1"));
        match (Fault::ALL.iter().position(|f| f.name() == name), at.parse::<u64>()) {
            (Some(i), Ok(n)) if n > 0 => {
                log::warn!("{ENV}: {name} armed at occurrence {n} (a test hook)");
                armed[i] = Some(n);
            }
            _ => log::warn!("{ENV}: {item:?} is not a known fault (name or name@N, N >= 1); ignored"),
        }
    }
    armed
}

/// Seconds a history point covers instead of 60 (1 to 60).
pub const HISTORY_INTERVAL_ENV: &str = "CAMJOBD_TEST_HISTORY_INTERVAL_S";
/// Points the history ring holds instead of 1440 (1 to 1440).
pub const HISTORY_CAPACITY_ENV: &str = "CAMJOBD_TEST_HISTORY_CAPACITY";

/// The history ring's interval (seconds, up to 60) and capacity (up to `max_capacity`) as the
/// knobs set them, each `None` when unset, out of range or in a release build (which always
/// keeps a day of minutes). Read once per process.
pub fn history_knobs(max_capacity: usize) -> (Option<u32>, Option<usize>) {
    use std::sync::OnceLock;
    if !cfg!(debug_assertions) {
        return (None, None);
    }
    static KNOBS: OnceLock<(Option<u64>, Option<u64>)> = OnceLock::new();
    let read = |key: &str, max: u64| {
        let v = std::env::var(key).ok()?;
        match v.trim().parse::<u64>() {
            Ok(n @ 1..) if n <= max => {
                log::warn!("{key}={n} (a test hook)");
                Some(n)
            }
            _ => {
                log::warn!("{key}={v:?} is not a whole number from 1 to {max}; ignored");
                None
            }
        }
    };
    let (interval, capacity) =
        *KNOBS.get_or_init(|| (read(HISTORY_INTERVAL_ENV, 60), read(HISTORY_CAPACITY_ENV, max_capacity as u64)));
    (interval.map(|n| n as u32), capacity.map(|n| n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_occurrences_are_parsed() {
        assert_eq!(parse("encoder-panic@30, mqtt-panic"), [Some(30), None, Some(1), None]);
        assert_eq!(parse("nope,encoder-create@0,encoder-create@x"), [None; 4]);
        assert_eq!(parse("webrtc-panic@40"), [None, None, None, Some(40)]);
        assert_eq!(parse(""), [None; 4]);
    }
}
