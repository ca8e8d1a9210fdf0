//! The routes of the HTTP API (the README's contract). Handlers only read published state and
//! send commands on the supervisor's bounded channel; no request ever triggers a capture (a
//! stream client or `next=1` only asks capture to publish the frames it reads anyway).
//!
//! Besides the API, the URLs people paste into OctoPrint, Mainsail, Fluidd, Home Assistant
//! and go2rtc, as ustreamer and mjpg-streamer serve them: `/stream`, `/snapshot`,
//! `/?action=stream`, `/?action=snapshot` (first camera; `camera=NAME` picks another).
//!
//! Beside it: `auth` (who may do what), `query` (query strings, strict and lenient) and
//! `snapshots` (`latest.jpg`, stored snapshots, `ETag`s).

mod auth;
mod query;
mod snapshots;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::error::{ApiError, Code};
use super::server::{bump, Answer, Body, Handler, Request, Response, Stats};
use super::stream::{MjpegBody, Placeholder, StreamSlot};
use crate::events::{Event, MAX_PAGE};
use crate::export::{self, Deleted, Exports};
use crate::lifecycle::JobState;
use crate::shutdown::Stop;
use crate::status::{Command, JobLimits, Reply, Shared};
use auth::{authorized, basic_authorized, cookie_authorized, host_allowed, same_origin, OwnNames};
use query::{lenient, limit_param, params, seq_param, stream_fps};
use snapshots::{latest_jpg, snapshot_jpg, snapshots};

/// The dashboard page, one self-contained file.
const DASHBOARD: &str = include_str!("dashboard.html");
/// Default page size of `GET /api/events`.
const EVENTS_DEFAULT_LIMIT: usize = 100;
/// How long a start or stop waits for the supervisor before answering 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `next=1` waits for a fresh frame.
const NEXT_FRAME_WAIT: Duration = Duration::from_secs(2);
/// A `/snapshot` frame older than this is refreshed first (Moonraker's test allows 1 s in all)...
const STALE: Duration = Duration::from_secs(1);
/// ... waiting at most this for the next one, else the older frame is sent.
const STALE_WAIT: Duration = Duration::from_millis(700);

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
    /// The stop token: `/healthz` reports a failure recorded in it.
    stop: Stop,
    /// Names a request's `Host` may carry (DNS rebinding is refused).
    own_names: OwnNames,
    /// Reads check `Host` too: no token, and listening beyond loopback.
    reads_check_host: bool,
    /// What the config costs and the limits it was checked against, for `/api/status`
    /// (rendered once: it never changes).
    budget: Box<serde_json::value::RawValue>,
}

/// `GET /api/status`, serialized straight from its parts.
#[derive(serde::Serialize)]
struct Status<'a> {
    version: &'static str,
    uptime_s: f64,
    now: f64,
    clock: serde_json::Value,
    cameras: Vec<crate::status::CameraView>,
    http: serde_json::Value,
    log_lines_dropped: u64,
    log_lines_suppressed: u64,
    mqtt: Option<serde_json::Value>,
    rtsp: Option<serde_json::Value>,
    budget: &'a serde_json::value::RawValue,
}

impl Api {
    /// Routes for this published state; `stop` is the service's stop token.
    pub fn new(shared: Arc<Shared>, exports: Arc<Exports>, stop: Stop) -> Api {
        let placeholders = shared.cameras.iter().map(|_| Arc::default()).collect();
        let own_names = OwnNames::new(&shared.config);
        let reads_check_host = shared.config.http.token.is_none() && !shared.config.bind_addr().ip().is_loopback();
        let budget = json!({
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
            stop,
            own_names,
            reads_check_host,
            budget,
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
        Response { status: 200, content_type: "text/plain", headers: Vec::new(), body: Body::Static(b"ok\n") }
    }

    /// Reports the MQTT link's counters in `/api/status` and `/metrics`.
    pub fn with_mqtt(mut self, stats: Arc<crate::mqtt::Stats>) -> Api {
        self.mqtt = Some(stats);
        self
    }

    /// The counters the server must count in (hand them to `Server::start`).
    pub fn http_stats(&self) -> Arc<Stats> {
        Arc::clone(&self.http_stats)
    }

    /// The RTSP server's counters and where it listens, when a camera has `video`.
    fn rtsp_status(&self) -> Option<serde_json::Value> {
        self.shared.config.rtsp.bind_addr()?;
        self.shared.cameras.iter().any(|c| c.video.is_some()).then(|| self.shared.rtsp.to_json())
    }

    fn status(&self) -> Response {
        let body = Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs_f64(),
            now: crate::clock::unix_now(),
            clock: clock_view(&self.shared.clock),
            cameras: self.shared.cameras.iter().map(|c| c.view()).collect(),
            http: self.http_stats.to_json(),
            log_lines_dropped: crate::logging::lines_dropped(),
            log_lines_suppressed: crate::logging::SUPPRESSED.load(std::sync::atomic::Ordering::Relaxed),
            mqtt: self.mqtt.as_ref().map(|m| m.to_json()),
            rtsp: self.rtsp_status(),
            budget: &self.budget,
        };
        Response::json_bytes(200, serde_json::to_vec(&body).expect("plain data"))
    }

    async fn camera(&self, req: &Request<'_>, name: &str, action: &str) -> Response {
        let Some(index) = self.shared.camera_index(name) else {
            return Response::from(ApiError::new(
                Code::NotFound,
                format!("no camera named {name:?}; GET /api/status lists them"),
            ));
        };
        let cam = &self.shared.cameras[index];
        let get = matches!(req.method, "GET" | "HEAD");
        match action {
            "" if get => Response::json(200, &serde_json::to_value(cam.view()).expect("plain data")),
            "latest.jpg" if get => latest_jpg(req, cam),
            "stream.mjpeg" if get => match stream_fps(req.query) {
                Ok(fps) => self.stream(req, index, fps),
                Err(e) => e,
            },
            "snapshots" if get => snapshots(req.query, cam).unwrap_or_else(|e| e),
            a if get && a.starts_with("snapshots/") => snapshot_jpg(req, cam, &self.shared, &a["snapshots/".len()..]),
            "start" if req.method == "POST" => match parse_limits(req.body) {
                Ok(limits) => self.command(|reply| Command::Start { camera: index, limits, reply }).await,
                Err(e) => e,
            },
            "stop" if req.method == "POST" => self.command(|reply| Command::Stop { camera: index, reply }).await,
            "" | "latest.jpg" | "snapshots" | "stream.mjpeg" => method_not_allowed("GET, HEAD"),
            a if a.starts_with("snapshots/") => method_not_allowed("GET, HEAD"),
            "start" | "stop" => method_not_allowed("POST"),
            _ => not_found(req.path),
        }
    }

    /// Sends a command and waits (bounded) for the supervisor's answer.
    async fn command(&self, make: impl FnOnce(oneshot::Sender<Reply>) -> Command) -> Response {
        let (tx, rx) = oneshot::channel();
        match self.shared.commands.try_send(make(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Response::from(ApiError::new(Code::Busy, "the job supervisor is busy; try again"))
                    .with_header("Retry-After", "1".into())
            }
            Err(TrySendError::Disconnected(_)) => {
                return Response::from(ApiError::new(Code::ShuttingDown, "the service is shutting down"))
            }
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(job))) => Response::json(202, &serde_json::to_value(job).expect("plain data")),
            Ok(Ok(Err(refusal))) => ApiError::from(refusal).into(),
            Ok(Err(_)) => Response::from(ApiError::new(Code::ShuttingDown, "the service is shutting down")),
            Err(_) => Response::from(ApiError::new(Code::Busy, "the job supervisor did not answer within 2 s; the command may still take effect: check GET /api/cameras/<name> before retrying")),
        }
    }

    /// `GET /api/jobs?camera=NAME&limit=N`: active jobs first, then ended ones, newest first.
    fn jobs(&self, query: &str) -> Result<Response, Response> {
        let mut camera = None;
        let mut limit = crate::status::JOB_HISTORY;
        for (k, v) in params(query, &["camera", "limit"])? {
            match k {
                "camera" if self.shared.camera_index(v).is_none() => {
                    return Err(Response::from(ApiError::new(Code::NotFound, format!("no camera named {v:?}"))))
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
        Ok(Response::json(200, &json!({ "active": active, "ended": ended })))
    }

    fn events(&self, query: &str) -> Result<Response, Response> {
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
        Ok(Response::json_bytes(200, out))
    }
}

impl Handler for Api {
    fn handle<'a>(&'a self, req: Request<'a>) -> Answer<'a> {
        Box::pin(async move { self.route(&req).await })
    }
}

/// What `/?action=...` asks for (ustreamer's and mjpg-streamer's URLs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Page,
    Stream,
    Snapshot,
}

impl Api {
    async fn route(&self, req: &Request<'_>) -> Response {
        let get = matches!(req.method, "GET" | "HEAD");
        let path = req.path;
        let action = match path {
            "/" => match lenient(req.query, "action") {
                Some("stream") => Action::Stream,
                Some("snapshot") => Action::Snapshot,
                _ => Action::Page,
            },
            "/stream" => Action::Stream,
            "/snapshot" => Action::Snapshot,
            _ => Action::Page,
        };
        if let Err(refused) = self.admit(req, action) {
            return refused;
        }
        match (action, get) {
            (Action::Stream, true) => return self.paste_stream(req),
            (Action::Snapshot, true) => return self.paste_snapshot(req).await,
            (Action::Stream | Action::Snapshot, false) => return method_not_allowed("GET, HEAD"),
            (Action::Page, _) => {}
        }
        match path {
            "/" | "/index.html" if get => Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                headers: vec![("Cache-Control", "no-cache".into())],
                body: Body::Static(DASHBOARD.as_bytes()),
            },
            "/healthz" if get => self.health(),
            "/api/status" if get => self.status(),
            "/api/events" if get => self.events(req.query).unwrap_or_else(|e| e),
            "/api/jobs" if get => self.jobs(req.query).unwrap_or_else(|e| e),
            "/metrics" if get => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: vec![("Cache-Control", "no-store".into())],
                body: Body::Bytes(
                    super::metrics::render(
                        &self.shared,
                        Some(&*self.http_stats),
                        &self.exports,
                        self.mqtt.as_deref(),
                        self.started.elapsed().as_secs_f64(),
                    )
                    .into_bytes(),
                ),
            },
            "/" | "/index.html" | "/healthz" | "/api/status" | "/api/events" | "/api/jobs" | "/metrics" => {
                method_not_allowed("GET, HEAD")
            }
            "/api/exports" if get => {
                let (active, finished) = self.exports.list();
                let (queued, running) = self.exports.depth();
                Response::json(
                    200,
                    &json!({"active": active, "finished": finished, "queued": queued, "running": running,
                            "max_queued": self.exports.max_queued()}),
                )
            }
            "/api/exports" if req.method == "POST" => match self.exports.submit(req.body) {
                Ok(v) => Response::json(202, &serde_json::to_value(v).expect("plain data")),
                Err(r) => ApiError::from(r).into(),
            },
            "/api/exports" => method_not_allowed("GET, HEAD, POST"),
            _ if path.starts_with("/api/exports/") => self.export(req, &path["/api/exports/".len()..]),
            _ => match path.strip_prefix("/api/cameras/") {
                Some(rest) => {
                    let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
                    if name.is_empty() || (action.contains('/') && !action.starts_with("snapshots/")) {
                        return not_found(path);
                    }
                    self.camera(req, name, action).await
                }
                None => not_found(path),
            },
        }
    }

    /// Who may do this: the request's `Host` names us (DNS rebinding), a write comes from our
    /// own origin, and the token rules. `Err` is the refusal to answer with.
    fn admit(&self, req: &Request<'_>, action: Action) -> Result<(), Response> {
        let get = matches!(req.method, "GET" | "HEAD");
        let path = req.path;
        let http = &self.shared.config.http;
        // The liveness probe answers any name: a monitor using a LAN name must not see a
        // healthy service as down.
        let checked = !get || (self.reads_check_host && path != "/healthz");
        if checked && !host_allowed(req, &self.own_names) {
            // DNS rebinding: a page of another site, its name now pointing at this machine,
            // sends its own name as Host. Our names are few and known.
            let host = req.header("Host").map(String::from_utf8_lossy).unwrap_or_default();
            return Err(Response::from(ApiError::new(
                Code::Host,
                format!(
                    "Host {host:?} is not a name of this camjobd (IP addresses, localhost, {}): a page of another site may be reaching it through DNS rebinding; if you use this name, add it to http.allowed_hosts",
                    self.own_names.list()
                ),
            )));
        }
        if !get && !same_origin(req) {
            // A page on another site posting here (a form, a text/plain fetch): browsers send
            // its Origin, which never names us. Scripts and curl send none.
            return Err(Response::from(ApiError::new(
                Code::CrossOrigin,
                "writes from pages of other origins are refused (the Origin header does not match Host)",
            )));
        }
        if let Some(token) = &http.token {
            // Reads are open unless `protect_reads`; the page itself and the liveness check
            // always are (the page asks for the token; systemd and load balancers probe).
            let page = action == Action::Page && matches!(path, "/" | "/index.html" | "/healthz");
            let open = get && (!http.protect_reads || page);
            // The cookie (set by the dashboard, so that <img> loads carry the token) and Basic
            // (Home Assistant's and OctoPrint's fetches) count for reads only: a write must
            // show the Bearer header, which no other site can make a browser send.
            let read_ok = get && (cookie_authorized(req, token) || basic_authorized(req, token));
            if !(open || authorized(req, token) || read_ok) {
                let what = if get {
                    "with http.protect_reads, reads need the header Authorization: Bearer <http.token> (or Basic with the token as the password)"
                } else {
                    "this request needs the header Authorization: Bearer <http.token>"
                };
                // Streams and snapshots are what other programs fetch: offer Basic to them, first
                // (wget only reads a challenge that starts with it).
                let image = action != Action::Page || path.ends_with(".jpg") || path.ends_with(".mjpeg");
                let challenge = if image { "Basic realm=\"camjobd\", Bearer" } else { "Bearer" };
                return Err(Response::from(ApiError::new(Code::Unauthorized, what))
                    .with_header("WWW-Authenticate", challenge.into()));
            }
        }
        Ok(())
    }

    /// `/stream`, `/?action=stream`: the stream of `camera=NAME` or the first camera.
    fn paste_stream(&self, req: &Request<'_>) -> Response {
        let index = match self.pasted_camera(req.query) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let fps = lenient(req.query, "fps").and_then(|v| v.parse::<u32>().ok()).filter(|&f| f > 0);
        self.stream(req, index, fps)
    }

    /// The camera a pasted URL names (`camera=NAME`), or the first one.
    fn pasted_camera(&self, query: &str) -> Result<usize, Response> {
        match lenient(query, "camera") {
            None | Some("") => Ok(0),
            Some(name) => self.shared.camera_index(name).ok_or_else(|| {
                Response::from(ApiError::new(
                    Code::NotFound,
                    format!("no camera named {name:?}; GET /api/status lists them"),
                ))
            }),
        }
    }

    /// An MJPEG stream of camera `index`, at most `fps` frames a second.
    fn stream(&self, req: &Request<'_>, index: usize, fps: Option<u32>) -> Response {
        let cam = &self.shared.cameras[index];
        let headers = vec![
            ("Cache-Control", "no-store, no-cache, must-revalidate".to_string()),
            ("Pragma", "no-cache".into()),
            ("X-Accel-Buffering", "no".into()),
        ];
        if req.method == "HEAD" {
            return Response { status: 200, content_type: super::stream::CONTENT_TYPE, headers, body: Body::Empty };
        }
        let busy = || {
            bump(&self.http_stats.streams_rejected);
            let max = self.shared.config.http.max_stream_clients;
            Response::from(ApiError::new(
                Code::Busy,
                format!("{max} stream clients already (http.max_stream_clients); try again"),
            ))
            .with_header("Retry-After", "5".into())
        };
        let Some(slot) = StreamSlot::take(&self.http_stats, self.shared.config.http.max_stream_clients) else {
            return busy();
        };
        let interval = fps.map_or(Duration::ZERO, |f| Duration::from_secs_f64(1.0 / f64::from(f)));
        let Some(watcher) = cam.live.join(interval) else { return busy() };
        let write_timeout = Duration::from_millis(self.shared.config.http.write_timeout_ms);
        let body = MjpegBody::new(
            Arc::clone(cam),
            Arc::clone(&self.placeholders[index]),
            Arc::clone(&self.http_stats),
            watcher,
            slot,
            interval,
        )
        .paced_by(req.peer, write_timeout);
        Response { status: 200, content_type: super::stream::CONTENT_TYPE, headers, body: Body::Stream(Box::pin(body)) }
    }

    /// `/snapshot`, `/?action=snapshot`: the newest frame of `camera=NAME` or the first
    /// camera; with `next=1`, the next one captured (waiting up to 2 s). While the camera is not
    /// delivering, a placeholder naming the state with status 503.
    async fn paste_snapshot(&self, req: &Request<'_>) -> Response {
        let index = match self.pasted_camera(req.query) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let cam = &self.shared.cameras[index];
        let next = matches!(lenient(req.query, "next"), Some("1" | "true" | "yes"));
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
                .with_header("Retry-After", "1".into());
            }
        }
        let headers = vec![("Cache-Control", "no-store".to_string())];
        match cam.live.newest() {
            Some(frame) if running => {
                let mut headers = headers;
                headers.push(("X-Timestamp", format!("{:.6}", frame.captured_at)));
                Response { status: 200, content_type: "image/jpeg", headers, body: Body::Shared(frame) }
            }
            _ => {
                let jpeg = self.placeholders[index].for_camera(cam);
                let mut r =
                    Response { status: 503, content_type: "image/jpeg", headers, body: Body::Bytes(jpeg.to_vec()) };
                r.headers.push(("Retry-After", "2".into()));
                r.headers.push(("X-Camjobd-State", cam.state().as_str().into()));
                r
            }
        }
    }
}

impl Api {
    /// `/api/exports/{id}` and `/api/exports/{id}/file`.
    fn export(&self, req: &Request<'_>, rest: &str) -> Response {
        let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(id) = id.parse::<u64>().ok().filter(|_| id.bytes().all(|b| b.is_ascii_digit())) else {
            return not_found(req.path);
        };
        let get = matches!(req.method, "GET" | "HEAD");
        match action {
            "" if get => match self.exports.get(id) {
                Some(v) => Response::json(200, &serde_json::to_value(v).expect("plain data")),
                None => ApiError::from(export::not_found(id)).into(),
            },
            "" if req.method == "DELETE" => match self.exports.delete(id) {
                Ok(Deleted::Cancelling(v)) => Response::json(202, &serde_json::to_value(v).expect("plain data")),
                Ok(Deleted::Cancelled(v) | Deleted::Removed(v)) => {
                    Response::json(200, &serde_json::to_value(v).expect("plain data"))
                }
                Err(r) => ApiError::from(r).into(),
            },
            "" => method_not_allowed("GET, HEAD, DELETE"),
            "file" if get => match self.exports.open_file(id) {
                Ok((file, len, v)) => {
                    let disposition = match v.kind {
                        crate::export::Kind::Archive => "attachment",
                        crate::export::Kind::Timelapse => "inline",
                    };
                    Response {
                        status: 200,
                        content_type: v.kind.content_type(),
                        headers: vec![
                            ("Content-Disposition", format!("{disposition}; filename=\"{}\"", v.filename)),
                            ("Cache-Control", "no-cache".into()),
                        ],
                        body: Body::File(Box::new(file), len),
                    }
                }
                Err(r) => ApiError::from(r).into(),
            },
            "file" => method_not_allowed("GET, HEAD"),
            _ => not_found(req.path),
        }
    }
}

fn not_found(path: &str) -> Response {
    Response::from(ApiError::new(Code::NotFound, format!("no such endpoint: {path}")))
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::from(ApiError::new(Code::MethodNotAllowed, format!("this endpoint takes {allow}")))
        .with_header("Allow", allow.into())
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
fn clock_view(c: &crate::clock::ClockState) -> serde_json::Value {
    let synchronized = crate::sys::clock_synchronized();
    let settled = synchronized == Some(true) || c.jumps() > 0;
    json!({
        "synchronized": synchronized,
        "jumps": c.jumps(),
        "last_jump": c.last().map(|(by_s, at)| json!({"by_s": by_s, "at": at, "by": crate::clock::describe(by_s)})),
        "settled": settled,
        "note": (!settled).then_some(
            "the kernel says the wall clock is not synchronised (no NTP yet, or no network) and no jump has been seen: snapshot dates may jump when it syncs; camjobd dates them anew"
        ),
    })
}

/// The optional body of a start: `{"max_frames", "max_duration_s"}`, in the config's ranges.
fn parse_limits(body: &[u8]) -> Result<JobLimits, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(JobLimits::default());
    }
    let b: StartBody = serde_json::from_slice(body).map_err(|e| {
        Response::from(ApiError::new(
            Code::BadJson,
            format!("start body: {e}; expected {{\"max_frames\": N, \"max_duration_s\": N}}"),
        ))
    })?;
    JobLimits::checked(b.max_frames, b.max_duration_s).map_err(|e| Response::from(ApiError::new(Code::BadValue, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_bodies() {
        assert_eq!(parse_limits(b"").ok(), Some(JobLimits::default()));
        assert_eq!(
            parse_limits(b"{\"max_frames\":3}").ok(),
            Some(JobLimits { max_frames: Some(3), max_duration_s: None })
        );
        assert_eq!(parse_limits(b"{\"max_frames\":0}").err().map(|r| r.status), Some(400));
        assert_eq!(parse_limits(b"{\"max_frames\":18446744073709551615}").err().map(|r| r.status), Some(400));
        assert_eq!(parse_limits(b"{\"max_duration_s\":315360001}").err().map(|r| r.status), Some(400));
        assert!(parse_limits(b"{\"max_duration_s\":315360000}").is_ok());
        assert_eq!(parse_limits(b"{\"frames\":3}").err().map(|r| r.status), Some(400));
        assert_eq!(parse_limits(b"{oops").err().map(|r| r.status), Some(400));
    }
}
