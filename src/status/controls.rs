//! One camera's controls as published: the list the capture thread read from the camera at its
//! last open or change, the values the user chose ([`Saved`], also on disk), and the bounded
//! queue through which HTTP and MQTT hand new values to the capture thread, which applies them
//! between frames. Nobody waits on capture: a full queue or too many changes a second is
//! refused at once.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::controls::{Control, Saved, FILE};

/// Changes a second a camera takes (a burst of as many, then one every 1/RATE s): enough for a
/// slider dragged in Home Assistant, not enough for a client in a loop to keep a camera
/// reconfiguring (a libcamera change restarts rpicam-vid).
pub const RATE: f64 = 5.0;
/// Changes waiting for the capture thread at most.
pub const QUEUE: usize = 4;

/// What became of a change handed to the capture thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The camera took the values (read back in the published list).
    Applied,
    /// The camera is not open: the values are saved and applied when it opens.
    Deferred,
    /// The camera refused them (the driver's error).
    Failed(String),
}

/// New values for the capture thread, `(id, value)`.
pub struct SetRequest {
    /// The values, checked against the published list.
    pub changes: Vec<(u32, i64)>,
    /// The same by name, to keep once the camera took them (or is closed): buttons left out.
    pub keep: Vec<(String, i64)>,
    /// Where the outcome goes (nobody may be listening any more).
    pub reply: oneshot::Sender<Outcome>,
}

/// Why a change was not even queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// More than [`RATE`] changes a second.
    Rate,
    /// [`QUEUE`] changes are already waiting.
    Full,
}

/// Why a change was refused before it reached the camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// No list to check against: the camera was never opened (`false`), or has no controls.
    NoList {
        /// Whether the camera has been opened since start.
        opened: bool,
    },
    /// The body or a value does not fit the list.
    Invalid(crate::controls::Refusal),
    /// Over the rate, or changes are waiting.
    Busy(Refused),
}

/// A change checked and admitted: the values to keep (by name; buttons are not kept) and the
/// values to set (by id).
pub struct Prepared {
    /// Name → value, to save.
    pub keep: Vec<(String, i64)>,
    /// Id → value, for the camera.
    pub changes: Vec<(u32, i64)>,
}

/// Counters (`/api/status` per camera, `/metrics`).
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    /// Changes handed to the capture thread.
    pub sets: AtomicU64,
    /// Changes refused for going over [`RATE`] or a full queue.
    pub refused_busy: AtomicU64,
    /// Changes the camera refused, and saved values it refused at an open.
    pub failed: AtomicU64,
    /// Camera restarts to apply a change (libcamera: rpicam-vid takes options only at start).
    pub restarts: AtomicU64,
    /// Failed writes of the saved values (retried by the store thread until one goes through).
    pub save_errors: AtomicU64,
}

struct Inner {
    list: Arc<Vec<Control>>,
    open: bool,
    saved: Saved,
    /// Token bucket: tokens left and when they were counted.
    tokens: f64,
    counted: Instant,
}

/// One camera's controls.
pub struct Hub {
    inner: Mutex<Inner>,
    tx: Sender<SetRequest>,
    rx: Receiver<SetRequest>,
    /// Bumped on every publish, so readers (the MQTT link) notice a new list or new values.
    generation: AtomicU64,
    /// Serialises writes of the saved file, so the last change is the one on disk.
    file: Mutex<()>,
    /// The values changed since they were last written.
    dirty: std::sync::atomic::AtomicBool,
    /// Counters.
    pub counters: Counters,
}

impl Default for Hub {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        Hub {
            inner: Mutex::new(Inner {
                list: Arc::default(),
                open: false,
                saved: Saved { version: 1, ..Saved::default() },
                tokens: RATE,
                counted: Instant::now(),
            }),
            tx,
            rx,
            generation: AtomicU64::new(0),
            file: Mutex::new(()),
            dirty: std::sync::atomic::AtomicBool::new(false),
            counters: Counters::default(),
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The list as last read from the camera, and whether the camera is open now.
    pub fn list(&self) -> (Arc<Vec<Control>>, bool) {
        let g = self.lock();
        (Arc::clone(&g.list), g.open)
    }

    /// How many times the list or the values changed (0: never read from a camera).
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Capture: the camera's list as read now (`open` false once it closed; the list stays, so
    /// a stopped camera's controls can still be changed for its next open).
    pub fn publish(&self, list: Option<Vec<Control>>, open: bool) {
        let mut g = self.lock();
        if let Some(list) = list {
            g.list = Arc::new(list);
        }
        g.open = open;
        drop(g);
        self.generation.fetch_add(1, Relaxed);
    }

    /// The values the user chose.
    pub fn saved(&self) -> Saved {
        self.lock().saved.clone()
    }

    /// Capture: keeps values the camera took (or will take at its next open), for the store
    /// thread to write ([`Hub::save_if_changed`]). A refused change is never kept.
    pub fn keep(&self, values: Vec<(String, i64)>) {
        if values.is_empty() {
            return;
        }
        self.lock().saved.values.extend(values);
        self.dirty.store(true, Relaxed);
    }

    /// Checks a change (`{"<name or id>": value}`) against the list and the rate.
    pub fn prepare(&self, body: &serde_json::Value, now: Instant) -> Result<Prepared, Rejected> {
        let (list, _) = self.list();
        if list.is_empty() {
            return Err(Rejected::NoList { opened: self.generation() > 0 });
        }
        let checked = crate::controls::check(&list, body).map_err(Rejected::Invalid)?;
        self.admit(now).map_err(Rejected::Busy)?;
        let keep = checked.iter().filter(|(i, _)| list[*i].kind != crate::controls::Kind::Button);
        Ok(Prepared {
            keep: keep.map(|&(i, v)| (list[i].name.clone(), v)).collect(),
            changes: checked.iter().map(|&(i, v)| (list[i].id, v)).collect(),
        })
    }

    /// Checks a change and hands it to the capture thread: [`Hub::prepare`], then
    /// [`Hub::request`]. Nothing is kept until the camera took it.
    pub fn change(&self, body: &serde_json::Value, now: Instant) -> Result<oneshot::Receiver<Outcome>, Rejected> {
        let p = self.prepare(body, now)?;
        self.request(p).map_err(Rejected::Busy)
    }

    /// Takes a change if the rate allows: one token of [`RATE`] a second.
    pub fn admit(&self, now: Instant) -> Result<(), Refused> {
        let mut g = self.lock();
        let refill = now.saturating_duration_since(g.counted).as_secs_f64() * RATE;
        g.tokens = (g.tokens + refill).min(RATE);
        g.counted = now;
        if g.tokens < 1.0 {
            self.counters.refused_busy.fetch_add(1, Relaxed);
            return Err(Refused::Rate);
        }
        g.tokens -= 1.0;
        Ok(())
    }

    /// Hands a change to the capture thread; the outcome arrives on the receiver.
    pub fn request(&self, p: Prepared) -> Result<oneshot::Receiver<Outcome>, Refused> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(SetRequest { changes: p.changes, keep: p.keep, reply }) {
            Ok(()) => {
                self.counters.sets.fetch_add(1, Relaxed);
                Ok(rx)
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.refused_busy.fetch_add(1, Relaxed);
                Err(Refused::Full)
            }
        }
    }

    /// Capture: the next waiting change, if any (never blocks).
    pub fn take(&self) -> Option<SetRequest> {
        self.rx.try_recv().ok()
    }

    /// Reads `<dir>/<camera>/controls.json` at start-up. A missing file is no values; a file
    /// that is not ours (damaged, planted, a link) is left alone and reported.
    pub fn load(&self, dir: &Path, camera: &str) -> Result<(), String> {
        // Temporary files a crash left mid-write are garbage: the rename never happened.
        if let Ok(at) = crate::sys::open_dir_beneath(dir, Path::new(camera)) {
            for (name, _) in crate::sys::list_in(&at).unwrap_or_default() {
                if name.starts_with(FILE) && name.ends_with(".tmp") {
                    let _ = crate::sys::remove_in(&at, &name);
                }
            }
        }
        let rel = Path::new(camera).join(FILE);
        let bytes = match crate::sys::open_regular_beneath(dir, &rel) {
            Ok(f) => {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, crate::controls::FILE_MAX as u64 + 1), &mut b)
                    .map_err(|e| format!("cannot read {}: {e}", dir.join(&rel).display()))?;
                b
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot open {}: {e}", dir.join(&rel).display())),
        };
        let saved = Saved::parse(&bytes).map_err(|e| {
            format!(
                "{} is not camjobd's ({e}); its values are not applied, and the next control change replaces it",
                dir.join(&rel).display()
            )
        })?;
        self.lock().saved = saved;
        Ok(())
    }

    /// The store thread: writes the kept values when they changed since the last write; a
    /// failed write is tried again at the next call. True when a write was made.
    pub fn save_if_changed(&self, dir: &Path, camera: &str) -> std::io::Result<bool> {
        if !self.dirty.swap(false, Relaxed) {
            return Ok(false);
        }
        self.save(dir, camera).map(|()| true).inspect_err(|_| {
            self.dirty.store(true, Relaxed);
            self.counters.save_errors.fetch_add(1, Relaxed);
        })
    }

    /// Writes the kept values to `<dir>/<camera>/controls.json`, durably: a temporary file,
    /// fsync, renamed over the old one.
    fn save(&self, dir: &Path, camera: &str) -> std::io::Result<()> {
        let _one = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = self.saved().to_bytes();
        let root = std::fs::File::open(dir)?;
        match crate::sys::mkdir_in(&root, camera) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let at = crate::sys::open_dir_beneath(dir, Path::new(camera))?;
        crate::sys::write_atomic_in(&at, FILE, &bytes, true)
    }

    /// The `controls` object of the camera's status view.
    pub fn to_json(&self) -> serde_json::Value {
        let (list, open) = self.list();
        let c = &self.counters;
        serde_json::json!({
            "count": list.len(),
            "open": open,
            "saved": self.lock().saved.values.len(),
            "sets": c.sets.load(Relaxed),
            "refused_busy": c.refused_busy.load(Relaxed),
            "failed": c.failed.load(Relaxed),
            "restarts": c.restarts.load(Relaxed),
            "save_errors": c.save_errors.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_is_a_burst_then_a_trickle() {
        let hub = Hub::default();
        let t0 = Instant::now();
        for _ in 0..RATE as usize {
            assert_eq!(hub.admit(t0), Ok(()));
        }
        assert_eq!(hub.admit(t0), Err(Refused::Rate));
        assert_eq!(hub.admit(t0 + Duration::from_millis(100)), Err(Refused::Rate), "half a token");
        assert_eq!(hub.admit(t0 + Duration::from_millis(210)), Ok(()));
        assert_eq!(hub.counters.refused_busy.load(Relaxed), 2);
    }

    #[test]
    fn the_queue_is_bounded_and_never_blocks() {
        let hub = Hub::default();
        let one = || Prepared { keep: vec![], changes: vec![(1, 1)] };
        let rxs: Vec<_> = (0..QUEUE).map(|_| hub.request(one()).unwrap()).collect();
        assert_eq!(hub.request(one()).err(), Some(Refused::Full));
        assert!(hub.take().is_some());
        assert!(hub.request(one()).is_ok());
        drop(rxs);
    }

    #[test]
    fn saved_values_persist_and_a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::default();
        assert!(!hub.save_if_changed(dir.path(), "cam0").unwrap(), "nothing kept yet");
        hub.keep(vec![("brightness".to_string(), 7)]);
        assert!(hub.save_if_changed(dir.path(), "cam0").unwrap());
        assert!(!hub.save_if_changed(dir.path(), "cam0").unwrap(), "written once");
        std::fs::write(dir.path().join("cam0").join("controls.json.7.tmp"), b"{").unwrap();
        let again = Hub::default();
        again.load(dir.path(), "cam0").unwrap();
        assert!(!dir.path().join("cam0").join("controls.json.7.tmp").exists(), "a crash's temp file is removed");
        assert_eq!(again.saved().values.get("brightness"), Some(&7));
        std::fs::write(dir.path().join("elsewhere.json"), br#"{"version":1,"values":{"x":1}}"#).unwrap();
        std::fs::create_dir(dir.path().join("cam1")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere.json"), dir.path().join("cam1").join(FILE)).unwrap();
        let e = Hub::default().load(dir.path(), "cam1").unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
        std::fs::write(dir.path().join("cam0").join(FILE), b"{not json").unwrap();
        assert!(Hub::default().load(dir.path(), "cam0").unwrap_err().contains("next control change replaces it"));
        // A failed write is counted and tried again.
        std::fs::remove_file(dir.path().join("cam0").join(FILE)).unwrap();
        std::fs::create_dir(dir.path().join("cam0").join(FILE)).unwrap();
        hub.keep(vec![("brightness".to_string(), 8)]);
        assert!(hub.save_if_changed(dir.path(), "cam0").is_err());
        assert_eq!(hub.counters.save_errors.load(Relaxed), 1);
        std::fs::remove_dir(dir.path().join("cam0").join(FILE)).unwrap();
        assert!(hub.save_if_changed(dir.path(), "cam0").unwrap(), "retried");
    }
}
