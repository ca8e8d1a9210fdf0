//! The HTTP/1.1 server: sockets, framing, limits and threads. Routing lives elsewhere; this
//! file turns bytes into a [`Request`], hands it to a [`Handler`], and writes the
//! [`Response`] back.
//!
//! It exists because the process runs unattended for months on a small board, so every
//! resource an HTTP client can touch is bounded (DESIGN.md rule 5). A general-purpose server
//! was measured unfit: it allocated a body buffer of whatever `Content-Length` a client
//! declared, had no timeouts, spawned a thread per connection and ended its accept loop on
//! the first `EMFILE`. Here, built on `std::net` and `httparse`:
//!
//! - **Threads are fixed:** one `http-accept` thread and `workers` threads `http-0`..,
//!   spawned by [`Server::start`] and never more. A worker serves one connection at a time.
//! - **Connections are bounded:** accepted sockets wait in a queue of `queue` places; when it
//!   is full the accept thread answers `503` itself and closes. Accept errors are counted
//!   and logged (at most once a second), never fatal.
//! - **Memory is fixed per worker:** a head buffer of `max_header_bytes`, a body buffer of
//!   `max_body_bytes` and a header array of `max_headers`, allocated once when the worker
//!   starts. Nothing is sized from what a client declares: a body larger than the limit is
//!   refused with `413` before a byte of it is read.
//! - **Time is bounded:** a request must arrive completely within `read_timeout_ms` of its
//!   first byte (so a slowloris client is cut off), a response must be written within
//!   `write_timeout_ms`, and an idle keep-alive connection is dropped after
//!   `idle_timeout_ms` — or at once when another connection is waiting for a worker, so a
//!   few idle browsers cannot starve everyone else.
//!
//! Only `Content-Length` bodies are accepted (`Transfer-Encoding` gets `411`). Errors the
//! server produces itself use the API's JSON error shape
//! `{"error":{"code":"...","message":"..."}}`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use log::{debug, error, info, warn};

use crate::config::HttpConfig;
use crate::shutdown::Stop;

/// Longest single blocking read. Reads are cut into slices this long so that deadlines,
/// the stop token and the queue are looked at regularly however quiet a client is.
const SLICE: Duration = Duration::from_millis(100);
/// How long the accept thread may spend writing a 503; it must not be held up by a client.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Pause after accept errors that mean "out of something" (EMFILE, ENFILE, ENOBUFS), so
/// the loop does not spin while the shortage lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(75);
/// After an error answer the client may still be sending (a refused body, a slowloris
/// head). Reading that away for a short while lets close() send FIN instead of RST, which
/// could destroy the answer before the client has read it.
const LINGER_TIME: Duration = Duration::from_millis(250);
/// At most this much is read away while lingering.
const LINGER_BYTES: usize = 256 * 1024;
/// Bodies up to this size are copied behind the head and sent in one write.
const COALESCE_BYTES: usize = 8 * 1024;
/// Capacity of a worker's response-head buffer: a head plus a coalesced body.
const OUT_CAPACITY: usize = COALESCE_BYTES + 2 * 1024;
/// How often an idle worker looks at the stop flag besides its channel.
const WORKER_POLL: Duration = Duration::from_millis(200);
/// How often an accept error is logged at most.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);

/// A parsed request, borrowed from the worker's buffers for the duration of one
/// [`Handler::handle`] call.
pub struct Request<'a> {
    /// The method as sent: `"GET"`, `"HEAD"`, `"POST"`, ...
    pub method: &'a str,
    /// The request target up to `?`; not percent-decoded.
    pub path: &'a str,
    /// What follows the first `?`, or `""`; not percent-decoded.
    pub query: &'a str,
    /// The body (`Content-Length` bytes; empty when there was none).
    pub body: &'a [u8],
    headers: &'a [httparse::Header<'a>],
}

impl<'a> Request<'a> {
    /// Builds a request by hand: for handler tests, without a socket. `target` is split at
    /// the first `?` into `path` and `query`.
    pub fn new(method: &'a str, target: &'a str, headers: &'a [httparse::Header<'a>], body: &'a [u8]) -> Request<'a> {
        let (path, query) = split_target(target);
        Request { method, path, query, body, headers }
    }

    /// The value of the first header called `name` (ASCII case-insensitive), as sent
    /// (surrounding whitespace removed).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// All headers in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.headers.iter().map(|h| (h.name, h.value))
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &self.headers.len())
            .field("body", &self.body.len())
            .finish()
    }
}

/// A response body.
pub enum Body {
    /// No body (`Content-Length: 0`).
    Empty,
    /// Bytes compiled into the binary (the dashboard).
    Static(&'static [u8]),
    /// Bytes made for this response (JSON).
    Bytes(Vec<u8>),
    /// Bytes shared with someone else, written without a copy: a frame-pool JPEG. The
    /// server drops its reference as soon as the write has finished, so the buffer goes back
    /// to the pool at once.
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>),
    /// An open file of this many bytes (an export download), streamed in chunks; each chunk
    /// must be taken by the client within `write_timeout_ms`, so the whole transfer may take
    /// as long as it keeps moving.
    File(std::fs::File, u64),
}

impl Body {
    /// The bytes held in memory (none for a file).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty | Body::File(..) => &[],
            Body::Static(b) => b,
            Body::Bytes(b) => b,
            Body::Shared(b) => (**b).as_ref(),
        }
    }

    /// Length in bytes; what `Content-Length` says.
    pub fn len(&self) -> u64 {
        match self {
            Body::File(_, n) => *n,
            b => b.as_bytes().len() as u64,
        }
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Body::Empty => "Empty",
            Body::Static(_) => "Static",
            Body::Bytes(_) => "Bytes",
            Body::Shared(_) => "Shared",
            Body::File(..) => "File",
        };
        write!(f, "{kind}({} bytes)", self.len())
    }
}

/// What a handler answers. The server adds `Content-Length`, `Content-Type` and
/// `Connection`; `headers` are written as given after those.
#[derive(Debug)]
pub struct Response {
    /// Status code; the reason phrase is added by the server.
    pub status: u16,
    /// `Content-Type` (not written for 1xx, 204 and 304, which have no body).
    pub content_type: &'static str,
    /// Extra headers, e.g. `("ETag", "\"42\"".into())`. `Content-Length`, `Connection` and
    /// `Transfer-Encoding` belong to the server and are dropped here; so is any header whose
    /// value contains CR, LF or NUL (it would split the response).
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

/// Answers requests. Called on a worker thread; one call per request. A panic is caught
/// and answered with 500, and the worker carries on.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. HEAD requests arrive with method `"HEAD"` and should be
    /// answered like GET: the server sends the head (with the body's length) and drops the
    /// body.
    fn handle(&self, req: &Request<'_>) -> Response;
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: &Request<'_>) -> Response {
        self(req)
    }
}

/// Counters of the server, shared with whoever wants to report them. All only grow except
/// `connections_active`, which is a gauge.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections returned by accept() (including those then rejected).
    pub connections_accepted: AtomicU64,
    /// Connections answered 503 because the queue was full.
    pub connections_rejected: AtomicU64,
    /// Connections a worker is serving right now.
    pub connections_active: AtomicU64,
    /// Requests handed to the handler.
    pub requests: AtomicU64,
    /// Requests refused by the server itself: 400, 411, 413, 431.
    pub bad_requests: AtomicU64,
    /// Requests not received (408, or a fresh connection that sent nothing) or responses
    /// not written within their time limits.
    pub timeouts: AtomicU64,
    /// Failed accept() calls (EMFILE, ENFILE, ECONNABORTED, ...).
    pub accept_errors: AtomicU64,
    /// Handler calls that panicked (each answered 500).
    pub handler_panics: AtomicU64,
}

impl Stats {
    /// The counters as a JSON object, for a status endpoint.
    pub fn to_json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "connections_accepted": g(&self.connections_accepted),
            "connections_rejected": g(&self.connections_rejected),
            "connections_active": g(&self.connections_active),
            "requests": g(&self.requests),
            "bad_requests": g(&self.bad_requests),
            "timeouts": g(&self.timeouts),
            "accept_errors": g(&self.accept_errors),
            "handler_panics": g(&self.handler_panics),
        })
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A running server: its threads and counters.
pub struct Server {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    closing: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves `listener` (already bound; this binds nothing). Spawns thread `http-accept`
    /// and `config.workers` threads `http-0`..`http-N-1`, allocates each worker's buffers
    /// once, and never spawns more threads later. Threads exit when `stop` is triggered (or
    /// [`Server::join`] is called).
    pub fn start(
        listener: TcpListener,
        config: &HttpConfig,
        handler: Arc<dyn Handler>,
        stop: Stop,
    ) -> io::Result<Server> {
        // The accept thread relies on accept() blocking; join() wakes it.
        listener.set_nonblocking(false)?;
        let local_addr = listener.local_addr()?;
        let limits = Limits::from(config);
        let stats = Arc::new(Stats::default());
        let closing = Arc::new(AtomicBool::new(false));
        let ctl = Control { stop, closing: Arc::clone(&closing), stats: Arc::clone(&stats) };
        let (tx, rx) = channel::bounded::<TcpStream>(limits.queue);
        let mut threads = Vec::with_capacity(limits.workers + 1);

        for i in 0..limits.workers {
            let (rx, ctl, handler, limits) = (rx.clone(), ctl.clone(), Arc::clone(&handler), limits.clone());
            let spawned = thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || Worker::new(rx, ctl, handler, limits).run());
            match spawned {
                Ok(h) => threads.push(h),
                Err(e) => {
                    // The workers already running exit when the channel disconnects (tx is
                    // dropped on return) or on the flag.
                    closing.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        drop(rx);

        let busy = busy_response(limits.queue);
        let accept_ctl = ctl.clone();
        // If this spawn fails the closure, and with it `tx`, is dropped: the workers exit.
        let accept = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, tx, accept_ctl, busy));
        match accept {
            Ok(h) => threads.insert(0, h),
            Err(e) => {
                closing.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        info!(
            "http: serving {local_addr} with {} workers, queue {}, bodies up to {} bytes",
            limits.workers, limits.queue, limits.max_body_bytes
        );
        Ok(Server { local_addr, stats, closing, threads })
    }

    /// The address being served (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Call after `stop.trigger()` (it also works alone). Wakes the blocking accept by
    /// connecting to the server's own address (loopback for `0.0.0.0`/`::`), then joins all
    /// threads; any thread not finished by `deadline` is detached and logged.
    pub fn join(self, deadline: Instant) {
        self.closing.store(true, Ordering::SeqCst);
        wake_accept(self.local_addr, deadline);
        let mut pending = self.threads;
        loop {
            let mut i = 0;
            while i < pending.len() {
                if pending[i].is_finished() {
                    let h = pending.swap_remove(i);
                    let name = h.thread().name().unwrap_or("http-?").to_string();
                    if h.join().is_err() {
                        error!("http: thread {name} ended by a panic");
                    }
                } else {
                    i += 1;
                }
            }
            if pending.is_empty() {
                debug!("http: all threads joined");
                return;
            }
            if Instant::now() >= deadline {
                for h in &pending {
                    warn!(
                        "http: thread {} did not finish in time; leaving it behind",
                        h.thread().name().unwrap_or("http-?")
                    );
                }
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Connects to the listener once so that a blocked accept() returns and sees the flag.
fn wake_accept(addr: SocketAddr, deadline: Instant) {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let wait =
        deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(10), Duration::from_millis(500));
    if let Err(e) = TcpStream::connect_timeout(&SocketAddr::new(ip, addr.port()), wait) {
        // Refused usually means the accept thread has already gone.
        debug!("http: waking the accept thread via {ip}:{}: {e}", addr.port());
    }
}

/// Limits taken from the config once; never changed.
#[derive(Clone, Debug)]
struct Limits {
    workers: usize,
    queue: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
    max_headers: usize,
    max_body_bytes: usize,
}

impl From<&HttpConfig> for Limits {
    fn from(c: &HttpConfig) -> Limits {
        // The config is validated, but a zero here would mean "no thread", "rendezvous
        // channel" or "no room for a request line"; keep the server functional regardless.
        Limits {
            workers: c.workers.max(1),
            queue: c.queue.max(1),
            read_timeout: Duration::from_millis(c.read_timeout_ms.max(1)),
            write_timeout: Duration::from_millis(c.write_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms.max(1)),
            max_header_bytes: c.max_header_bytes.max(256),
            max_headers: c.max_headers.max(1),
            max_body_bytes: c.max_body_bytes,
        }
    }
}

/// What every thread needs to know about stopping, and where to count.
#[derive(Clone)]
struct Control {
    stop: Stop,
    /// Set by `Server::join`, so that joining works even if nobody triggered `stop`.
    closing: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl Control {
    fn stopping(&self) -> bool {
        self.stop.is_set() || self.closing.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------
// Accept thread

fn accept_loop(listener: TcpListener, tx: Sender<TcpStream>, ctl: Control, busy: Vec<u8>) {
    let mut last_log: Option<Instant> = None;
    let mut unlogged: u64 = 0;
    while !ctl.stopping() {
        match listener.accept() {
            Ok((sock, _peer)) => {
                if ctl.stopping() {
                    break; // most likely join()'s wake-up connection
                }
                bump(&ctl.stats.connections_accepted);
                match tx.try_send(sock) {
                    Ok(()) => {}
                    Err(TrySendError::Full(sock)) => {
                        bump(&ctl.stats.connections_rejected);
                        reject(sock, &busy);
                    }
                    // Only happens when every worker has exited, i.e. while stopping.
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
            Err(e) => {
                bump(&ctl.stats.accept_errors);
                // Rate-limited: an fd shortage can fail thousands of accepts a second.
                unlogged += 1;
                if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
                    warn!("http: accept failed ({unlogged} failure(s) since last report): {e}");
                    last_log = Some(Instant::now());
                    unlogged = 0;
                }
                match e.kind() {
                    // A client that gave up, or a signal: nothing is short, go on.
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {}
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: retrying at once would spin.
                    _ => {
                        ctl.stop.wait(ACCEPT_BACKOFF);
                    }
                }
            }
        }
    }
    debug!("http: accept thread exits");
}

/// Answers 503 on a socket no worker can take, without letting the client hold up the
/// accept thread.
fn reject(mut sock: TcpStream, busy: &[u8]) {
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(REJECT_WRITE_TIMEOUT));
    if sock.write_all(busy).is_err() {
        return;
    }
    let _ = sock.shutdown(Shutdown::Write);
    // Read away whatever already arrived (never waiting), so close() sends FIN, not RST.
    if sock.set_nonblocking(true).is_ok() {
        let mut scratch = [0u8; 512];
        for _ in 0..16 {
            match sock.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
    }
}

/// The complete 503 answer, built once.
fn busy_response(queue: usize) -> Vec<u8> {
    let resp = Response::error(503, "busy", &format!("server busy: {queue} connections queued; try again"))
        .with_header("Retry-After", "1".to_string());
    let mut out = Vec::with_capacity(512);
    render_head(&mut out, &resp, true);
    out.extend_from_slice(resp.body.as_bytes());
    out
}

// ---------------------------------------------------------------------------------------
// Workers

/// One worker thread's state: its fixed buffers and its share of the server.
struct Worker {
    rx: Receiver<TcpStream>,
    ctl: Control,
    handler: Arc<dyn Handler>,
    limits: Limits,
    /// The request head, and any bytes read beyond it (pipelined requests).
    head: Vec<u8>,
    /// The request body.
    body: Vec<u8>,
    /// httparse's header array, `max_headers` long, kept between requests (see
    /// [`relabel_headers`]).
    headers: Vec<httparse::Header<'static>>,
    /// The response head (and a small body), built here and written in one go.
    out: Vec<u8>,
}

/// How a connection goes on after one exchange.
enum Next {
    /// Keep the connection; `consumed` bytes at the start of the head buffer were used.
    KeepAlive { consumed: usize },
    /// An answer with `Connection: close` was sent; close politely.
    Close,
    /// An error answer was sent while the client may still be sending; linger, then close.
    CloseAfterError,
    /// The connection is broken or we are stopping; just drop it.
    Drop,
}

/// Result of a read against a deadline.
enum Got {
    Data(usize),
    /// The peer closed its side.
    Eof,
    /// The deadline passed with nothing (more) read.
    TimedOut,
    /// The stop token was set.
    Stopping,
    /// A socket error (reset, ...).
    Failed,
}

impl Worker {
    fn new(rx: Receiver<TcpStream>, ctl: Control, handler: Arc<dyn Handler>, limits: Limits) -> Worker {
        Worker {
            head: vec![0; limits.max_header_bytes],
            body: vec![0; limits.max_body_bytes],
            headers: vec![httparse::EMPTY_HEADER; limits.max_headers],
            out: Vec::with_capacity(OUT_CAPACITY),
            rx,
            ctl,
            handler,
            limits,
        }
    }

    fn run(mut self) {
        loop {
            if self.ctl.stopping() {
                break;
            }
            let conn = crossbeam::select! {
                recv(self.rx) -> msg => match msg {
                    Ok(conn) => conn,
                    Err(_) => break, // the accept thread has gone
                },
                // Never receives; disconnects when stop is triggered.
                recv(self.ctl.stop.receiver()) -> _ => break,
                default(WORKER_POLL) => continue,
            };
            self.ctl.stats.connections_active.fetch_add(1, Ordering::Relaxed);
            // A bug in this file must cost one connection, not one of the few workers.
            let served = panic::catch_unwind(AssertUnwindSafe(|| self.serve(conn)));
            self.ctl.stats.connections_active.fetch_sub(1, Ordering::Relaxed);
            if let Err(p) = served {
                error!("http: worker panicked while serving a connection: {}", crate::error::panic_message(p.as_ref()));
            }
        }
        debug!("http: worker exits");
    }

    /// Serves one connection until it closes, times out or has to make room.
    fn serve(&mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if let Err(e) = stream.set_read_timeout(Some(SLICE)) {
            debug!("http: set_read_timeout: {e}");
            return;
        }
        let mut filled = 0;
        let mut fresh = true;
        loop {
            if filled == 0 {
                match self.wait_for_request(&mut stream, fresh) {
                    Some(n) => filled = n,
                    None => return,
                }
            }
            fresh = false;
            match self.exchange(&mut stream, &mut filled) {
                Next::KeepAlive { consumed } => {
                    // Keep pipelined bytes for the next request.
                    self.head.copy_within(consumed..filled, 0);
                    filled -= consumed;
                }
                Next::Close => return self.close(stream, false),
                Next::CloseAfterError => return self.close(stream, true),
                Next::Drop => return,
            }
        }
    }

    /// Waits for the first bytes of a request. A fresh connection gets `read_timeout`; an
    /// idle keep-alive one gets `idle_timeout` but is given up as soon as another
    /// connection waits for a worker. Returns how many bytes were read, or None to close.
    fn wait_for_request(&mut self, stream: &mut TcpStream, fresh: bool) -> Option<usize> {
        let limit = if fresh { self.limits.read_timeout } else { self.limits.idle_timeout };
        let deadline = Instant::now() + limit;
        loop {
            if self.ctl.stopping() {
                return None;
            }
            if !fresh && !self.rx.is_empty() {
                // Someone is queued: serve a request that has already arrived, else make
                // room. A client that sees its idle connection closed simply reconnects.
                return read_ready(stream, &mut self.head);
            }
            if Instant::now() >= deadline {
                if fresh {
                    bump(&self.ctl.stats.timeouts);
                }
                return None;
            }
            match stream.read(&mut self.head) {
                Ok(0) => return None,
                Ok(n) => return Some(n),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads the rest of one request (the first `*filled` bytes are in the head buffer),
    /// has it answered and writes the answer.
    fn exchange(&mut self, stream: &mut TcpStream, filled: &mut usize) -> Next {
        let Worker { rx, ctl, handler, limits, head, body, headers: header_store, out } = self;
        let deadline = Instant::now() + limits.read_timeout;

        // 1. The head. httparse is run again only when a line has been completed, and at
        //    most once per allowed line, so a client trickling bytes cannot make the
        //    parsing cost grow with the square of the head size.
        let mut scan = 0;
        let mut probes = 0;
        let head_len = loop {
            if head[scan..*filled].contains(&b'\n') {
                probes += 1;
                if probes > limits.max_headers + 4 {
                    let resp = Response::error(431, "header_too_large", "request head has too many lines");
                    return refuse(stream, out, ctl, resp, false, limits.write_timeout);
                }
                match probe_head(&head[..*filled], header_store, limits.max_headers) {
                    Ok(Some(n)) => break n,
                    Ok(None) => {}
                    Err(resp) => return refuse(stream, out, ctl, resp, false, limits.write_timeout),
                }
            }
            scan = *filled;
            if *filled == head.len() {
                let msg = format!("request head larger than {} bytes", limits.max_header_bytes);
                return refuse(
                    stream,
                    out,
                    ctl,
                    Response::error(431, "header_too_large", &msg),
                    false,
                    limits.write_timeout,
                );
            }
            match read_by(stream, &mut head[*filled..], deadline, ctl) {
                Got::Data(n) => *filled += n,
                Got::TimedOut => return timed_out(stream, out, ctl, limits.write_timeout),
                Got::Eof | Got::Failed | Got::Stopping => return Next::Drop,
            }
        };

        // 2. Parse once more, keeping the borrowed headers until the answer is written.
        //    The head buffer is not written to again before then.
        let mut parsed_headers = relabel_headers(std::mem::take(header_store), limits.max_headers);
        let next = 'exchange: {
            let mut req = httparse::Request::new(&mut parsed_headers);
            match req.parse(&head[..head_len]) {
                Ok(httparse::Status::Complete(n)) if n == head_len => {}
                // Cannot happen: the same bytes parsed completely a moment ago.
                _ => break 'exchange Next::Drop,
            }
            let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
                break 'exchange Next::Drop;
            };
            let head_only = method == "HEAD";
            let hdrs: &[httparse::Header<'_>] = req.headers;

            let framing = match framing(hdrs, version, limits.max_body_bytes) {
                Ok(f) => f,
                Err(resp) => break 'exchange refuse(stream, out, ctl, resp, head_only, limits.write_timeout),
            };

            // 3. The body: what came with the head, then the rest straight from the socket.
            let body_len = framing.body_len;
            let from_head = (*filled - head_len).min(body_len);
            body[..from_head].copy_from_slice(&head[head_len..head_len + from_head]);
            if from_head < body_len {
                if framing.expect_continue {
                    let continue_by = Instant::now() + limits.write_timeout;
                    if write_all_by(stream, b"HTTP/1.1 100 Continue\r\n\r\n", continue_by).is_err() {
                        break 'exchange Next::Drop;
                    }
                }
                let mut got = from_head;
                while got < body_len {
                    match read_by(stream, &mut body[got..body_len], deadline, ctl) {
                        Got::Data(n) => got += n,
                        Got::TimedOut => break 'exchange timed_out(stream, out, ctl, limits.write_timeout),
                        Got::Eof | Got::Failed | Got::Stopping => break 'exchange Next::Drop,
                    }
                }
            }
            let consumed = head_len + from_head;

            // 4. The answer.
            let (path, query) = split_target(target);
            let request = Request { method, path, query, body: &body[..body_len], headers: hdrs };
            bump(&ctl.stats.requests);
            let resp = match panic::catch_unwind(AssertUnwindSafe(|| handler.handle(&request))) {
                Ok(resp) => resp,
                Err(p) => {
                    bump(&ctl.stats.handler_panics);
                    error!(
                        "http: handler panicked on {method} {}: {}",
                        clip(path),
                        crate::error::panic_message(p.as_ref())
                    );
                    Response::error(500, "internal", "internal error; see the server log")
                }
            };
            // Hand the connection back when others wait for a worker (fairness when there
            // are more clients than workers) or when shutting down.
            let close = !framing.keep_alive || !rx.is_empty() || ctl.stopping();
            let write_by = Instant::now() + limits.write_timeout;
            // `resp` (and with it a frame-pool buffer) is dropped inside, right after writing.
            if let Err(e) = write_response(stream, out, resp, head_only, close, write_by) {
                note_write_error(ctl, &e);
                break 'exchange Next::Drop;
            }
            if close {
                Next::Close
            } else {
                Next::KeepAlive { consumed }
            }
        };
        *header_store = relabel_headers(parsed_headers, 0);
        next
    }

    /// Closes after an answer with `Connection: close`. Sends FIN first, then reads away
    /// what the client still sends (bounded): everything already there when `linger` is
    /// false, or for up to LINGER_TIME after an error answer, when the client may be in the
    /// middle of sending a body we refused.
    fn close(&mut self, stream: TcpStream, linger: bool) {
        let _ = stream.shutdown(Shutdown::Write);
        if !linger && stream.set_nonblocking(true).is_err() {
            return;
        }
        let until = Instant::now() + LINGER_TIME;
        let mut stream = stream;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut self.head) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) && linger => {}
                Err(_) => break,
            }
            if linger && (Instant::now() >= until || self.ctl.stopping()) {
                break;
            }
        }
    }
}

/// Reads what is already waiting on the socket without blocking.
fn read_ready(stream: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
    stream.set_nonblocking(true).ok()?;
    let got = loop {
        match stream.read(buf) {
            Ok(n) if n > 0 => break Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => break None,
        }
    };
    stream.set_nonblocking(false).ok()?;
    got
}

/// Reads into `buf` in SLICE-long waits until something arrives, the deadline passes or
/// the server stops.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant, ctl: &Control) -> Got {
    loop {
        if ctl.stopping() {
            return Got::Stopping;
        }
        if Instant::now() >= deadline {
            return Got::TimedOut;
        }
        match stream.read(buf) {
            Ok(0) => return Got::Eof,
            Ok(n) => return Got::Data(n),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Got::Failed,
        }
    }
}

/// Writes all of `buf` before `deadline`. The socket's write timeout is set to the time
/// left before each write, so a client that reads slowly cannot stretch a response past the
/// deadline one small write at a time.
fn write_all_by(stream: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn note_write_error(ctl: &Control, e: &io::Error) {
    if is_timeout(e) {
        bump(&ctl.stats.timeouts);
    }
    debug!("http: writing a response failed: {e}");
}

/// Answers an error the server found itself (bad head, refused body) and says how to close.
fn refuse(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    ctl: &Control,
    resp: Response,
    head_only: bool,
    write_timeout: Duration,
) -> Next {
    bump(&ctl.stats.bad_requests);
    debug!("http: refused a request with {}", resp.status);
    match write_response(stream, out, resp, head_only, true, Instant::now() + write_timeout) {
        Ok(()) => Next::CloseAfterError,
        Err(e) => {
            note_write_error(ctl, &e);
            Next::Drop
        }
    }
}

/// A request that began but did not arrive in time: 408, then close.
fn timed_out(stream: &mut TcpStream, out: &mut Vec<u8>, ctl: &Control, write_timeout: Duration) -> Next {
    bump(&ctl.stats.timeouts);
    let resp = Response::error(408, "timeout", "the request did not arrive in time");
    match write_response(stream, out, resp, false, true, Instant::now() + write_timeout) {
        Ok(()) => Next::CloseAfterError,
        Err(_) => Next::Drop,
    }
}

/// Changes only the lifetime of an emptied header array, keeping its allocation, and sizes
/// it to `len`. httparse's headers borrow the head buffer; the array is reused for every
/// request while that buffer is refilled, so the borrow must end between requests. Collecting
/// an emptied `Vec` through `into_iter().map()` into an element type of the same layout
/// reuses the allocation (std's in-place collection; the `header_array_is_reused` test checks
/// it), so this neither allocates nor needs `unsafe`.
fn relabel_headers<'x>(mut v: Vec<httparse::Header<'_>>, len: usize) -> Vec<httparse::Header<'x>> {
    v.clear();
    let mut v: Vec<httparse::Header<'x>> = v.into_iter().map(|_| httparse::EMPTY_HEADER).collect();
    v.resize(len, httparse::EMPTY_HEADER);
    v
}

/// Tries to parse the head received so far: `Some(head length)` when complete, `None` when
/// more is needed, or the error answer.
fn probe_head(
    buf: &[u8],
    store: &mut Vec<httparse::Header<'static>>,
    max_headers: usize,
) -> Result<Option<usize>, Response> {
    let mut headers = relabel_headers(std::mem::take(store), max_headers);
    let parsed = httparse::Request::new(&mut headers).parse(buf);
    *store = relabel_headers(headers, 0);
    match parsed {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(Response::error(431, "header_too_large", &format!("more than {max_headers} request headers")))
        }
        Err(e) => Err(Response::error(400, "bad_request", &format!("malformed request: {e}"))),
    }
}

/// One request from bytes to the bytes of its answer, without a socket: the head is checked
/// with a worker's limits and functions (`probe_head`, `framing`), the body is what follows
/// it, the handler answers and the head is rendered, as a worker would write it (a body from
/// a file is left out). `None` while the bytes are not yet a whole request. This is what the
/// `http_request` fuzz target drives; unlike a worker it lets a handler's panic through, so
/// the fuzzer sees it.
pub fn answer(input: &[u8], handler: &dyn Handler, config: &HttpConfig) -> Option<Vec<u8>> {
    let limits = Limits::from(config);
    let mut out = Vec::new();
    let mut refuse = |resp: Response| {
        render_head(&mut out, &resp, true);
        out.extend_from_slice(resp.body.as_bytes());
        Some(std::mem::take(&mut out))
    };
    let head = &input[..input.len().min(limits.max_header_bytes)];
    let mut store = Vec::new();
    let head_len = match probe_head(head, &mut store, limits.max_headers) {
        Ok(Some(n)) => n,
        Ok(None) if head.len() == limits.max_header_bytes => {
            return refuse(Response::error(431, "header_too_large", "request head too large"))
        }
        Ok(None) => return None,
        Err(resp) => return refuse(resp),
    };
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    // The worker relies on this: the bytes that probed complete parse complete again.
    assert!(matches!(req.parse(&input[..head_len]), Ok(httparse::Status::Complete(n)) if n == head_len));
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        panic!("a complete request without method, target or version");
    };
    let f = match framing(req.headers, version, limits.max_body_bytes) {
        Ok(f) => f,
        Err(resp) => return refuse(resp),
    };
    let body = input.get(head_len..head_len + f.body_len)?;
    let (path, query) = split_target(target);
    let request = Request { method, path, query, body, headers: req.headers };
    let resp = handler.handle(&request);
    render_head(&mut out, &resp, !f.keep_alive);
    if method != "HEAD" && has_body(resp.status) {
        out.extend_from_slice(resp.body.as_bytes());
    }
    Some(out)
}

/// What the headers say about the body and the connection.
struct Framing {
    body_len: usize,
    keep_alive: bool,
    expect_continue: bool,
}

fn framing(headers: &[httparse::Header<'_>], version: u8, max_body: usize) -> Result<Framing, Response> {
    let mut length: Option<u64> = None;
    let (mut close, mut keep_alive) = (false, false);
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Response::error(
                411,
                "length_required",
                "chunked bodies are not accepted; send Content-Length",
            ));
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(h.value) else {
                return Err(Response::error(400, "bad_request", "invalid Content-Length"));
            };
            if length.is_some_and(|prev| prev != n) {
                return Err(Response::error(400, "bad_request", "conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(trim_ows) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    let declared = length.unwrap_or(0);
    if declared > max_body as u64 {
        // Refused on the declared number alone: nothing of this size is read or allocated.
        return Err(Response::error(
            413,
            "body_too_large",
            &format!("request body of {declared} bytes is larger than the limit of {max_body} bytes"),
        ));
    }
    Ok(Framing {
        // HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 only when asked.
        keep_alive: !close && (version >= 1 || keep_alive),
        body_len: declared as usize,
        // 100 Continue is an HTTP/1.1 thing; a 1.0 client would not understand it.
        expect_continue: expect_continue && version >= 1,
    })
}

/// Decimal digits only (no sign, no list); saturates so that a huge number is "too large"
/// rather than "invalid". None when not a number.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// A path shortened for a log line.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Writes one response; the body is left out for HEAD and for statuses that have none.
/// Takes the response by value so that a shared frame buffer is released the moment the
/// write is done.
fn write_response(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    resp: Response,
    head_only: bool,
    close: bool,
    deadline: Instant,
) -> io::Result<()> {
    render_head(out, &resp, close);
    let send_body = !head_only && has_body(resp.status) && !resp.body.is_empty();
    if let (Body::File(file, len), true) = (&resp.body, send_body) {
        write_all_by(stream, out, deadline)?;
        return stream_file(stream, out, file, *len, deadline.saturating_duration_since(Instant::now()));
    }
    let body = resp.body.as_bytes();
    if send_body && body.len() <= COALESCE_BYTES {
        out.extend_from_slice(body);
        write_all_by(stream, out, deadline)
    } else {
        write_all_by(stream, out, deadline)?;
        if send_body {
            write_all_by(stream, body, deadline)?;
        }
        Ok(())
    }
}

/// Chunk of a file body; each must be written within the write timeout.
const FILE_CHUNK: usize = 64 * 1024;

/// Sends exactly `len` bytes of `file`, reusing `buf` (the worker's output buffer, which
/// grows to [`FILE_CHUNK`] once). A file shorter than announced ends the connection: the
/// client sees a short body rather than a wrong one.
fn stream_file(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut file: &std::fs::File,
    len: u64,
    per_chunk: Duration,
) -> io::Result<()> {
    use std::io::Read as _;
    buf.resize(FILE_CHUNK, 0);
    let mut left = len;
    while left > 0 {
        let want = FILE_CHUNK.min(usize::try_from(left).unwrap_or(FILE_CHUNK));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter while being sent"));
        }
        write_all_by(stream, &buf[..n], Instant::now() + per_chunk.max(Duration::from_millis(100)))?;
        left -= n as u64;
    }
    Ok(())
}

/// 1xx, 204 and 304 never carry a body (nor Content-Length/Content-Type here).
fn has_body(status: u16) -> bool {
    !matches!(status, 100..=199 | 204 | 304)
}

/// Status line and headers into `out` (cleared first).
fn render_head(out: &mut Vec<u8>, resp: &Response, close: bool) {
    out.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    if has_body(resp.status) {
        let _ = write!(out, "Content-Type: {}\r\nContent-Length: {}\r\n", resp.content_type, resp.body.len());
    }
    out.extend_from_slice(if close { b"Connection: close\r\n" } else { b"Connection: keep-alive\r\n" });
    for (name, value) in &resp.headers {
        let owned = ["content-length", "connection", "transfer-encoding"].iter().any(|n| name.eq_ignore_ascii_case(n));
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if owned || !name_ok || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            // The value may carry client data; debug keeps a client from flooding the log.
            debug!("http: dropped response header {name:?}");
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of a status code.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, MutexGuard};

    /// Tests run one at a time: they count the process's `http-*` threads.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    const BIG: usize = 100_000;

    struct TestHandler {
        shared: Arc<Vec<u8>>,
    }

    impl Handler for TestHandler {
        fn handle(&self, req: &Request<'_>) -> Response {
            match req.path {
                "/panic" => panic!("test handler panics on purpose"),
                "/big" => {
                    let shared: Arc<dyn AsRef<[u8]> + Send + Sync> = self.shared.clone();
                    Response::new(200, "image/jpeg", Body::Shared(shared)).with_header("ETag", "\"7\"".into())
                }
                "/static" => Response::new(200, "text/plain", Body::Static(b"static bytes")),
                "/nocontent" => Response::new(204, "text/plain", Body::Static(b"ignored")),
                "/notmodified" => Response::new(304, "image/jpeg", Body::Empty).with_header("ETag", "\"7\"".into()),
                "/evil" => Response::new(200, "text/plain", Body::Empty)
                    .with_header("X-Evil", "a\r\nSet-Cookie: x=1".into())
                    .with_header("Content-Length", "999".into())
                    .with_header("X-Fine", "yes".into()),
                _ => Response::json(
                    200,
                    &serde_json::json!({
                        "method": req.method,
                        "path": req.path,
                        "query": req.query,
                        "body": String::from_utf8_lossy(req.body),
                        "x_test": req.header("x-TEST").map(|v| String::from_utf8_lossy(v).into_owned()),
                    }),
                ),
            }
        }
    }

    fn config() -> HttpConfig {
        HttpConfig {
            workers: 2,
            queue: 8,
            read_timeout_ms: 2_000,
            write_timeout_ms: 2_000,
            idle_timeout_ms: 5_000,
            max_header_bytes: 1024,
            max_headers: 8,
            max_body_bytes: 1024,
            ..HttpConfig::default()
        }
    }

    struct Running {
        server: Server,
        stop: Stop,
        shared: Arc<Vec<u8>>,
    }

    impl Running {
        fn addr(&self) -> SocketAddr {
            self.server.local_addr()
        }
        fn stats(&self) -> Arc<Stats> {
            self.server.stats()
        }
        fn finish(self) {
            self.stop.trigger();
            let t0 = Instant::now();
            self.server.join(Instant::now() + Duration::from_secs(2));
            assert!(t0.elapsed() < Duration::from_secs(3));
        }
    }

    fn start(cfg: HttpConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stop = Stop::new();
        let shared = Arc::new(vec![b'j'; BIG]);
        let handler = Arc::new(TestHandler { shared: Arc::clone(&shared) });
        let server = Server::start(listener, &cfg, handler, stop.clone()).unwrap();
        Running { server, stop, shared }
    }

    /// Polls `cond` until it holds or `within` passes.
    fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn http_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("http-"))
            .count()
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
        }
        fn error_code(&self) -> String {
            self.json()["error"]["code"].as_str().unwrap().to_string()
        }
    }

    /// A test client that keeps bytes read past one response for the next.
    struct Client {
        s: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        fn connect(addr: SocketAddr) -> Client {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Client { s, buf: Vec::new() }
        }

        fn send(&mut self, bytes: &[u8]) {
            self.s.write_all(bytes).unwrap();
        }

        fn fill(&mut self) -> usize {
            let mut chunk = [0u8; 16 * 1024];
            let n = self.s.read(&mut chunk).expect("read (5 s timeout)");
            self.buf.extend_from_slice(&chunk[..n]);
            n
        }

        /// One response; `head_only` for answers to HEAD.
        fn reply_to(&mut self, head_only: bool) -> Reply {
            loop {
                let mut hs = [httparse::EMPTY_HEADER; 32];
                let mut r = httparse::Response::new(&mut hs);
                if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                    let status = r.code.unwrap();
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    let len = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
                    let len = if head_only || !has_body(status) { 0 } else { len };
                    while self.buf.len() < n + len {
                        assert!(self.fill() > 0, "eof inside a body");
                    }
                    let body = self.buf[n..n + len].to_vec();
                    self.buf.drain(..n + len);
                    return Reply { status, headers, body };
                }
                assert!(self.fill() > 0, "eof before a response head: {:?}", String::from_utf8_lossy(&self.buf));
            }
        }

        fn reply(&mut self) -> Reply {
            self.reply_to(false)
        }

        /// True when the server closes the connection (EOF or reset) within `within`.
        fn closed_within(&mut self, within: Duration) -> bool {
            let deadline = Instant::now() + within;
            let mut chunk = [0u8; 1024];
            while Instant::now() < deadline {
                self.s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                match self.s.read(&mut chunk) {
                    Ok(0) => return true,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return true,
                }
            }
            false
        }
    }

    fn get(addr: SocketAddr, path: &str) -> Reply {
        let mut c = Client::connect(addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        c.reply()
    }

    #[test]
    fn get_keep_alive_and_pipelining() {
        let _g = serial();
        let srv = start(config());
        let mut c = Client::connect(srv.addr());
        c.send(b"GET /echo?a=1&b=%20 HTTP/1.1\r\nHost: t\r\nX-Test: hello\r\n\r\n");
        let r = c.reply();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let j = r.json();
        assert_eq!(
            (j["method"].as_str(), j["path"].as_str(), j["query"].as_str()),
            (Some("GET"), Some("/echo"), Some("a=1&b=%20"))
        );
        assert_eq!(j["x_test"], "hello");

        // Same connection, two requests in one write (the second with a body).
        c.send(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nPOST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(c.reply().json()["path"], "/one");
        let two = c.reply().json();
        assert_eq!((two["path"].as_str(), two["body"].as_str()), (Some("/two"), Some("hello")));

        // Connection: close is honoured.
        c.send(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(c.reply().header("connection"), Some("close"));
        assert!(c.closed_within(Duration::from_secs(1)));
        assert_eq!(srv.stats().requests.load(Ordering::Relaxed), 4);
        srv.finish();
    }

    #[test]
    fn http10_closes_unless_asked() {
        let _g = serial();
        let srv = start(config());
        let mut c = Client::connect(srv.addr());
        c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(c.reply().header("connection"), Some("keep-alive"));
        c.send(b"GET /b HTTP/1.0\r\n\r\n");
        assert_eq!(c.reply().header("connection"), Some("close"));
        assert!(c.closed_within(Duration::from_secs(1)));
        srv.finish();
    }

    #[test]
    fn post_body_in_pieces_and_expect_continue() {
        let _g = serial();
        let srv = start(config());
        let mut c = Client::connect(srv.addr());
        c.send(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
        c.s.flush().unwrap();
        c.send(b"56789");
        assert_eq!(c.reply().json()["body"], "0123456789");

        c.send(b"POST /q HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
        let cont = c.reply();
        assert_eq!(cont.status, 100);
        c.send(b"abc");
        assert_eq!(c.reply().json()["body"], "abc");
        srv.finish();
    }

    #[test]
    fn head_has_no_body_and_shared_bodies_are_released() {
        let _g = serial();
        let srv = start(config());
        let mut c = Client::connect(srv.addr());
        c.send(b"HEAD /big HTTP/1.1\r\n\r\n");
        let r = c.reply_to(true);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));
        assert_eq!(r.header("etag"), Some("\"7\""));
        // If the body had been sent, the next bytes would be it rather than a status line.
        c.send(b"GET /big HTTP/1.1\r\n\r\n");
        let r = c.reply();
        assert_eq!(r.body.len(), BIG);
        assert!(r.body.iter().all(|&b| b == b'j'));
        // The server's reference is gone once the write is done (the test and the handler
        // hold the other two).
        assert!(eventually(Duration::from_secs(1), || Arc::strong_count(&srv.shared) == 2));

        c.send(b"GET /static HTTP/1.1\r\n\r\nGET /nocontent HTTP/1.1\r\n\r\nGET /notmodified HTTP/1.1\r\n\r\nGET /evil HTTP/1.1\r\n\r\n");
        assert_eq!(c.reply().body, b"static bytes");
        let r = c.reply();
        assert_eq!((r.status, r.header("content-length"), r.body.len()), (204, None, 0));
        let r = c.reply();
        assert_eq!((r.status, r.header("content-length"), r.header("etag")), (304, None, Some("\"7\"")));
        let r = c.reply();
        assert_eq!((r.status, r.header("content-length"), r.header("x-fine")), (200, Some("0"), Some("yes")));
        assert!(r.header("x-evil").is_none() && r.header("set-cookie").is_none());
        srv.finish();
    }

    #[test]
    fn huge_content_length_is_413_at_once() {
        let _g = serial();
        let srv = start(config());
        let mut c = Client::connect(srv.addr());
        let t0 = Instant::now();
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n");
        let r = c.reply();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!((r.status, r.header("connection")), (413, Some("close")));
        assert_eq!(r.error_code(), "body_too_large");
        assert!(c.closed_within(Duration::from_secs(1)));
        // Just over the limit is refused too; 99999999999999999999999 saturates, still 413.
        let mut c = Client::connect(srv.addr());
        c.send(b"POST /u HTTP/1.1\r\nContent-Length: 1025\r\n\r\n");
        assert_eq!(c.reply().status, 413);
        let mut c = Client::connect(srv.addr());
        c.send(b"POST /u HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(c.reply().status, 413);
        // A client that sends the refused body anyway still reads its 413: the server reads
        // the rest away (bounded) before closing instead of resetting the connection.
        let mut c = Client::connect(srv.addr());
        let mut req = b"POST /u HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
        req.resize(req.len() + 100_000, b'b');
        c.send(&req);
        assert_eq!(c.reply().status, 413);
        assert_eq!(get(srv.addr(), "/alive").status, 200);
        assert_eq!(srv.stats().bad_requests.load(Ordering::Relaxed), 4);
        srv.finish();
    }

    #[test]
    fn chunked_is_411_and_bad_lengths_are_400() {
        let _g = serial();
        let srv = start(config());
        let mut c = Client::connect(srv.addr());
        c.send(b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let r = c.reply();
        assert_eq!((r.status, r.error_code().as_str()), (411, "length_required"));
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("send Content-Length"));
        assert!(c.closed_within(Duration::from_secs(1)));
        for bad in [
            "Content-Length: abc\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 1\r\nContent-Length: 2\r\n",
            "Content-Length: 1, 1\r\n",
        ] {
            let mut c = Client::connect(srv.addr());
            c.send(format!("POST /u HTTP/1.1\r\n{bad}\r\nx").as_bytes());
            assert_eq!(c.reply().status, 400, "{bad}");
        }
        // Identical duplicates are fine.
        let mut c = Client::connect(srv.addr());
        c.send(b"POST /u HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(c.reply().json()["body"], "x");
        srv.finish();
    }

    #[test]
    fn oversized_heads_are_431() {
        let _g = serial();
        let srv = start(config());
        // Too many headers (max_headers = 8).
        let mut c = Client::connect(srv.addr());
        let many: String = (0..9).map(|i| format!("X-H{i}: v\r\n")).collect();
        c.send(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
        let r = c.reply();
        assert_eq!((r.status, r.error_code().as_str()), (431, "header_too_large"));
        assert!(c.closed_within(Duration::from_secs(1)));
        // Exactly the limit is fine.
        let mut c = Client::connect(srv.addr());
        let eight: String = (0..8).map(|i| format!("X-H{i}: v\r\n")).collect();
        c.send(format!("GET / HTTP/1.1\r\n{eight}\r\n").as_bytes());
        assert_eq!(c.reply().status, 200);
        // Too big a head (max_header_bytes = 1024), with or without an end in sight.
        let mut c = Client::connect(srv.addr());
        c.send(format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(2000)).as_bytes());
        assert_eq!(c.reply().status, 431);
        // Empty lines before the request line, more than one head may have lines, arriving
        // one by one (each makes the server parse again): refused before the size limit.
        let mut c = Client::connect(srv.addr());
        c.s.set_nodelay(true).unwrap();
        for _ in 0..400 {
            if c.s.write_all(b"\r\n").is_err() || !c.buf.is_empty() || c.closed_within(Duration::from_millis(5)) {
                break;
            }
        }
        assert_eq!(c.reply().status, 431);
        srv.finish();
    }

    #[test]
    fn garbage_is_400() {
        let _g = serial();
        let srv = start(config());
        let mut c = Client::connect(srv.addr());
        c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n");
        let r = c.reply();
        assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
        assert!(c.closed_within(Duration::from_secs(1)));
        // A bad request line is answered as soon as the line is complete.
        let mut c = Client::connect(srv.addr());
        c.send(b"GET / HTTP/9.9\r\n");
        assert_eq!(c.reply().status, 400);
        let mut c = Client::connect(srv.addr());
        c.send(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n");
        assert_eq!(c.reply().status, 400);
        assert_eq!(get(srv.addr(), "/ok").status, 200);
        srv.finish();
    }

    #[test]
    fn slowloris_is_cut_off() {
        let _g = serial();
        let srv = start(HttpConfig { read_timeout_ms: 500, ..config() });
        let mut c = Client::connect(srv.addr());
        let t0 = Instant::now();
        c.send(b"GET / HTTP/1.1\r\nX-Slow: ");
        let mut closed = false;
        while t0.elapsed() < Duration::from_millis(1500) {
            if c.s.write_all(b"a").is_err() || c.closed_within(Duration::from_millis(100)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "still open after {:?}", t0.elapsed());
        assert!(t0.elapsed() < Duration::from_millis(1500));
        assert!(String::from_utf8_lossy(&c.buf).starts_with("HTTP/1.1 408 "), "{:?}", String::from_utf8_lossy(&c.buf));
        assert_eq!(srv.stats().timeouts.load(Ordering::Relaxed), 1);
        srv.finish();
    }

    #[test]
    fn full_queue_answers_503() {
        let _g = serial();
        let srv = start(HttpConfig { workers: 1, queue: 1, read_timeout_ms: 5_000, ..config() });
        let stats = srv.stats();
        // A holds the only worker with a head that is slow to arrive.
        let mut a = Client::connect(srv.addr());
        a.send(b"GET /a HTTP/1.1\r\n");
        assert!(eventually(Duration::from_secs(2), || stats.connections_active.load(Ordering::Relaxed) == 1));
        // B takes the only queue place.
        let mut b = Client::connect(srv.addr());
        assert!(eventually(Duration::from_secs(2), || stats.connections_accepted.load(Ordering::Relaxed) == 2));
        // C finds the queue full.
        let mut c = Client::connect(srv.addr());
        let r = c.reply();
        assert_eq!((r.status, r.header("retry-after"), r.header("connection")), (503, Some("1"), Some("close")));
        assert_eq!(r.error_code(), "busy");
        assert_eq!(r.json()["error"]["message"], "server busy: 1 connections queued; try again");
        assert!(c.closed_within(Duration::from_secs(1)));
        assert_eq!(stats.connections_rejected.load(Ordering::Relaxed), 1);
        // A completes; since B waits, A is told to close (fairness).
        a.send(b"Host: t\r\n\r\n");
        let r = a.reply();
        assert_eq!((r.status, r.header("connection")), (200, Some("close")));
        assert!(a.closed_within(Duration::from_secs(1)));
        b.send(b"GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(b.reply().json()["path"], "/b");
        srv.finish();
    }

    #[test]
    fn idle_keep_alive_makes_room_for_queued_clients() {
        let _g = serial();
        let srv = start(HttpConfig { workers: 1, queue: 4, idle_timeout_ms: 10_000, ..config() });
        let mut a = Client::connect(srv.addr());
        a.send(b"GET /a HTTP/1.1\r\n\r\n");
        assert_eq!(a.reply().header("connection"), Some("keep-alive"));
        let t0 = Instant::now();
        let mut b = Client::connect(srv.addr());
        b.send(b"GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(b.reply().status, 200);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(a.closed_within(Duration::from_secs(1)));
        srv.finish();
    }

    #[test]
    fn idle_connection_times_out() {
        let _g = serial();
        let srv = start(HttpConfig { idle_timeout_ms: 300, ..config() });
        let mut a = Client::connect(srv.addr());
        a.send(b"GET /a HTTP/1.1\r\n\r\n");
        assert_eq!(a.reply().status, 200);
        let t0 = Instant::now();
        assert!(a.closed_within(Duration::from_secs(2)));
        assert!(t0.elapsed() >= Duration::from_millis(250), "{:?}", t0.elapsed());
        srv.finish();
    }

    #[test]
    fn thread_count_stays_fixed_under_load() {
        let _g = serial();
        let baseline = http_threads();
        let srv = start(HttpConfig { workers: 4, queue: 32, ..config() });
        assert!(eventually(Duration::from_secs(2), || http_threads() == baseline + 5));
        let mut clients: Vec<TcpStream> = (0..200)
            .map(|_| {
                let s = TcpStream::connect(srv.addr()).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            })
            .collect();
        for s in &mut clients {
            // A rejected connection may already be closed: a failed write is fine.
            let _ = s.write_all(b"GET /load HTTP/1.1\r\nConnection: close\r\n\r\n");
        }
        assert_eq!(http_threads(), baseline + 5);
        let (mut ok, mut busy, mut other) = (0, 0, 0);
        for s in &mut clients {
            let mut text = Vec::new();
            let _ = s.read_to_end(&mut text);
            match text.get(..12) {
                Some(b"HTTP/1.1 200") => ok += 1,
                Some(b"HTTP/1.1 503") => busy += 1,
                _ => other += 1,
            }
        }
        assert_eq!(ok + busy + other, 200);
        assert!(ok >= 4, "ok {ok} busy {busy} other {other}");
        assert_eq!(other, 0, "ok {ok} busy {busy} other {other}");
        assert_eq!(http_threads(), baseline + 5);
        let stats = srv.stats();
        assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 200);
        assert_eq!(stats.connections_rejected.load(Ordering::Relaxed), busy);
        srv.finish();
        assert_eq!(http_threads(), baseline);
    }

    #[test]
    fn panicking_handler_answers_500_and_worker_survives() {
        let _g = serial();
        let srv = start(HttpConfig { workers: 1, ..config() });
        let mut c = Client::connect(srv.addr());
        c.send(b"GET /panic HTTP/1.1\r\n\r\n");
        let r = c.reply();
        assert_eq!((r.status, r.error_code().as_str()), (500, "internal"));
        // Same connection, same (only) worker.
        c.send(b"GET /after HTTP/1.1\r\n\r\n");
        assert_eq!(c.reply().json()["path"], "/after");
        assert_eq!(get(srv.addr(), "/again").status, 200);
        assert_eq!(srv.stats().handler_panics.load(Ordering::Relaxed), 1);
        srv.finish();
    }

    #[test]
    fn stop_and_join_finish_quickly() {
        let _g = serial();
        let baseline = http_threads();
        let srv = start(HttpConfig { workers: 3, read_timeout_ms: 60_000, idle_timeout_ms: 60_000, ..config() });
        // Keep every worker busy in a different way: a slow head, a silent fresh connection,
        // idle keep-alive. The idle one comes last: an idle keep-alive connection gives way
        // while another waits in the queue, so it must not see the others queued.
        let stats = srv.stats();
        let mut slow = Client::connect(srv.addr());
        slow.send(b"GET / HTTP/1.1\r\nX-");
        let _silent = Client::connect(srv.addr());
        assert!(eventually(Duration::from_secs(2), || stats.connections_active.load(Ordering::Relaxed) == 2));
        let mut idle = Client::connect(srv.addr());
        idle.send(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(idle.reply().status, 200);
        assert!(eventually(Duration::from_secs(2), || stats.connections_active.load(Ordering::Relaxed) == 3));
        let addr = srv.addr();
        let t0 = Instant::now();
        srv.stop.trigger();
        srv.server.join(Instant::now() + Duration::from_secs(2));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(http_threads(), baseline);
        // The listener is closed and the held connections are closed.
        assert!(TcpStream::connect(addr).is_err());
        assert!(idle.closed_within(Duration::from_secs(1)));
        assert!(slow.closed_within(Duration::from_secs(1)));
    }

    #[test]
    fn join_works_without_the_stop_token_and_on_unspecified_addresses() {
        let _g = serial();
        let baseline = http_threads();
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let handler: Arc<dyn Handler> = Arc::new(|_: &Request<'_>| Response::error(404, "not_found", "nothing here"));
        let server = Server::start(listener, &config(), handler, Stop::new()).unwrap();
        let port = server.local_addr().port();
        let r = get(SocketAddr::from(([127, 0, 0, 1], port)), "/x");
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
        let t0 = Instant::now();
        server.join(Instant::now() + Duration::from_secs(2));
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(http_threads(), baseline);
    }

    #[test]
    fn header_array_is_reused() {
        let mut store: Vec<httparse::Header<'static>> = vec![httparse::EMPTY_HEADER; 16];
        let ptr = store.as_ptr() as usize;
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\n".to_vec();
        for _ in 0..3 {
            let mut hs = relabel_headers(std::mem::take(&mut store), 16);
            assert_eq!(httparse::Request::new(&mut hs).parse(&buf).unwrap(), httparse::Status::Complete(buf.len()));
            store = relabel_headers(hs, 0);
            assert_eq!((store.as_ptr() as usize, store.capacity()), (ptr, 16));
        }
    }

    #[test]
    fn request_helpers() {
        let hs = [httparse::Header { name: "If-None-Match", value: b"\"3\"" }];
        let r = Request::new("GET", "/a/b?x=1?y", &hs, b"");
        assert_eq!((r.path, r.query), ("/a/b", "x=1?y"));
        assert_eq!(r.header("if-none-match"), Some(&b"\"3\""[..]));
        assert_eq!(r.header("etag"), None);
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"+1"), None);
        let e = Response::error(409, "conflict", "already \"running\"");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(e.body.as_bytes()).unwrap()["error"]["message"],
            "already \"running\""
        );
        for s in [200, 202, 204, 304, 400, 401, 404, 405, 408, 409, 411, 413, 429, 431, 500, 503] {
            assert_ne!(reason(s), "Unknown", "{s}");
        }
    }
}
