//! What the Moonraker registration did, for `/api/status.moonraker` and `/metrics`: written
//! by the `moonraker` thread a few times per sync round, read by HTTP. One short lock; nothing
//! waits on Moonraker through it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where the registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Not yet through a first round (or reconnecting after Moonraker closed the connection).
    Connecting,
    /// The last round went through: every webcam that is not in conflict is registered.
    Synced,
    /// The last round failed; the next is due in `retry_in_s`.
    Retrying,
}

impl SyncState {
    /// Every state, for `/metrics`.
    pub const ALL: [SyncState; 3] = [SyncState::Connecting, SyncState::Synced, SyncState::Retrying];

    /// The name the JSON uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Connecting => "connecting",
            SyncState::Synced => "synced",
            SyncState::Retrying => "retrying",
        }
    }
}

/// One camera's webcam.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webcam {
    /// The camera.
    pub camera: String,
    /// Its webcam's name in Moonraker.
    pub name: String,
    /// Moonraker lists it as camjobd sent it (as of the last round that went through).
    pub registered: bool,
    /// A webcam of this name that camjobd did not make (by hand, in `moonraker.conf`, another
    /// camjobd) is in the way; camjobd leaves it alone.
    pub conflict: bool,
    /// What is in the way, and what to do about it.
    pub reason: Option<String>,
}

/// The registration's state (the JSON has `retry_in_s` where this has `retry_at`).
#[derive(Debug, Clone)]
pub struct View {
    /// Moonraker's URL.
    pub url: String,
    /// The base of the URLs registered.
    pub base_url: String,
    /// Where it stands.
    pub state: SyncState,
    /// Each registering camera's webcam, in config order.
    pub webcams: Vec<Webcam>,
    /// Sync rounds begun.
    pub attempts: u64,
    /// Sync rounds that failed (Moonraker down, refused, answered an error).
    pub failures: u64,
    /// Webcams camjobd made earlier and removed because no camera claims them now.
    pub removed: u64,
    /// Why the last round failed; cleared by one that goes through.
    pub last_error: Option<String>,
    /// When the next round begins after a failure.
    pub retry_at: Option<Instant>,
}

/// The JSON form.
#[derive(Serialize)]
struct Json<'a> {
    url: &'a str,
    base_url: &'a str,
    state: SyncState,
    webcams: &'a [Webcam],
    attempts: u64,
    failures: u64,
    removed: u64,
    last_error: Option<&'a str>,
    retry_in_s: Option<f64>,
}

impl View {
    /// Seconds until the next round after a failure (tenths), `None` when none is waited for.
    pub fn retry_in_s(&self) -> Option<f64> {
        let left = self.retry_at?.saturating_duration_since(Instant::now());
        Some((left.as_secs_f64() * 10.0).ceil() / 10.0)
    }
}

/// The registration's published state; `None` inside while Moonraker is not configured.
#[derive(Debug, Default)]
pub struct Registration {
    view: Mutex<Option<View>>,
}

impl Registration {
    /// Starts publishing: state `connecting`, nothing registered yet.
    pub fn configure(&self, url: &str, base_url: &str, webcams: Vec<(String, String)>) {
        let webcams = webcams
            .into_iter()
            .map(|(camera, name)| Webcam { camera, name, registered: false, conflict: false, reason: None })
            .collect();
        *self.lock() = Some(View {
            url: url.to_string(),
            base_url: base_url.to_string(),
            state: SyncState::Connecting,
            webcams,
            attempts: 0,
            failures: 0,
            removed: 0,
            last_error: None,
            retry_at: None,
        });
    }

    /// Changes the view (nothing when not configured).
    pub fn update(&self, f: impl FnOnce(&mut View)) {
        if let Some(v) = self.lock().as_mut() {
            f(v);
        }
    }

    /// A round failed: `retrying`, the next in `retry_in`.
    pub fn failed(&self, error: String, retry_in: Duration) {
        self.update(|v| {
            v.state = SyncState::Retrying;
            v.failures += 1;
            v.last_error = Some(error);
            v.retry_at = Some(Instant::now() + retry_in);
        });
    }

    /// A copy of the view, `None` when Moonraker is not configured.
    pub fn view(&self) -> Option<View> {
        self.lock().clone()
    }

    /// The `/api/status.moonraker` object, or `None` when Moonraker is not configured.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        let guard = self.lock();
        let v = guard.as_ref()?;
        let json = Json {
            url: &v.url,
            base_url: &v.base_url,
            state: v.state,
            webcams: &v.webcams,
            attempts: v.attempts,
            failures: v.failures,
            removed: v.removed,
            last_error: v.last_error.as_deref(),
            retry_in_s: v.retry_in_s(),
        };
        Some(serde_json::to_value(json).expect("plain data"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<View>> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_until_configured_then_each_round_shows() {
        let r = Registration::default();
        assert!(r.to_json().is_none());
        r.failed("ignored".into(), Duration::from_secs(1));
        assert!(r.view().is_none(), "nothing is recorded before configure");
        r.configure("http://127.0.0.1:7125", "http://127.0.0.1:8080", vec![("cam0".into(), "Printer".into())]);
        let j = r.to_json().unwrap();
        assert_eq!(j["state"], "connecting");
        assert_eq!(j["webcams"][0]["name"], "Printer");
        assert_eq!(j["retry_in_s"], serde_json::Value::Null);
        r.failed("connection refused".into(), Duration::from_secs(2));
        let j = r.to_json().unwrap();
        assert_eq!((j["state"].as_str(), j["failures"].as_u64()), (Some("retrying"), Some(1)));
        let retry = j["retry_in_s"].as_f64().unwrap();
        assert!(retry > 1.5 && retry <= 2.0, "{retry}");
        assert_eq!(j["last_error"], "connection refused");
    }
}
