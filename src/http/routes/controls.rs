//! `GET` and `PUT /api/cameras/{name}/controls`: the camera's controls, and new values for some.
//!
//! A change is checked against the list the camera gave at its last open (400 naming the
//! control and its range), limited to [`crate::status::controls::RATE`] a second (503), then
//! handed to the capture thread, which applies it between frames; the answer is the list as
//! the camera reports it afterwards. What the camera took (or, closed, will take at its next
//! open) is kept, and the store thread writes it to the camera's directory; a refusal keeps
//! nothing.

use std::time::{Duration, Instant};

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::super::error::{ApiError, Code};
use super::super::reply::{json, Request, Response, WithHeader};
use super::Api;
use crate::controls::{Control, Kind};
use crate::status::controls::{Outcome, Refused, Rejected};
use crate::status::CameraShared;

/// Longest a change waits for the capture thread: a libcamera change restarts rpicam-vid.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl Api {
    /// `/api/cameras/{name}/controls`.
    pub(super) async fn controls(&self, req: &Request, index: usize) -> Response {
        let cam = &self.shared.cameras[index];
        if req.method() != Method::PUT {
            return json(StatusCode::OK, &view(cam, None));
        }
        match self.change(req.body(), index).await {
            Ok(outcome) => json(StatusCode::OK, &view(cam, Some(outcome))),
            Err(e) => e,
        }
    }

    /// Checks, limits, saves and applies a `PUT`'s body.
    async fn change(&self, body: &[u8], index: usize) -> Result<Outcome, Response> {
        let cam = &self.shared.cameras[index];
        let body: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(Code::BadJson, format!("controls body: {e}; expected {{\"<control name>\": value, ...}}"))
        })?;
        let rx = cam.controls.change(&body, Instant::now()).map_err(|r| rejected(cam, r))?;
        match tokio::time::timeout(APPLY_TIMEOUT, rx).await {
            Ok(Ok(Outcome::Failed(why))) => Err(ApiError::new(Code::BadValue, why).into()),
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(ApiError::new(Code::ShuttingDown, "the service is shutting down").into()),
            Err(_) => Err(Response::from(ApiError::new(
                Code::Busy,
                format!(
                    "camera {} did not take the change within 5 s; it may still apply: check GET before retrying",
                    cam.name
                ),
            ))
            .with(RETRY_AFTER, HeaderValue::from_static("1"))),
        }
    }
}

/// `{"camera", "open", "applied", "controls": [...]}`. While the camera is closed, a control
/// shows the value it will get at the next open.
fn view(cam: &CameraShared, outcome: Option<Outcome>) -> Value {
    let (list, open) = cam.controls.list();
    let saved = cam.controls.saved();
    let shown = |c: &Control| {
        let mut c = c.clone();
        if !open && c.kind != Kind::Button {
            c.value = saved.values.get(&c.name).copied().or(c.value);
        }
        c.to_json()
    };
    let mut v = json!({
        "camera": cam.name,
        "open": open,
        "controls": list.iter().map(shown).collect::<Vec<_>>(),
    });
    if let Some(o) = outcome {
        v["applied"] = json!(o == Outcome::Applied);
    }
    v
}

/// A refused change as the API's error.
fn rejected(cam: &CameraShared, r: Rejected) -> Response {
    let name = &cam.name;
    match r {
        Rejected::NoList { opened: false } => ApiError::new(
            Code::Conflict,
            format!("camera {name} has not been opened yet, so its controls are not known: start a job (POST /api/cameras/{name}/start), then set them"),
        )
        .into(),
        Rejected::NoList { opened: true } => {
            ApiError::new(Code::Conflict, format!("camera {name} offers no controls (its source has none)")).into()
        }
        Rejected::Invalid(why) => ApiError::new(Code::BadValue, why.to_string()).into(),
        Rejected::Busy(b) => {
            let why = match b {
                Refused::Rate => format!(
                    "camera {name} takes at most {} control changes a second; try again",
                    crate::status::controls::RATE
                ),
                Refused::Full => format!("camera {name} has control changes waiting; try again"),
            };
            Response::from(ApiError::new(Code::Busy, why)).with(RETRY_AFTER, HeaderValue::from_static("1"))
        }
    }
}
