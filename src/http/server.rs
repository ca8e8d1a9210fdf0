//! The HTTP/1.1 server: sockets, limits and the runtime. Routing lives in [`super::routes`];
//! every request goes through the server's layers ([`layers`]: body limits, CORS, panic →
//! 500, HEAD) to a [`Handler`], which answers an `http::Response` ([`super::reply`]).
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
//! Errors the server produces itself use the API's JSON error shape ([`super::error`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, error, info, warn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub use super::conns::Peer;
use super::conns::{Admission, Conns, Place};
use super::error::{ApiError, Code};
use super::reply::{Request, Response, WithHeader};
pub use super::stats::{bump, Stats};
use crate::config::HttpConfig;
use crate::logging::Quiet;
use crate::shutdown::{Joined, Stop, Worker};

#[cfg(feature = "fuzzing")]
mod fuzz;
mod layers;

#[cfg(feature = "fuzzing")]
pub use fuzz::answer;

/// Pause after a failed accept (EMFILE): lets connections finish instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(75);
/// Accept errors are logged once a minute, with a count.
static ACCEPT_LOG: Quiet = Quiet::new();
/// A refused connection's 503 gets this long to go out before the socket is closed.
const REJECT_LINGER: Duration = Duration::from_millis(250);
/// Refusals lingering at once; more are closed at once (a flood must not hold descriptors).
pub const MAX_REJECTING: u64 = 64;
/// Send buffer asked for each connection: enough for a LAN client at full rate, small enough
/// that a client that stops reading blocks our writes (and meets the write timeout) soon.
pub const SEND_BUFFER: usize = 256 * 1024;

/// A boxed future answering one request.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// Answers requests on the runtime's threads. A handler must not block: waiting is done with
/// `.await`. A panic is caught and answered with 500.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. HEAD requests arrive with method HEAD and are answered like GET:
    /// the server sends the head and drops the body.
    fn handle(&self, req: Request) -> Answer<'_>;
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
    /// Refusals delivering their 503 now (at most [`MAX_REJECTING`]).
    rejecting: AtomicU64,
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
        let ctx = Arc::new(Ctx {
            handler,
            limits: limits.clone(),
            stats: Arc::clone(&stats),
            conns,
            rejecting: AtomicU64::new(0),
        });
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
                        if ctx.rejecting.fetch_add(1, Ordering::Relaxed) < MAX_REJECTING {
                            tokio::spawn(reject(sock, Rejecting(Arc::clone(&ctx))));
                        } else {
                            ctx.rejecting.fetch_sub(1, Ordering::Relaxed);
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
struct Rejecting(Arc<Ctx>);

impl Drop for Rejecting {
    fn drop(&mut self) {
        self.0.rejecting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection beyond the cap with 503 `busy` and closes it. hyper reads the request
/// head and frames the answer like every other one; the whole exchange is bounded by
/// [`REJECT_LINGER`], so a client that sends nothing or reads nothing is just closed.
async fn reject(sock: tokio::net::TcpStream, rejecting: Rejecting) {
    let limits = &rejecting.0.limits;
    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
        let head = req.method() == http::Method::HEAD;
        let busy = Response::from(ApiError::new(Code::Busy, "too many connections (http.max_connections); try again"))
            .with(RETRY_AFTER, HeaderValue::from_static("1"));
        std::future::ready(Ok::<_, Infallible>(layers::finish(busy, head, None, true)))
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
        async move { Ok::<_, Infallible>(layers::respond(&*ctx.handler, &ctx.limits, &ctx.stats, Some(&conn), req).await) }
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

#[cfg(test)]
mod tests;
