//! Live views: the API's MJPEG stream and the URLs people paste into OctoPrint, Mainsail,
//! Fluidd, Home Assistant and go2rtc as ustreamer and mjpg-streamer serve them (`/stream`,
//! `/snapshot`, `/?action=stream`, `/?action=snapshot`: the first camera, `camera=NAME` picks
//! another; unknown parameters and bare cache-busters are ignored).

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, CACHE_CONTROL, PRAGMA, RETRY_AFTER};
use http::{Method, StatusCode};

use super::query::lenient;
use super::Api;
use crate::http::error::{ApiError, Code};
use crate::http::reply::{names, with_body, Body, Request, Response, WithHeader};
use crate::http::server::{bump, Peer};
use crate::http::stream::{FrameBytes, MjpegBody, StreamSlot, CONTENT_TYPE};
use crate::lifecycle::JobState;

/// How long `next=1` waits for a fresh frame.
const NEXT_FRAME_WAIT: Duration = Duration::from_secs(2);
/// A `/snapshot` frame older than this is refreshed first (Moonraker's test allows 1 s in all)...
const STALE: Duration = Duration::from_secs(1);
/// ... waiting at most this for the next one, else the older frame is sent.
const STALE_WAIT: Duration = Duration::from_millis(700);

impl Api {
    /// `/stream`, `/?action=stream`: the stream of `camera=NAME` or the first camera.
    pub(super) fn paste_stream(&self, req: &Request) -> Response {
        let query = req.uri().query().unwrap_or("");
        let index = match self.pasted_camera(query) {
            Ok(i) => i,
            Err(e) => return e.into(),
        };
        let fps = lenient(query, "fps").and_then(|v| v.parse::<u32>().ok()).filter(|&f| f > 0);
        self.stream(req, index, fps)
    }

    /// The camera a pasted URL names (`camera=NAME`), or the first one.
    fn pasted_camera(&self, query: &str) -> Result<usize, ApiError> {
        match lenient(query, "camera") {
            None | Some("") => Ok(0),
            Some(name) => self.shared.camera_index(name).ok_or_else(|| super::no_camera(name)),
        }
    }

    /// An MJPEG stream of camera `index`, at most `fps` frames a second.
    pub(super) fn stream(&self, req: &Request, index: usize, fps: Option<u32>) -> Response {
        let cam = &self.shared.cameras[index];
        let head = |body| {
            with_body(StatusCode::OK, CONTENT_TYPE, body)
                .with(CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache, must-revalidate"))
                .with(PRAGMA, HeaderValue::from_static("no-cache"))
                .with(names::X_ACCEL_BUFFERING, HeaderValue::from_static("no"))
        };
        if req.method() == Method::HEAD {
            return head(Body::empty());
        }
        let http = &self.shared.config.http;
        let busy = || {
            bump(&self.http_stats.streams_rejected);
            let max = http.max_stream_clients;
            Response::from(ApiError::new(
                Code::Busy,
                format!("{max} stream clients already (http.max_stream_clients); try again"),
            ))
            .with(RETRY_AFTER, HeaderValue::from_static("5"))
        };
        let Some(slot) = StreamSlot::take(&self.http_stats, http.max_stream_clients) else {
            return busy();
        };
        let interval = fps.map_or(Duration::ZERO, |f| Duration::from_secs_f64(1.0 / f64::from(f)));
        let Some(watcher) = cam.live.join(interval) else { return busy() };
        let body = MjpegBody::new(
            Arc::clone(cam),
            Arc::clone(&self.placeholders[index]),
            Arc::clone(&self.http_stats),
            watcher,
            slot,
            interval,
        )
        .paced_by(req.extensions().get::<Peer>().copied(), Duration::from_millis(http.write_timeout_ms));
        head(Body::stream(body))
    }

    /// `/snapshot`, `/?action=snapshot`: the newest frame of `camera=NAME` or the first
    /// camera; with `next=1`, the next one captured (waiting up to 2 s). While the camera is not
    /// delivering, a placeholder naming the state with status 503.
    pub(super) async fn paste_snapshot(&self, req: &Request) -> Response {
        let query = req.uri().query().unwrap_or("");
        let index = match self.pasted_camera(query) {
            Ok(i) => i,
            Err(e) => return e.into(),
        };
        let cam = &self.shared.cameras[index];
        let next = matches!(lenient(query, "next"), Some("1" | "true" | "yes"));
        let running = cam.state() == JobState::Running;
        // Without `next`, the newest frame unless it is older than STALE (a long snapshot
        // interval and no stream client): then the next one, waited for within 1 s.
        let age = cam.live.newest_age();
        let wait = if next {
            Some(NEXT_FRAME_WAIT)
        } else if age.is_none_or(|a| a > STALE) {
            Some(STALE_WAIT)
        } else {
            None
        };
        if let (true, Some(wait)) = (running, wait) {
            let _waiting = cam.live.wait_next();
            let mut rx = cam.live.subscribe();
            let seen = *rx.borrow_and_update();
            let fresh = tokio::time::timeout(wait, async {
                while rx.changed().await.is_ok() {
                    if *rx.borrow_and_update() != seen {
                        return true;
                    }
                }
                false
            })
            .await;
            if next && fresh != Ok(true) {
                return Response::from(ApiError::new(
                    Code::NoFrame,
                    format!("camera {} delivered no frame within 2 s", cam.name),
                ))
                .with(RETRY_AFTER, HeaderValue::from_static("1"));
            }
        }
        let no_store = HeaderValue::from_static("no-store");
        match cam.live.newest() {
            Some(frame) if running => {
                let at = format!("{:.6}", frame.captured_at);
                with_body(StatusCode::OK, "image/jpeg", Body::shared(FrameBytes(frame)))
                    .with(CACHE_CONTROL, no_store)
                    .with_text(names::X_TIMESTAMP, at)
            }
            _ => {
                let jpeg = self.placeholders[index].for_camera(cam);
                with_body(StatusCode::SERVICE_UNAVAILABLE, "image/jpeg", Body::full(jpeg))
                    .with(CACHE_CONTROL, no_store)
                    .with(RETRY_AFTER, HeaderValue::from_static("2"))
                    .with(names::X_CAMJOBD_STATE, HeaderValue::from_static(cam.state().as_str()))
            }
        }
    }
}
