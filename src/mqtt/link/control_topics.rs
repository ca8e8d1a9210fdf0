//! The link's part in camera controls: each camera's control entities and `controls` state
//! once its list is known, changes from `<camera>/controls/set`, and the camera's refusals.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use rumqttc::Publish;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{controls, Kind, Message, Publisher, REFUSED_LOG, UNKNOWN_LOG};
use crate::status::controls::{Outcome, Rejected};

impl Publisher {
    /// A camera's control entities when its list is new to this connection, and its
    /// `controls` state whenever the camera published new values.
    pub(super) fn queue_controls(&mut self, i: usize) {
        let cam = Arc::clone(&self.inputs.cameras[i]);
        let generation = cam.controls.generation();
        if generation == self.cams[i].controls_gen {
            return;
        }
        self.cams[i].controls_gen = generation;
        let (list, _) = cam.controls.list();
        if list.is_empty() {
            return;
        }
        let names: Vec<String> = list.iter().map(|c| c.name.clone()).collect();
        if names != self.cams[i].controls_announced {
            for d in controls::configs(&self.names, &cam.name, cam.config.source.kind_name(), &list) {
                self.ours.insert(d.topic.clone());
                self.announcement.push_back(Message {
                    topic: d.topic,
                    payload: d.payload.to_string().into(),
                    kind: Kind::Discovery,
                });
            }
            self.cams[i].controls_announced = names;
            self.feed_announcement();
        }
        let state = controls::state(&list);
        if state != self.cams[i].controls_state {
            self.cams[i].controls_state.clone_from(&state);
            self.push(self.names.camera(&cam.name, "controls"), state, Kind::State);
        }
    }

    /// `<camera>/controls/set`: what `PUT /api/cameras/<camera>/controls` takes; refusals are
    /// answered on `<camera>/controls/set/result`, the camera's new values on `controls`.
    pub(super) fn control_set(&mut self, camera: &str, m: &Publish) {
        let Some(index) = self.inputs.camera_index(camera) else {
            self.stats.commands_refused.fetch_add(1, Relaxed);
            UNKNOWN_LOG.warn(format_args!("mqtt: control change for unknown camera {camera:?} ignored"));
            return;
        };
        let cam = Arc::clone(&self.inputs.cameras[index]);
        let body = serde_json::from_slice::<Value>(&m.payload).map_err(|e| format!("not JSON: {e}"));
        let asked = body.and_then(|b| {
            if m.retain {
                return Err("retained changes are ignored: publish without the retain flag".into());
            }
            cam.controls.change(&b, Instant::now()).map_err(|r| match r {
                Rejected::NoList { .. } => "the camera's controls are not known yet (start its job)".to_string(),
                Rejected::Invalid(why) => why.to_string(),
                Rejected::Busy(_) => "too many control changes a second, or changes waiting; try again".into(),
            })
        });
        match asked {
            // At most QUEUE per camera can be waiting: the hub refuses more.
            Ok(reply) => self.controls_pending.push((m.topic.clone(), reply)),
            Err(message) => self.refuse_control(&m.topic, &message),
        }
    }

    fn refuse_control(&mut self, topic: &str, message: &str) {
        self.stats.commands_refused.fetch_add(1, Relaxed);
        REFUSED_LOG.warn(format_args!("mqtt: control change on {topic} refused: {message}"));
        let body = serde_json::json!({"ok": false, "error": "bad_control", "message": message});
        self.push(format!("{topic}/result"), body.to_string(), Kind::CommandResult);
    }

    /// The camera's refusals of changes it was handed (what it took shows on `controls`).
    pub(super) fn answer_controls(&mut self) {
        let mut i = 0;
        while i < self.controls_pending.len() {
            match self.controls_pending[i].1.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => i += 1,
                done => {
                    let (topic, _) = self.controls_pending.swap_remove(i);
                    if let Ok(Outcome::Failed(why)) = done {
                        self.refuse_control(&topic, &why);
                    }
                }
            }
        }
    }
}
