//! The HTTP/1.1 server: sockets, limits and the runtime. Routing lives in [`super::routes`];
//! this file turns a hyper request into a [`Request`], hands it to a [`Handler`], and turns
//! the [`Response`] back into bytes on the wire.
//!
//! It is hyper 1.x on a small tokio runtime, because the process runs unattended for months
//! on a small board and live streams are long-lived: a thread per connection (the first
//! server's design) let 36 silent sockets lock everyone out. Here connections cost memory,
//! never a thread, and every resource a client can touch is bounded ("bounded everything at the edge"):
//!
//! - **Threads are fixed:** `http` (accepts) and, with `http.workers` > 1, that many runtime
//!   workers `http-0`..; with 1, a current-thread runtime on `http` alone. No blocking pool is
//!   used, so none is ever spawned.
//! - **Connections are capped** at `http.max_connections`; at the cap an idle connection (one
//!   waiting for a request head) is evicted to make room ([`super::conns`]), and only when all
//!   are busy is one more answered 503 and closed (counted). Accept errors (EMFILE) are
//!   counted, logged at most once a minute (with the count), and survived.
//! - **Heads are bounded:** `max_header_bytes` and `max_headers` (beyond: 431, from hyper).
//!   A request head must arrive within `read_timeout_ms` (`idle_timeout_ms` if shorter) of the
//!   moment the server starts waiting for it, so a slowloris client and an idle keep-alive
//!   connection are both closed.
//! - **Bodies are bounded by what they declare:** a `Content-Length` above `max_body_bytes`
//!   is 413 before a byte is read; `Transfer-Encoding` is 411; the body must arrive within
//!   `read_timeout_ms`.
//! - **Writes are bounded:** a connection whose socket takes no byte for `write_timeout_ms`
//!   is dropped ([`Guarded`]). Each socket's send buffer is capped ([`SEND_BUFFER`]), so a
//!   client that stops reading is noticed within seconds, not after megabytes.
//! - **A panicking handler** is answered 500 and counted; the server lives on.
//!
//! Errors the server produces itself use the API's JSON error shape.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::HeaderMap;
use http_body::{Body as HttpBodyTrait, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, error, info, warn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub use super::conns::Peer;
use super::conns::{Admission, Busy, Conn, Conns, Place};
use crate::config::HttpConfig;
use crate::logging::Quiet;
use crate::shutdown::{Joined, Stop, Worker};

/// Pause after a failed accept (EMFILE): lets connections finish instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(75);
/// Accept errors and handler panics are logged once a minute, with a count.
static ACCEPT_LOG: Quiet = Quiet::new();
static PANIC_LOG: Quiet = Quiet::new();
/// A refused connection's 503 gets this long to go out before the socket is closed.
const REJECT_LINGER: Duration = Duration::from_millis(250);
/// Refusals lingering at once; more are closed at once (a flood must not hold descriptors).
pub const MAX_REJECTING: u64 = 64;
/// Send buffer asked for each connection: enough for a LAN client at full rate, small enough
/// that a client that stops reading blocks our writes (and meets the write timeout) soon.
pub const SEND_BUFFER: usize = 256 * 1024;
/// Chunk size of file downloads.
const FILE_CHUNK: usize = 64 * 1024;

/// A request as the routes see it.
pub struct Request<'a> {
    /// `GET`, `POST`, ... (`HEAD` is answered like `GET`; the server drops the body).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string without `?` (empty if none).
    pub query: &'a str,
    headers: &'a HeaderMap,
    /// The whole body (at most `max_body_bytes`).
    pub body: &'a [u8],
    /// The connection's socket, for a streamed body that paces itself by what the client took
    /// (`None` outside a real connection: the fuzz target, unit tests).
    pub peer: Option<Peer>,
}

impl<'a> Request<'a> {
    /// A request from its parts; `target` is the path with an optional `?query`.
    pub fn new(method: &'a str, target: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> Request<'a> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request { method, path, query, headers, body, peer: None }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &self.headers.len())
            .field("body", &self.body.len())
            .finish()
    }
}

/// A streamed body (the MJPEG stream): polled by hyper only when the socket can take more.
pub type StreamBody = Pin<Box<dyn HttpBodyTrait<Data = Bytes, Error = io::Error> + Send>>;

/// A response body.
pub enum Body {
    /// No body (`Content-Length: 0`).
    Empty,
    /// Bytes compiled into the binary (the dashboard).
    Static(&'static [u8]),
    /// Bytes made for this response (JSON).
    Bytes(Vec<u8>),
    /// Bytes shared with someone else, written without a copy (a frame copy, see
    /// [`crate::live`]); the reference is dropped when the write has finished.
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>),
    /// A file of this many bytes (an export download), read in chunks as the client takes
    /// them; the transfer may take as long as the client keeps taking bytes. The reader is
    /// dropped when the transfer ends.
    File(Box<dyn std::io::Read + Send>, u64),
    /// A body of unknown length, sent chunked as it is produced.
    Stream(StreamBody),
}

impl Body {
    /// Length in bytes, when known.
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Static(b) => Some(b.len() as u64),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Shared(b) => Some((**b).as_ref().len() as u64),
            Body::File(_, n) => Some(*n),
            Body::Stream(_) => None,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Body::Empty => "Empty",
            Body::Static(_) => "Static",
            Body::Bytes(_) => "Bytes",
            Body::Shared(_) => "Shared",
            Body::File(..) => "File",
            Body::Stream(_) => "Stream",
        };
        write!(f, "{kind}({:?} bytes)", self.known_len())
    }
}

/// What a handler answers. The server adds `Content-Length` (or chunked framing) and
/// `Content-Type`; `headers` are written as given.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` (not written for 204 and 304, which have no body).
    pub content_type: &'static str,
    /// Extra headers, e.g. `("ETag", "\"42\"".into())`. Framing headers (`Content-Length`,
    /// `Transfer-Encoding`, `Connection`) belong to the server and are dropped here; so is a
    /// value that is not a valid header value (CR, LF, NUL: it would split the response).
    pub headers: Vec<(&'static str, String)>,
    /// The body; for HEAD requests it is measured but not sent.
    pub body: Body,
}

impl Response {
    /// A response with a body and no extra headers.
    pub fn new(status: u16, content_type: &'static str, body: Body) -> Response {
        Response { status, content_type, headers: Vec::new(), body }
    }

    /// `application/json` from a JSON value.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        // Serializing a Value cannot fail (its map keys are strings).
        Response::json_bytes(status, serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()))
    }

    /// `application/json` from bytes that already are JSON.
    pub fn json_bytes(status: u16, bytes: Vec<u8>) -> Response {
        Response::new(status, "application/json", Body::Bytes(bytes))
    }

    /// The API's error shape: `{"error":{"code":code,"message":message}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": { "code": code, "message": message } }))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

/// A boxed future answering one request.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// Answers requests on the runtime's threads. A handler must not block: waiting is done with
/// `.await`. A panic is caught and answered with 500.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. HEAD requests arrive with method `"HEAD"` and are answered like
    /// GET: the server sends the head and drops the body.
    fn handle<'a>(&'a self, req: Request<'a>) -> Answer<'a>;
}

/// Counters of the server, shared with whoever reports them. All only grow except the gauges
/// `connections_active` and `streams_active`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections returned by accept() (including those then rejected).
    pub connections_accepted: AtomicU64,
    /// Connections answered 503 because `max_connections` were open and all busy.
    pub connections_rejected: AtomicU64,
    /// Idle connections closed to make room for a new one at `max_connections`.
    pub connections_evicted: AtomicU64,
    /// Refusals delivering their 503 now (at most [`MAX_REJECTING`]).
    pub rejecting: AtomicU64,
    /// Connections open now.
    pub connections_active: AtomicU64,
    /// Requests handed to the handler.
    pub requests: AtomicU64,
    /// Requests refused by the server itself or by hyper's parser: 400, 411, 413, 431.
    pub bad_requests: AtomicU64,
    /// Heads or bodies not received in time, and clients that took no byte for
    /// `write_timeout_ms`.
    pub timeouts: AtomicU64,
    /// Failed accept() calls (EMFILE, ENFILE, ECONNABORTED, ...).
    pub accept_errors: AtomicU64,
    /// Handler calls that panicked (each answered 500).
    pub handler_panics: AtomicU64,
    /// MJPEG stream clients connected now.
    pub streams_active: AtomicU64,
    /// Stream requests answered 503 because `max_stream_clients` were streaming.
    pub streams_rejected: AtomicU64,
    /// Camera frames sent to stream clients (all clients together).
    pub stream_frames: AtomicU64,
    /// Placeholder frames sent while a camera was not delivering.
    pub stream_placeholders: AtomicU64,
}

impl Stats {
    /// The counters as a JSON object, for a status endpoint.
    pub fn to_json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "connections_accepted": g(&self.connections_accepted),
            "connections_rejected": g(&self.connections_rejected),
            "connections_evicted": g(&self.connections_evicted),
            "connections_active": g(&self.connections_active),
            "requests": g(&self.requests),
            "bad_requests": g(&self.bad_requests),
            "timeouts": g(&self.timeouts),
            "accept_errors": g(&self.accept_errors),
            "handler_panics": g(&self.handler_panics),
            "streams_active": g(&self.streams_active),
            "streams_rejected": g(&self.streams_rejected),
            "stream_frames": g(&self.stream_frames),
            "stream_placeholders": g(&self.stream_placeholders),
        })
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Limits taken from the config once; never changed.
#[derive(Clone, Debug)]
struct Limits {
    workers: usize,
    max_connections: u64,
    head_timeout: Duration,
    read_timeout: Duration,
    write_timeout: Duration,
    max_header_bytes: usize,
    max_headers: usize,
    max_body_bytes: usize,
    cors_origin: Option<HeaderValue>,
}

impl From<&HttpConfig> for Limits {
    fn from(c: &HttpConfig) -> Limits {
        // The config is validated; the clamps keep an unvalidated one (the fuzz target's)
        // from panicking inside hyper (its buffer has a floor of 8 KiB).
        Limits {
            workers: c.workers.max(1),
            max_connections: c.max_connections.max(1) as u64,
            head_timeout: Duration::from_millis(c.read_timeout_ms.min(c.idle_timeout_ms).max(1)),
            read_timeout: Duration::from_millis(c.read_timeout_ms.max(1)),
            write_timeout: Duration::from_millis(c.write_timeout_ms.max(1)),
            max_header_bytes: c.max_header_bytes.max(1024),
            max_headers: c.max_headers.max(1),
            max_body_bytes: c.max_body_bytes,
            cors_origin: c.cors_origin.as_deref().and_then(|o| HeaderValue::from_str(o).ok()),
        }
    }
}

/// What every connection task needs.
struct Ctx {
    handler: Arc<dyn Handler>,
    limits: Limits,
    stats: Arc<Stats>,
    conns: Arc<Conns>,
}

/// A running server: its threads and counters.
pub struct Server {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    /// Triggered by [`Server::join`]: closes the server alone (tests, or the service's end).
    closing: Stop,
    thread: Worker,
}

impl Server {
    /// Serves `listener` (already bound), counting in `stats`. Builds the runtime (its worker threads start now)
    /// and spawns the `http` thread, which accepts until `stop` is triggered (or
    /// [`Server::join`] is called). No thread is spawned later.
    pub fn start(
        listener: TcpListener,
        config: &HttpConfig,
        handler: Arc<dyn Handler>,
        stats: Arc<Stats>,
        stop: Stop,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let limits = Limits::from(config);
        let closing = Stop::new();
        let runtime = runtime(limits.workers)?;
        let conns = Conns::new(limits.max_connections as usize);
        let ctx = Arc::new(Ctx { handler, limits: limits.clone(), stats: Arc::clone(&stats), conns });
        let closed = closing.clone();
        // The API is how a user sees the service: losing it fails the service (exit 1).
        let guard = stop.guard("http");
        let thread = Worker::spawn("http", move || {
            let served = runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tokio::select! {
                    () = accept_loop(listener, ctx) => {}
                    () = stop.cancelled() => {}
                    () = closed.cancelled() => {}
                }
                Ok::<(), io::Error>(())
            });
            if let Err(e) = served {
                error!("http: cannot serve: {e}");
            }
            // Streams and keep-alive connections end here; their tasks are dropped.
            runtime.shutdown_timeout(Duration::from_millis(500));
            // Closed by `Server::join` (the stop token's own case is the guard's): by design.
            if closed.is_set() {
                guard.disarm();
            }
        })?;
        info!(
            "http: serving {local_addr} on {} runtime thread(s), up to {} connections, bodies up to {} bytes",
            limits.workers, limits.max_connections, limits.max_body_bytes
        );
        Ok(Server { local_addr, stats, closing, thread })
    }

    /// The address being served (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Call after `stop.trigger()` (it also works alone). Joins the server's threads; if they
    /// have not finished by `deadline`, they are left behind and logged.
    pub fn join(self, deadline: Instant) {
        self.closing.trigger();
        match self.thread.join_by(deadline) {
            Joined::Late => warn!("http: the server did not stop in time; leaving it behind"),
            Joined::Panicked => error!("http: thread http ended by a panic"),
            Joined::Returned => debug!("http: all threads joined"),
        }
    }
}

/// The runtime: current-thread for one worker (everything on `http`), else `workers` named
/// worker threads. Timers and sockets only; the blocking pool stays empty.
fn runtime(workers: usize) -> io::Result<tokio::runtime::Runtime> {
    let mut b = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let n = AtomicUsize::new(0);
    b.enable_io()
        .enable_time()
        .max_blocking_threads(1)
        .thread_name_fn(move || format!("http-{}", n.fetch_add(1, Ordering::Relaxed)))
        .build()
}

/// Accepts until the caller's `select!` drops it (the stop token, or [`Server::join`]).
async fn accept_loop(listener: tokio::net::TcpListener, ctx: Arc<Ctx>) {
    let stats = &ctx.stats;
    loop {
        match listener.accept().await {
            Ok((sock, _peer)) => {
                bump(&stats.connections_accepted);
                let place = match ctx.conns.admit() {
                    Admission::Admitted(p) => p,
                    Admission::Evicted(p) => {
                        bump(&stats.connections_evicted);
                        p
                    }
                    Admission::Full => {
                        bump(&stats.connections_rejected);
                        // A few refusals linger to deliver their 503; beyond that a flood's
                        // sockets are just closed.
                        if stats.rejecting.fetch_add(1, Ordering::Relaxed) < MAX_REJECTING {
                            tokio::spawn(reject(sock, ctx.limits.clone(), Rejecting(Arc::clone(stats))));
                        } else {
                            stats.rejecting.fetch_sub(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                };
                stats.connections_active.fetch_add(1, Ordering::Relaxed);
                let active = Active(Arc::clone(stats));
                tokio::spawn(connection(sock, Arc::clone(&ctx), place, active));
            }
            Err(e) => {
                bump(&stats.accept_errors);
                ACCEPT_LOG.warn(format_args!(
                    "http: accept failed: {e}{}",
                    if e.raw_os_error() == Some(libc::EMFILE) {
                        " (out of file descriptors: raise LimitNOFILE or lower http.max_connections)"
                    } else {
                        ""
                    }
                ));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Holds one place in `connections_active` until dropped (also when a task panics).
struct Active(Arc<Stats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a refusal that is delivering its 503.
struct Rejecting(Arc<Stats>);

impl Drop for Rejecting {
    fn drop(&mut self) {
        self.0.rejecting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection beyond the cap with 503 `busy` and closes it. hyper reads the request
/// head and frames the answer like every other one; the whole exchange is bounded by
/// [`REJECT_LINGER`], so a client that sends nothing or reads nothing is just closed.
async fn reject(sock: tokio::net::TcpStream, limits: Limits, _rejecting: Rejecting) {
    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
        let head = req.method() == http::Method::HEAD;
        let busy = Response::error(503, "busy", "too many connections (http.max_connections); try again")
            .with_header("Retry-After", "1".into());
        std::future::ready(Ok::<_, Infallible>(finish(busy, head, None, true)))
    });
    // The head is read within the same bounds as every other one.
    let conn = http1::Builder::new()
        .keep_alive(false)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(8192.max(limits.max_header_bytes))
        .serve_connection(TokioIo::new(sock), service);
    let _ = tokio::time::timeout(REJECT_LINGER, conn).await;
}

async fn connection(sock: tokio::net::TcpStream, ctx: Arc<Ctx>, place: Place, _active: Active) {
    place.conn.set_peer(&sock);
    let _ = sock.set_nodelay(true);
    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(SEND_BUFFER);
    let io = TokioIo::new(Guarded::new(sock, ctx.limits.write_timeout, Arc::clone(&ctx.stats)));
    let l = &ctx.limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(l.head_timeout)
        .max_headers(l.max_headers)
        .max_header_size(l.max_header_bytes)
        // The floor hyper allows. Reads: heads are bounded above. Writes: hyper stops asking a
        // stream for its next frame while this much is queued, so a slow client holds at
        // most one frame here.
        .max_buf_size(8192.max(l.max_header_bytes))
        // A client may shut down its side once the request is sent (busybox nc, scripts): it
        // still gets its answer.
        .half_close(true)
        .keep_alive(true);
    let svc_ctx = Arc::clone(&ctx);
    let conn = Arc::clone(&place.conn);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (ctx, conn) = (Arc::clone(&svc_ctx), Arc::clone(&conn));
        async move { Ok::<_, Infallible>(respond(&ctx.handler, &ctx.limits, &ctx.stats, Some(&conn), req).await) }
    });
    let served = builder.serve_connection(io, service);
    let result = tokio::select! {
        r = served => r,
        // Evicted while idle to make room for a new connection.
        _ = place.conn.evicted() => return,
    };
    if let Err(e) = result {
        let stats = &ctx.stats;
        if e.is_timeout() {
            bump(&stats.timeouts);
        } else if e.is_parse() || e.is_parse_too_large() {
            // hyper answered 400 or 431 itself.
            bump(&stats.bad_requests);
        }
        debug!("http: connection ended: {e}");
    }
}

/// One request through the limits and the handler: what the server runs for every request,
/// and what the fuzz target drives ([`answer`]).
async fn respond<B>(
    handler: &Arc<dyn Handler>,
    limits: &Limits,
    stats: &Stats,
    conn: Option<&Arc<Conn>>,
    req: hyper::Request<B>,
) -> hyper::Response<HttpBody>
where
    B: HttpBodyTrait<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let head = parts.method == http::Method::HEAD;
    let read = matches!(parts.method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
    let cors = if read { limits.cors_origin.as_ref() } else { None };
    let refuse = |status, code, msg: &str| {
        bump(&stats.bad_requests);
        finish(Response::error(status, code, msg), head, cors, true)
    };
    if parts.headers.contains_key(TRANSFER_ENCODING) {
        return refuse(411, "length_required", "send a Content-Length body (Transfer-Encoding is not accepted)");
    }
    let declared = match parts.headers.get(CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
    {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return refuse(400, "bad_request", "Content-Length is not a number"),
    };
    if declared > limits.max_body_bytes as u64 {
        let msg = format!("the body may be at most {} bytes (http.max_body_bytes)", limits.max_body_bytes);
        return refuse(413, "body_too_large", &msg);
    }
    let body = if declared == 0 {
        Bytes::new()
    } else {
        let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
        match tokio::time::timeout(limits.read_timeout, limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => return refuse(400, "bad_request", &format!("cannot read the body: {e}")),
            Err(_) => {
                bump(&stats.timeouts);
                return finish(
                    Response::error(408, "timeout", "the body did not arrive within http.read_timeout_ms"),
                    head,
                    cors,
                    true,
                );
            }
        }
    };
    // Busy (not evictable) from here until the response body is finished or dropped: a
    // connection still waiting for a body it declared stays evictable, so sockets that
    // promise bodies they never send cannot fill the table.
    let busy = conn.map(Busy::new);
    bump(&stats.requests);
    if parts.method == http::Method::OPTIONS && cors.is_some() {
        // A CORS preflight: reads only (writes are for the dashboard and scripts).
        let r = Response::new(204, "text/plain", Body::Empty)
            .with_header("Access-Control-Allow-Methods", "GET, HEAD".into())
            .with_header("Access-Control-Allow-Headers", "Authorization".into())
            .with_header("Access-Control-Max-Age", "600".into());
        return held(finish(r, head, cors, false), busy);
    }
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = Request::new(parts.method.as_str(), target, &parts.headers, &body);
    request.peer = conn.and_then(|c| c.peer());
    let answer = CatchUnwind(handler.handle(request)).await;
    let response = answer.unwrap_or_else(|msg| {
        bump(&stats.handler_panics);
        PANIC_LOG.error(format_args!("http: a handler panicked on {} {}: {msg}", parts.method, parts.uri.path()));
        Response::error(500, "internal", "the request failed inside camjobd; the service goes on (see the log)")
    });
    held(finish(response, head, cors, false), busy)
}

/// Keeps a connection busy for as long as the response body lives.
fn held(mut resp: hyper::Response<HttpBody>, busy: Option<Busy>) -> hyper::Response<HttpBody> {
    resp.body_mut().busy = busy;
    resp
}

/// A handler's answer as hyper's response.
fn finish(r: Response, head: bool, cors: Option<&HeaderValue>, close: bool) -> hyper::Response<HttpBody> {
    let no_body = matches!(r.status, 204 | 304);
    let head_len = if head && !no_body { r.body.known_len() } else { None };
    let body = match r.body {
        _ if no_body => HttpBody::full(Bytes::new()),
        // HEAD: the length of what GET would send, and nothing else held open.
        b if head => match b.known_len() {
            Some(n) => HttpBody::head(n),
            None => HttpBody::full(Bytes::new()),
        },
        Body::Empty => HttpBody::full(Bytes::new()),
        Body::Static(b) => HttpBody::full(Bytes::from_static(b)),
        Body::Bytes(b) => HttpBody::full(Bytes::from(b)),
        Body::Shared(b) => HttpBody::full(Bytes::from_owner(SharedBytes(b))),
        Body::File(f, n) => HttpBody::new(Kind::File { file: f, left: n }),
        Body::Stream(s) => HttpBody::new(Kind::Stream(s)),
    };
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if !no_body {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    }
    for (name, value) in r.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    if let Some(n) = head_len {
        // hyper sends no length for an empty body; a HEAD answer says what GET would send.
        h.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(origin) = cors {
        h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if close {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A frame copy (or anything shared) as `Bytes` without copying.
struct SharedBytes(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// The body hyper writes.
pub struct HttpBody {
    kind: Kind,
    /// Keeps the connection busy (not evictable) until the body is finished or dropped.
    busy: Option<Busy>,
}

enum Kind {
    Full(Option<Bytes>),
    /// A HEAD answer: says this length, sends nothing.
    Head(u64),
    File {
        file: Box<dyn std::io::Read + Send>,
        left: u64,
    },
    Stream(StreamBody),
}

impl HttpBody {
    fn new(kind: Kind) -> HttpBody {
        HttpBody { kind, busy: None }
    }
    fn full(b: Bytes) -> HttpBody {
        HttpBody::new(Kind::Full(Some(b)))
    }
    fn head(n: u64) -> HttpBody {
        HttpBody::new(Kind::Head(n))
    }
}

impl HttpBodyTrait for HttpBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = self.poll_kind(cx);
        if matches!(polled, Poll::Ready(None)) {
            // Finished: the connection is idle again (evictable) from now on.
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Kind::Head(_) => true,
            Kind::File { left, .. } => *left == 0,
            Kind::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Head(n) => SizeHint::with_exact(*n),
            Kind::File { left, .. } => SizeHint::with_exact(*left),
            Kind::Stream(s) => s.size_hint(),
        }
    }
}

impl HttpBody {
    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Kind::Head(_) => Poll::Ready(None),
            Kind::File { file, left } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                // A short blocking read of a local file (at most one chunk) on the runtime
                // thread: cheaper than a blocking pool that grows threads.
                let n = (*left).min(FILE_CHUNK as u64) as usize;
                let mut buf = vec![0u8; n];
                let got = std::io::Read::read_exact(file, &mut buf);
                Poll::Ready(Some(got.map(|()| {
                    *left -= n as u64;
                    Frame::data(Bytes::from(buf))
                })))
            }
            Kind::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }
}

/// Catches a panic while polling the handler's future (the message is returned).
struct CatchUnwind<'a>(Answer<'a>);

impl Future for CatchUnwind<'_> {
    type Output = Result<Response, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(crate::error::panic_message(&*p).to_string())),
        }
    }
}

/// A socket whose writes must make progress: a write that finds the socket full fails with
/// `TimedOut` (and hyper closes the connection) once the client has acknowledged no byte for
/// `timeout`. Progress is counted in bytes the client took, not in writable edges: the kernel
/// reports a socket writable only after about half its send buffer drained, which a client
/// reading 30 KB/s does not manage in 5 s. Reads pass through (hyper bounds the wait for a
/// head itself).
pub struct Guarded {
    inner: tokio::net::TcpStream,
    timeout: Duration,
    /// Armed when a write first finds the socket full; reset by any progress.
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    /// Bytes the client had acknowledged when the timer was last (re)armed.
    acked: u64,
    stats: Arc<Stats>,
}

impl Guarded {
    fn new(inner: tokio::net::TcpStream, timeout: Duration, stats: Arc<Stats>) -> Guarded {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        Guarded { inner, timeout, sleep: Box::pin(tokio::time::sleep_until(far)), armed: false, acked: 0, stats }
    }

    fn acked(&self) -> u64 {
        crate::sys::tcp_progress(std::os::fd::AsRawFd::as_raw_fd(&self.inner)).map_or(0, |p| p.acked)
    }

    /// Called when a write would block: arms the timer; when it runs out, re-arms it if the
    /// client took bytes meanwhile, and fails otherwise.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.armed {
            self.armed = true;
            // What the client took since the last stall began: the longer its last burst, the
            // longer it may pause now (see `conns::grace`).
            let acked = self.acked();
            let grace = super::conns::grace(acked.saturating_sub(self.acked), self.timeout);
            self.acked = acked;
            self.sleep.as_mut().reset(tokio::time::Instant::now() + grace);
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            let acked = self.acked();
            if acked == self.acked {
                bump(&self.stats.timeouts);
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no data for http.write_timeout_ms",
                ));
            }
            let grace = super::conns::grace(acked - self.acked, self.timeout);
            self.acked = acked;
            self.sleep.as_mut().reset(tokio::time::Instant::now() + grace);
        }
        Poll::Pending
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stalled(cx).map(Err),
            done => {
                self.armed = false;
                done
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The fuzz target's entry: raw bytes parsed as one request (httparse, as hyper does), then
/// [`respond`], the function the server runs for every request. `None` when the bytes are not
/// a complete request head (hyper would wait for more, or answer 400 itself). The answer is
/// the response head as hyper would write it, without a body.
pub fn answer(input: &[u8], handler: Arc<dyn Handler>, config: &HttpConfig) -> Option<(u16, HeaderMap)> {
    let limits = Limits::from(config);
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let mut builder = hyper::Request::builder().method(req.method?).uri(req.path?);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let body = http_body_util::Full::new(Bytes::copy_from_slice(&input[head_len..]));
    let request = builder.body(body).ok()?;
    let stats = Stats::default();
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime")
    });
    let resp = rt.block_on(respond(&handler, &limits, &stats, None, request));
    Some((resp.status().as_u16(), resp.headers().clone()))
}

#[cfg(test)]
mod tests;
