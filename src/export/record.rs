//! An export's record (what the API shows and `<id>.json` keeps) and its state machine as a
//! pure function, in the style of [`crate::lifecycle`]. Every state change goes through
//! [`next`]; a transition it does not list is a bug, reported and refused, never a silent
//! state change.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an export makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A `.tar` of the snapshot files, byte for byte, plus `manifest.json`.
    Archive,
    /// An animated GIF.
    Timelapse,
}

impl Kind {
    /// The extension of its file.
    pub(super) fn ext(self) -> &'static str {
        match self {
            Kind::Archive => "tar",
            Kind::Timelapse => "gif",
        }
    }

    /// The download's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Archive => "application/x-tar",
            Kind::Timelapse => "image/gif",
        }
    }

    /// As the API spells it (`archive`, `timelapse`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Archive => "archive",
            Kind::Timelapse => "timelapse",
        }
    }
}

/// An export's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExportState {
    /// Waiting for a worker.
    Queued,
    /// Being written.
    Running,
    /// The file is ready.
    Succeeded,
    /// Ended with `error`.
    Failed,
    /// Cancelled by a `DELETE`.
    Cancelled,
}

impl ExportState {
    /// Every state, for exhaustive tests.
    pub const ALL: [ExportState; 5] = [
        ExportState::Queued,
        ExportState::Running,
        ExportState::Succeeded,
        ExportState::Failed,
        ExportState::Cancelled,
    ];

    /// Queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, ExportState::Queued | ExportState::Running)
    }

    /// As the API spells it (`RUNNING`), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportState::Queued => "QUEUED",
            ExportState::Running => "RUNNING",
            ExportState::Succeeded => "SUCCEEDED",
            ExportState::Failed => "FAILED",
            ExportState::Cancelled => "CANCELLED",
        }
    }
}

/// What happened to an export. A new export is born `QUEUED` (`ExportView::queued`);
/// every change after that is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A worker took it.
    Started,
    /// Its file is complete and renamed into place (also found so at start-up).
    Succeeded,
    /// The writer failed or panicked.
    Failed,
    /// A `DELETE` took effect: at once when queued, within a file when running.
    Cancelled,
    /// camjobd stopped while it ran: a shutdown, or a crash found at start-up.
    Interrupted,
}

/// A transition the export state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Illegal {
    /// The state the export was in.
    pub from: ExportState,
    /// What was attempted.
    pub trigger: Trigger,
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not allowed in state {}", self.trigger, self.from.as_str())
    }
}

/// The state after `trigger` in state `from`, or [`Illegal`].
pub fn next(from: ExportState, trigger: Trigger) -> Result<ExportState, Illegal> {
    use ExportState as S;
    use Trigger as T;
    let to = match (from, trigger) {
        (S::Queued, T::Started) => S::Running,
        (S::Queued | S::Running, T::Cancelled) => S::Cancelled,
        (S::Running, T::Succeeded) => S::Succeeded,
        // Queued exports survive a restart (they are queued again); only running ones are cut.
        (S::Running, T::Failed | T::Interrupted) => S::Failed,
        _ => return Err(Illegal { from, trigger }),
    };
    Ok(to)
}

/// An export as the API shows it and as `<id>.json` keeps it. No paths: the file is reached
/// through `download` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportView {
    /// Increasing, also across restarts.
    pub id: u64,
    /// The camera whose snapshots are exported.
    pub camera: String,
    /// `archive` or `timelapse`.
    pub kind: Kind,
    /// The range, Unix seconds: `from <= captured_at < to`.
    pub from: f64,
    /// End of the range (exclusive).
    pub to: f64,
    /// Timelapse playback rate.
    pub fps: Option<u32>,
    /// Timelapse frame cap.
    pub max_frames: Option<u32>,
    /// The state.
    pub state: ExportState,
    /// What it is doing, for people.
    pub step: String,
    /// 0–100; never decreases; 100 exactly when `SUCCEEDED`.
    pub percent: u8,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was queued, started and ended (Unix seconds).
    pub created_at: f64,
    /// When a worker took it.
    pub started_at: Option<f64>,
    /// When it reached a final state.
    pub ended_at: Option<f64>,
    /// Snapshots in the range when it started.
    pub snapshots: u64,
    /// Snapshots written so far (timelapse: frames).
    pub done: u64,
    /// Bytes written so far; the file size once `SUCCEEDED`.
    pub bytes: u64,
    /// The file name offered to the browser.
    pub filename: String,
    /// `GET` this for the file, once `SUCCEEDED`.
    pub download: Option<String>,
}

/// What a new export is, once its request was checked.
pub(super) struct Spec {
    pub camera: String,
    pub kind: Kind,
    pub from: f64,
    pub to: f64,
    pub fps: Option<u32>,
    pub max_frames: Option<u32>,
    /// Snapshots in the range when it was asked for.
    pub snapshots: u64,
}

impl ExportView {
    /// A new export, `QUEUED` behind `ahead` others: the only state a record starts in.
    pub(super) fn queued(id: u64, spec: Spec, ahead: usize, now: f64) -> ExportView {
        ExportView {
            id,
            filename: super::request::download_name(&spec.camera, spec.kind, spec.from, id),
            camera: spec.camera,
            kind: spec.kind,
            from: spec.from,
            to: spec.to,
            fps: spec.fps,
            max_frames: spec.max_frames,
            state: ExportState::Queued,
            step: format!("queued ({ahead} ahead)"),
            percent: 0,
            error: None,
            created_at: now,
            started_at: None,
            ended_at: None,
            snapshots: spec.snapshots,
            done: 0,
            bytes: 0,
            download: None,
        }
    }

    /// A worker took it. False (and nothing changed) if that is not allowed.
    pub(super) fn start(&mut self, now: f64) -> bool {
        self.advance(Trigger::Started) && {
            self.step = "selecting snapshots".into();
            self.started_at = Some(now);
            true
        }
    }

    /// Its file of `size` bytes is complete. False (and nothing changed) if not allowed.
    pub(super) fn succeed(&mut self, size: u64, now: f64) -> bool {
        self.advance(Trigger::Succeeded) && {
            self.step = "done".into();
            self.percent = 100;
            self.bytes = size;
            self.ended_at = Some(now);
            self.error = None;
            self.download = Some(format!("/api/exports/{}/file", self.id));
            true
        }
    }

    /// Ends it without a file (`Failed`, `Cancelled`, `Interrupted`), saying `step` and
    /// `error`. False (and nothing changed) if not allowed.
    pub(super) fn end(&mut self, trigger: Trigger, step: &str, error: Option<String>, now: f64) -> bool {
        debug_assert!(!matches!(trigger, Trigger::Started | Trigger::Succeeded), "{trigger:?} does not end an export");
        self.advance(trigger) && {
            self.step = step.into();
            if error.is_some() {
                self.error = error;
            }
            self.ended_at = Some(now);
            true
        }
    }

    /// The one place the state changes. An illegal transition is a bug: logged (and, in
    /// debug builds, a panic), the record left as it was.
    fn advance(&mut self, trigger: Trigger) -> bool {
        match next(self.state, trigger) {
            Ok(to) => {
                self.state = to;
                true
            }
            Err(e) => {
                log::error!("export {}: {e}; this is a bug, the state stays {}", self.id, self.state.as_str());
                if cfg!(debug_assertions) {
                    panic!("export {}: {e}", self.id);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIGGERS: [Trigger; 5] =
        [Trigger::Started, Trigger::Succeeded, Trigger::Failed, Trigger::Cancelled, Trigger::Interrupted];

    #[test]
    fn every_allowed_transition() {
        use ExportState as S;
        use Trigger as T;
        let allowed = [
            (S::Queued, T::Started, S::Running),
            (S::Queued, T::Cancelled, S::Cancelled),
            (S::Running, T::Succeeded, S::Succeeded),
            (S::Running, T::Failed, S::Failed),
            (S::Running, T::Cancelled, S::Cancelled),
            (S::Running, T::Interrupted, S::Failed),
        ];
        for (from, t, to) in allowed {
            assert_eq!(next(from, t), Ok(to), "{from:?} --{t:?}-->");
        }
        // Everything else is refused; finished exports never move again.
        let mut refused = 0;
        for from in ExportState::ALL {
            for t in TRIGGERS {
                if !allowed.iter().any(|(f, tt, _)| *f == from && *tt == t) {
                    assert_eq!(next(from, t), Err(Illegal { from, trigger: t }));
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, ExportState::ALL.len() * TRIGGERS.len() - allowed.len());
    }

    #[test]
    fn illegal_transitions_read_well() {
        assert_eq!(
            next(ExportState::Succeeded, Trigger::Started).unwrap_err().to_string(),
            "Started is not allowed in state SUCCEEDED"
        );
        assert!(next(ExportState::Queued, Trigger::Interrupted).is_err(), "queued exports are queued again");
    }

    #[test]
    fn states_are_spelled_as_the_api_spells_them() {
        for s in ExportState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
        }
        for k in [Kind::Archive, Kind::Timelapse] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str(), "{k:?}");
        }
    }
}
