//! The RTSP server: each camera with `video` at `rtsp://HOST:PORT/<camera>`, H.264 over RTP
//! (RFC 6184), for go2rtc, Frigate, MediaMTX, Home Assistant, NVRs, ffmpeg, GStreamer and VLC.
//!
//! RTP goes interleaved in the RTSP connection (RFC 2326 10.12) or, with `rtsp.udp`, over UDP
//! from a port pair per session to the RTSP peer's own address (never elsewhere).
//!
//! One `rtsp` thread runs a small tokio runtime; every connection is a task on it, never a
//! thread, and at most `rtsp.max_clients` are open. Requests are parsed with `rtsp-types`. A
//! playing client reads the camera's ring of access units (encode once, for every client),
//! starting at a keyframe, and packetizes into its own buffer, allocated at SETUP; a client that
//! falls behind the ring starts again at the newest keyframe (counted), and one that takes
//! nothing for the session timeout is dropped. Nothing here ever waits on capture, and capture
//! never waits on it.
//!
//! - `conn`: one connection: requests, the session, the RTP it sends.
//! - `sdp`: the session description.
//! - `auth`: Digest and Basic, when `http.protect_reads` guards the token.

mod auth;
mod conn;
mod sdp;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::h264::stage::Video;
use crate::shutdown::{Stop, Worker};

/// A client silent for this long (no request, no RTCP) is dropped; announced in `Session:`.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// A camera the server serves.
pub struct Camera {
    /// The path: `/<name>`.
    pub name: String,
    /// Its H.264.
    pub video: Arc<Video>,
}

/// Counters, for `/api/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Where the server listens (the port the kernel chose for `:0`), once it does.
    pub bound: std::sync::OnceLock<SocketAddr>,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Sessions playing now.
    pub playing: AtomicU64,
    /// Connections refused at `max_clients`.
    pub refused: AtomicU64,
    /// RTP packets and bytes sent, all clients together.
    pub packets: AtomicU64,
    /// See `packets`.
    pub bytes: AtomicU64,
    /// RTP packets not sent to UDP clients (the socket's buffer was full, or the client's
    /// port closed).
    pub packets_dropped: AtomicU64,
    /// Connections whose task panicked (a bug: each is logged).
    pub panics: AtomicU64,
    /// Access units a client skipped because it fell behind the ring.
    pub skipped: AtomicU64,
}

impl Stats {
    /// The `rtsp` object of `/api/status`.
    pub fn to_json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Relaxed);
        serde_json::json!({
            "bind": self.bound.get().map(|a| a.to_string()),
            "connections": g(&self.connections),
            "playing": g(&self.playing),
            "refused": g(&self.refused),
            "packets": g(&self.packets),
            "bytes": g(&self.bytes),
            "skipped": g(&self.skipped),
            "packets_dropped": g(&self.packets_dropped),
            "panics": g(&self.panics),
        })
    }
}

/// What every connection needs.
struct Ctx {
    cameras: Vec<Camera>,
    stats: Arc<Stats>,
    max_clients: u64,
    local: SocketAddr,
    /// The token a client must prove (`http.token` with `protect_reads`).
    token: Option<String>,
    /// Offer RTP over UDP (`rtsp.udp`).
    udp: bool,
}

/// Starts the `rtsp` thread on `listener` (bound already). It serves until `stop`.
pub fn start(
    listener: TcpListener,
    cameras: Vec<Camera>,
    max_clients: usize,
    token: Option<String>,
    udp: bool,
    stats: Arc<Stats>,
    stop: Stop,
) -> std::io::Result<Worker> {
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build()?;
    let _ = stats.bound.set(local);
    let ctx = Arc::new(Ctx { cameras, stats, max_clients: max_clients as u64, local, token, udp });
    let guard = stop.guard("rtsp");
    Worker::spawn("rtsp", move || {
        let _guard = guard;
        let served = rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            log::info!("rtsp: serving rtsp://{local}/<camera>");
            accept(listener, ctx, &stop).await;
            Ok::<(), std::io::Error>(())
        });
        if let Err(e) = served {
            log::error!("rtsp: cannot serve: {e}");
        }
        rt.shutdown_timeout(Duration::from_millis(300));
    })
}

async fn accept(listener: tokio::net::TcpListener, ctx: Arc<Ctx>, stop: &Stop) {
    // The connections' tasks, joined here so that a panic in one is seen (tokio would swallow
    // it): counted and logged; the client is cut, the others go on.
    let mut tasks = tokio::task::JoinSet::new();
    let quiet = crate::logging::Quiet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        ctx.stats.panics.fetch_add(1, Relaxed);
                        quiet.error(format_args!("rtsp: a connection's task panicked (the client was cut): {e}"));
                    }
                }
                continue;
            }
        };
        let Ok((sock, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(75)).await;
            continue;
        };
        let stats = &ctx.stats;
        let open = stats.connections.fetch_add(1, Relaxed);
        if open >= ctx.max_clients {
            stats.connections.fetch_sub(1, Relaxed);
            log::debug!("rtsp: {peer}: refused, {open} connections open (rtsp.max_clients)");
            stats.refused.fetch_add(1, Relaxed);
            tasks.spawn(conn::refuse(sock));
            continue;
        }
        let open = Open(Arc::clone(stats));
        let stop = stop.clone();
        tasks.spawn(conn::serve(sock, peer, Arc::clone(&ctx), stop, open));
    }
}

/// Holds one place in `connections` until dropped.
struct Open(Arc<Stats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}
