//! The capture thread's part in camera controls: the values the user chose set at every open,
//! and changes applied between frames, each answered once the camera shows it took them.

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::{Duration, Instant};

use super::CaptureLoop;
use crate::clock;
use crate::status::controls::Outcome;

/// Longest a control change that restarted the camera waits for a frame before it counts as
/// taken (rpicam-vid starts in about a second on a Pi; the HTTP request waits 5 s).
const SETTLE: Duration = Duration::from_secs(4);

/// A control change whose restarted camera has not delivered yet.
pub(super) struct Settling {
    reply: tokio::sync::oneshot::Sender<Outcome>,
    keep: Vec<(String, i64)>,
    /// `frames_captured` when the camera restarted.
    frames_at: u64,
    until: Instant,
}

impl CaptureLoop {
    /// After an open: sets the values the user chose (a camera forgets them when it is
    /// unplugged or the job restarts) and publishes the camera's controls.
    pub(super) fn reapply_controls(&mut self) {
        let Some(source) = self.source.as_mut() else { return };
        let hub = &self.cam.controls;
        let saved = hub.saved();
        if !saved.values.is_empty() {
            let (fit, skipped) = saved.resolve(&source.controls());
            if !skipped.is_empty() {
                log::warn!(
                    "camera {}: saved control values that this camera does not take are left alone: {}",
                    self.cam.name,
                    skipped.join(", ")
                );
            }
            // One at a time: a value the camera refuses now costs only itself.
            for change in fit {
                if let Err(e) = source.set_controls(&[change]) {
                    hub.counters.failed.fetch_add(1, Relaxed);
                    log::warn!("camera {}: a saved control value was refused: {e}", self.cam.name);
                }
            }
        }
        hub.publish(Some(source.controls()), true);
        self.controls_open = true;
    }

    /// Applies a waiting control change between frames, and publishes the camera's closing.
    pub(super) fn serve_controls(&mut self) {
        if self.controls_open && self.source.is_none() {
            self.cam.controls.publish(None, false);
            self.controls_open = false;
        }
        if self.settle_controls() {
            return;
        }
        let hub = &self.cam.controls;
        let Some(req) = hub.take() else { return };
        let Some(source) = self.source.as_mut() else {
            hub.keep(req.keep);
            let _ = req.reply.send(Outcome::Deferred);
            return;
        };
        let applied = source.set_controls(&req.changes);
        hub.publish(Some(source.controls()), true);
        match applied {
            Ok(crate::capture::Applied::Live) => {
                hub.keep(req.keep);
                let _ = req.reply.send(Outcome::Applied);
            }
            Ok(crate::capture::Applied::Restarted) => {
                hub.counters.restarts.fetch_add(1, Relaxed);
                // The restart's gap is not a stall: the stall clock starts again now.
                self.cam.heartbeat.progress_ms.store(clock::mono_ms(), Release);
                let frames_at = self.cam.heartbeat.frames_captured.load(Relaxed);
                let until = Instant::now() + SETTLE;
                self.settling = Some(Settling { reply: req.reply, keep: req.keep, frames_at, until });
            }
            Err(e) => {
                hub.counters.failed.fetch_add(1, Relaxed);
                let _ = req.reply.send(Outcome::Failed(e));
            }
        }
    }

    /// A change that restarted the camera is answered once a frame came (or [`SETTLE`]
    /// passed); one the restarted camera refused is answered as refused, the previous values
    /// back in place, and not kept. True while it is still unsettled (the next change waits).
    fn settle_controls(&mut self) -> bool {
        let Some(s) = &self.settling else { return false };
        let hub = &self.cam.controls;
        let refused = self.source.as_mut().and_then(|src| src.take_reverted().map(|why| (why, src.controls())));
        let framed = self.cam.heartbeat.frames_captured.load(Relaxed) > s.frames_at;
        if refused.is_none() && !framed && self.source.is_some() && Instant::now() < s.until {
            return true;
        }
        let s = self.settling.take().expect("checked above");
        match refused {
            Some((why, list)) => {
                hub.counters.failed.fetch_add(1, Relaxed);
                hub.publish(Some(list), true);
                let _ = s.reply.send(Outcome::Failed(format!(
                    "the camera did not start with the new values ({why}); the previous values are back"
                )));
            }
            None => {
                hub.keep(s.keep);
                let _ = s.reply.send(Outcome::Applied);
            }
        }
        false
    }
}
