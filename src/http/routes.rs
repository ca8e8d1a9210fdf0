//! The routes of the HTTP API (the README's contract): the route [`table`] names every path
//! once with its methods, the [`auth`] layers admit a request, then its handler answers.
//! Handlers only read published state and send commands on the supervisor's bounded channel;
//! no request ever triggers a capture (a stream client or `next=1` only asks capture to
//! publish the frames it reads anyway).
//!
//! Beside it: `paste` (the live stream and the URLs people paste, as ustreamer and
//! mjpg-streamer serve them), `exports`, `snapshots` (`latest.jpg`, stored snapshots,
//! `ETag`s) and `query` (query strings, strict and lenient).

mod auth;
mod controls;
mod exports;
mod history;
mod paste;
mod query;
mod snapshots;
mod table;
mod whep;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, RETRY_AFTER};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::error::{ApiError, Code};
use super::reply::{json, json_bytes, with_body, Body, Request, Response, WithHeader};
use super::server::{Answer, Handler};
use super::stats::{Counts, Stats};
use super::stream::Placeholder;
use crate::events::{Event, MAX_PAGE};
use crate::export::Exports;
use crate::shutdown::Stop;
use crate::status::{Command, JobLimits, Reply, Shared};
use auth::{Guard, Target};
use query::{lenient, limit_param, params, seq_param, stream_fps};
use snapshots::{latest_jpg, snapshot_jpg, snapshots};
use table::{Found, Route, Table};

/// The dashboard page, one self-contained file.
const DASHBOARD: &str = include_str!("dashboard.html");
/// Default page size of `GET /api/events`.
const EVENTS_DEFAULT_LIMIT: usize = 100;
/// How long a start or stop waits for the supervisor before answering 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The API: implements [`Handler`].
pub struct Api {
    shared: Arc<Shared>,
    exports: Arc<Exports>,
    started: Instant,
    /// The server's counters (refused connections, timeouts, streams, ...); the server is
    /// started with this same `Arc`.
    http_stats: Arc<Stats>,
    /// Per camera (config order): the "no live video" frame.
    placeholders: Vec<Arc<Placeholder>>,
    /// The MQTT link's counters, when `mqtt` is configured.
    mqtt: Option<Arc<crate::mqtt::Stats>>,
    /// The WebRTC thread, when it runs.
    webrtc: Option<crate::webrtc::Handle>,
    /// The stop token: `/healthz` reports a failure recorded in it.
    stop: Stop,
    /// Every path and its methods.
    table: Table,
    /// The host, origin and token layers.
    guard: Guard,
    /// What the config costs and the limits it was checked against, for `/api/status`
    /// (rendered once: it never changes).
    budget: Box<serde_json::value::RawValue>,
}

/// `GET /api/status`, serialized straight from its parts.
#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    uptime_s: f64,
    now: f64,
    clock: ClockView,
    cameras: Vec<crate::status::CameraView>,
    http: Counts,
    log_lines_dropped: u64,
    log_lines_suppressed: u64,
    mqtt: Option<serde_json::Value>,
    rtsp: Option<serde_json::Value>,
    webrtc: Option<serde_json::Value>,
    moonraker: Option<serde_json::Value>,
    budget: &'a serde_json::value::RawValue,
    startup: &'a crate::status::Startup,
}

/// What `/` is asked for: the dashboard, or what ustreamer's and mjpg-streamer's
/// `/?action=...` URLs name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Page,
    Stream,
    Snapshot,
}

impl Api {
    /// Routes for this published state; `stop` is the service's stop token.
    pub fn new(shared: Arc<Shared>, exports: Arc<Exports>, stop: Stop) -> Api {
        let placeholders = shared.cameras.iter().map(|_| Arc::default()).collect();
        let guard = Guard::new(&shared.config);
        let budget = serde_json::json!({
            "estimate": crate::budget::Budget::of(&shared.config),
            "limits": crate::budget::Limits::here(),
        });
        let budget = serde_json::value::to_raw_value(&budget).expect("plain data");
        Api {
            shared,
            exports,
            started: Instant::now(),
            http_stats: Arc::default(),
            placeholders,
            mqtt: None,
            webrtc: None,
            stop,
            table: Table::new(),
            guard,
            budget,
        }
    }

    /// Reports the MQTT link's counters in `/api/status` and `/metrics`.
    pub fn with_mqtt(mut self, stats: Arc<crate::mqtt::Stats>) -> Api {
        self.mqtt = Some(stats);
        self
    }

    /// Serves WHEP through the `webrtc` thread, and reports its counters.
    pub fn with_webrtc(mut self, handle: crate::webrtc::Handle) -> Api {
        self.webrtc = Some(handle);
        self
    }

    /// The counters the server must count in (hand them to `Server::start`).
    pub fn http_stats(&self) -> Arc<Stats> {
        Arc::clone(&self.http_stats)
    }

    /// Every request: the route its path names, the layers that admit it, then the route's
    /// handler; 404 for a path not in the table, 405 (with `Allow`) for a method the route
    /// does not take.
    async fn route(&self, req: &Request) -> Response {
        let path = req.uri().path();
        let found = self.table.find(path);
        let route = found.as_ref().map(|f| f.route);
        let action = match route {
            Some(Route::Root) => match lenient(req.uri().query().unwrap_or(""), "action") {
                Some("stream") => Action::Stream,
                Some("snapshot") => Action::Snapshot,
                _ => Action::Page,
            },
            Some(Route::PasteStream) => Action::Stream,
            Some(Route::PasteSnapshot) => Action::Snapshot,
            _ => Action::Page,
        };
        // WHEP's POST, PATCH and DELETE only start or end viewing: reads, for the token rules.
        let whep = matches!(route, Some(Route::Whep | Route::WhepSession));
        let read = matches!(*req.method(), Method::GET | Method::HEAD) || whep;
        let target = Target { read, path, route, pasted: action != Action::Page };
        if let Err(refused) = self.guard.admit(req, &target) {
            return *refused;
        }
        let Some(found) = found else { return not_found(path) };
        if !found.methods.allows(req.method()) {
            return method_not_allowed(found.methods.allow());
        }
        self.dispatch(req, &found, action).await
    }

    /// The handler of a route the request may use.
    async fn dispatch(&self, req: &Request, found: &Found<'_, '_>, action: Action) -> Response {
        let query = req.uri().query().unwrap_or("");
        match found.route {
            Route::Root | Route::Index | Route::PasteStream | Route::PasteSnapshot => match action {
                Action::Page => {
                    with_body(StatusCode::OK, "text/html; charset=utf-8", Body::from_static(DASHBOARD.as_bytes()))
                        .with(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
                }
                Action::Stream => self.paste_stream(req),
                Action::Snapshot => self.paste_snapshot(req).await,
            },
            Route::Health => self.health(),
            Route::Status => self.status(),
            Route::Events => self.events(query).unwrap_or_else(Response::from),
            Route::Jobs => self.jobs(query).unwrap_or_else(Response::from),
            Route::Metrics => self.metrics(),
            Route::Exports => self.exports(req),
            Route::Export => self.export(req, found.param("id")),
            Route::ExportFile => self.export_file(req, found.param("id")),
            Route::Camera
            | Route::Latest
            | Route::Stream
            | Route::Snapshots
            | Route::Snapshot
            | Route::Start
            | Route::Stop
            | Route::Whep
            | Route::WhepSession
            | Route::Controls
            | Route::History => self.camera(req, found).await,
        }
    }

    /// `/api/cameras/{name}/...`.
    async fn camera(&self, req: &Request, found: &Found<'_, '_>) -> Response {
        let name = found.param("name");
        let Some(index) = self.shared.camera_index(name) else { return no_camera(name).into() };
        let cam = &self.shared.cameras[index];
        match found.route {
            Route::Latest => latest_jpg(req, cam),
            Route::Stream => match stream_fps(req.uri().query().unwrap_or("")) {
                Ok(fps) => self.stream(req, index, fps),
                Err(e) => e.into(),
            },
            Route::Snapshots => snapshots(req.uri().query().unwrap_or(""), cam).unwrap_or_else(Response::from),
            Route::Snapshot => snapshot_jpg(req, cam, &self.shared, found.param("seq")),
            Route::Start => match parse_limits(req.body()) {
                Ok(limits) => self.command(|reply| Command::Start { camera: index, limits, reply }).await,
                Err(e) => e.into(),
            },
            Route::Stop => self.command(|reply| Command::Stop { camera: index, reply }).await,
            Route::Whep => self.whep(req, index, name).await,
            Route::WhepSession => self.whep_session(req, index, name, found.param("session")).await,
            Route::Controls => self.controls(req, index).await,
            Route::History => history::history(req.uri().query().unwrap_or(""), cam).unwrap_or_else(Response::from),
            // `Route::Camera`.
            _ => json(StatusCode::OK, &cam.view()),
        }
    }

    /// `/healthz`: 200 while every core thread is alive and going round; 503 with the reason
    /// once one broke (the process is exiting), while shutting down, or while a core loop has
    /// not gone round for [`crate::status::STALE`] (systemd's watchdog then restarts it).
    fn health(&self) -> Response {
        if let Some(f) = self.stop.failure() {
            return ApiError::new(
                Code::Unhealthy,
                format!("{f}; camjobd is exiting with status 1 (systemd restarts it)"),
            )
            .into();
        }
        if self.stop.is_set() {
            return ApiError::new(Code::ShuttingDown, "the service is shutting down").into();
        }
        let stale = crate::status::STALE;
        if let Some(stuck) = self.shared.liveness.stuck(crate::clock::mono_ms(), stale.as_millis() as u64) {
            let msg = format!("the {stuck} thread has not gone round for {} s", stale.as_secs());
            return ApiError::new(Code::Unhealthy, msg).into();
        }
        with_body(StatusCode::OK, "text/plain", Body::from_static(b"ok\n"))
    }

    /// The RTSP server's counters and where it listens, when a camera has `video`.
    fn rtsp_status(&self) -> Option<serde_json::Value> {
        self.shared.config.rtsp.bind_addr()?;
        self.shared.cameras.iter().any(|c| c.video.is_some()).then(|| self.shared.rtsp.to_json())
    }

    fn status(&self) -> Response {
        json(
            StatusCode::OK,
            &Status {
                version: env!("CARGO_PKG_VERSION"),
                uptime_s: self.started.elapsed().as_secs_f64(),
                now: crate::clock::unix_now(),
                clock: ClockView::of(&self.shared.clock),
                cameras: self.shared.cameras.iter().map(|c| c.view()).collect(),
                http: self.http_stats.counts(),
                log_lines_dropped: crate::logging::lines_dropped(),
                log_lines_suppressed: crate::logging::SUPPRESSED.load(std::sync::atomic::Ordering::Relaxed),
                mqtt: self.mqtt.as_ref().map(|m| m.to_json()),
                rtsp: self.rtsp_status(),
                webrtc: self.webrtc.as_ref().map(|w| w.stats.to_json()),
                moonraker: self.shared.moonraker.to_json(),
                budget: &self.budget,
                startup: &self.shared.startup,
            },
        )
    }

    /// `/metrics`.
    fn metrics(&self) -> Response {
        let text = super::metrics::render(
            &self.shared,
            Some(&self.http_stats.counts()),
            &self.exports,
            self.mqtt.as_deref(),
            self.started.elapsed().as_secs_f64(),
        );
        with_body(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", Body::full(text))
            .with(CACHE_CONTROL, HeaderValue::from_static("no-store"))
    }

    /// Sends a command and waits (bounded) for the supervisor's answer.
    async fn command(&self, make: impl FnOnce(oneshot::Sender<Reply>) -> Command) -> Response {
        let (tx, rx) = oneshot::channel();
        match self.shared.commands.try_send(make(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Response::from(ApiError::new(Code::Busy, "the job supervisor is busy; try again"))
                    .with(RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Response::from(ApiError::new(Code::ShuttingDown, "the service is shutting down"))
            }
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(job))) => json(StatusCode::ACCEPTED, &job),
            Ok(Ok(Err(refusal))) => ApiError::from(refusal).into(),
            Ok(Err(_)) => Response::from(ApiError::new(Code::ShuttingDown, "the service is shutting down")),
            Err(_) => Response::from(ApiError::new(Code::Busy, "the job supervisor did not answer within 2 s; the command may still take effect: check GET /api/cameras/<name> before retrying")),
        }
    }

    /// `GET /api/jobs?camera=NAME&limit=N`: active jobs first, then ended ones, newest first.
    fn jobs(&self, query: &str) -> Result<Response, ApiError> {
        let mut camera = None;
        let mut limit = crate::status::JOB_HISTORY;
        for (k, v) in params(query, &["camera", "limit"])? {
            match k {
                "camera" if self.shared.camera_index(v).is_none() => {
                    return Err(ApiError::new(Code::NotFound, format!("no camera named {v:?}")))
                }
                "camera" => camera = Some(v),
                _ => limit = limit_param(v, crate::status::JOB_HISTORY)?,
            }
        }
        let active: Vec<_> = self
            .shared
            .cameras
            .iter()
            .filter(|c| camera.is_none_or(|n| c.name == n))
            .map(|c| c.view().job)
            .filter(|j| j.state.is_active())
            .collect();
        let ended = self.shared.history.list(camera, limit);
        Ok(json(StatusCode::OK, &serde_json::json!({ "active": active, "ended": ended })))
    }

    /// `GET /api/events?after=SEQ&limit=N`: the event log from `after` on, oldest first.
    fn events(&self, query: &str) -> Result<Response, ApiError> {
        let mut after = 0u64;
        let mut limit = EVENTS_DEFAULT_LIMIT;
        for (k, v) in params(query, &["after", "limit"])? {
            match k {
                "after" => after = seq_param(k, v)?,
                _ => limit = limit_param(v, MAX_PAGE)?,
            }
        }
        // Copied out and written a few at a time: a page of 256 events at once would be a
        // 146 KiB buffer per request (a mapping of its own under camjobd's malloc settings).
        const CHUNK: usize = 16;
        let mut chunk: Vec<Event> = Vec::with_capacity(CHUNK);
        let mut out = b"{\"events\":[".to_vec();
        let (mut cursor, mut left, mut next, mut first) = (after, limit, None, true);
        while left > 0 {
            chunk.clear();
            let seen = self.shared.events.page(cursor, left.min(CHUNK), &mut chunk);
            // An empty first page says where a poller resynchronises; later ones end the page.
            if chunk.is_empty() {
                next.get_or_insert(seen);
                break;
            }
            for e in &chunk {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, e).expect("plain data");
            }
            (cursor, next, left) = (seen, Some(seen), left - chunk.len());
        }
        out.extend_from_slice(format!("],\"next\":{}}}", next.unwrap_or(after)).as_bytes());
        Ok(json_bytes(StatusCode::OK, out))
    }
}

impl Handler for Api {
    fn handle(&self, req: Request) -> Answer<'_> {
        Box::pin(async move { self.route(&req).await })
    }
}

/// 404 for a path not in the table (or a parameter that names nothing, like a bad id).
fn not_found(path: &str) -> Response {
    Response::from(ApiError::new(Code::NotFound, format!("no such endpoint: {path}")))
}

/// 404 for a camera name not in the config.
fn no_camera(name: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("no camera named {name:?}; GET /api/status lists them"))
}

/// 405, with the methods the route takes.
fn method_not_allowed(allow: String) -> Response {
    Response::from(ApiError::new(Code::MethodNotAllowed, format!("this endpoint takes {allow}")))
        .with_text(ALLOW, allow)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    max_frames: Option<u64>,
    max_duration_s: Option<u64>,
}

/// `clock` in `/api/status`: whether the wall clock can be trusted yet. A Pi without a
/// real-time clock boots with a stale time until NTP syncs; until the kernel says it is
/// synchronised or a jump was seen, `note` says so (the dashboard shows it).
#[derive(Serialize)]
struct ClockView {
    synchronized: Option<bool>,
    jumps: u64,
    last_jump: Option<Jump>,
    settled: bool,
    note: Option<&'static str>,
}

/// The last wall-clock jump.
#[derive(Serialize)]
struct Jump {
    by_s: f64,
    at: f64,
    by: String,
}

impl ClockView {
    fn of(c: &crate::clock::ClockState) -> ClockView {
        let synchronized = crate::sys::clock_synchronized();
        let settled = synchronized == Some(true) || c.jumps() > 0;
        ClockView {
            synchronized,
            jumps: c.jumps(),
            last_jump: c.last().map(|(by_s, at)| Jump { by_s, at, by: crate::clock::describe(by_s) }),
            settled,
            note: (!settled).then_some(
                "the kernel says the wall clock is not synchronised (no NTP yet, or no network) and no jump has been seen: snapshot dates may jump when it syncs; camjobd dates them anew"
            ),
        }
    }
}

/// The optional body of a start: `{"max_frames", "max_duration_s"}`, in the config's ranges.
fn parse_limits(body: &[u8]) -> Result<JobLimits, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(JobLimits::default());
    }
    let b: StartBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(Code::BadJson, format!("start body: {e}; expected {{\"max_frames\": N, \"max_duration_s\": N}}"))
    })?;
    JobLimits::checked(b.max_frames, b.max_duration_s).map_err(|e| ApiError::new(Code::BadValue, e))
}

#[cfg(test)]
mod tests;
