//! The open connections: the `http.max_connections` cap, and room made by evicting an idle one.
//!
//! A cap alone can be filled by sockets that never send a byte (a port scanner, a phone app
//! that opens sockets early): until the head timeout closes them, everyone else would get 503.
//! So a connection that is *idle* — waiting for a request head, the first or the next one — is
//! evicted to make room for a new one, the longest-idle first. Only when every connection is
//! busy (a request being answered, a stream being sent) is a new one refused. The table is
//! allocated once, `max_connections` long.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// One connection's state, shared by its task and the table.
pub struct Conn {
    /// Requests being answered (a response body not yet finished counts).
    busy: AtomicU32,
    /// When it last became idle (`clock::mono_ms`).
    idle_since: AtomicU64,
    /// Rung when the connection is evicted; its task ends.
    evict: Notify,
    /// The socket's descriptor (-1 until set), for [`Peer`].
    fd: AtomicI32,
}

impl Default for Conn {
    fn default() -> Self {
        Conn { busy: AtomicU32::new(0), idle_since: AtomicU64::new(0), evict: Notify::new(), fd: AtomicI32::new(-1) }
    }
}

impl Conn {
    /// Resolves when the connection has been evicted.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Remembers the connection's socket for its responses' bodies.
    pub fn set_peer(&self, sock: &impl AsRawFd) {
        self.fd.store(sock.as_raw_fd(), Relaxed);
    }

    /// The connection's socket, once set.
    pub fn peer(&self) -> Option<Peer> {
        let fd = self.fd.load(Relaxed);
        (fd >= 0).then_some(Peer { fd })
    }
}

/// A connection's socket as a response body may ask about it: how far the client has got with
/// what was written ([`crate::sys::tcp_progress`]). Valid while the connection lives, which is
/// as long as the body does: hyper drops a response body with its connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    fd: RawFd,
}

impl Peer {
    /// Bytes acknowledged so far and bytes still queued (`None`: not a TCP socket).
    pub fn progress(&self) -> Option<crate::sys::TcpProgress> {
        crate::sys::tcp_progress(self.fd)
    }

    /// The address the client reached this server on.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        crate::sys::local_addr(self.fd)
    }
}

/// The longest [`grace`].
const MAX_GRACE: Duration = Duration::from_secs(600);
/// The slowest reading [`grace`] allows for.
const FLOOR_BYTES_PER_S: u64 = 1024;

/// How long a client that just took `step` bytes may then take nothing before it is dropped:
/// `base` (`http.write_timeout_ms`), or as long as those bytes last it at 1 KiB/s, up to 10
/// minutes. TCP acknowledges in steps (a receive window reopens only once its reader has made
/// room), and `curl --limit-rate` reads all its socket holds at once, then pauses until its
/// average is down: a reader taking 20 KB/s can go 30 s between acknowledgements of 600 KB.
pub fn grace(step: u64, base: Duration) -> Duration {
    base.max(Duration::from_secs(step / FLOOR_BYTES_PER_S).min(MAX_GRACE))
}

/// Marks a connection busy until dropped (held by the response body).
pub struct Busy(Arc<Conn>);

impl Busy {
    /// The connection starts answering a request.
    pub fn new(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Relaxed);
        Busy(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(crate::clock::mono_ms(), Relaxed);
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

/// The table of open connections.
pub struct Conns {
    open: Mutex<Vec<(u64, Arc<Conn>)>>,
    max: usize,
    next_id: AtomicU64,
}

/// What [`Conns::admit`] did.
pub enum Admission {
    /// A place was free.
    Admitted(Place),
    /// An idle connection was evicted to make room.
    Evicted(Place),
    /// Every connection is busy.
    Full,
}

/// A connection's place in the table; freed on drop.
pub struct Place {
    conns: Arc<Conns>,
    id: u64,
    /// The connection's state.
    pub conn: Arc<Conn>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = open.iter().position(|(id, _)| *id == self.id) {
            open.swap_remove(i);
        }
    }
}

impl Conns {
    /// A table for `max` connections.
    pub fn new(max: usize) -> Arc<Conns> {
        let max = max.max(1);
        Arc::new(Conns { open: Mutex::new(Vec::with_capacity(max)), max, next_id: AtomicU64::new(1) })
    }

    /// Connections in the table now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for a new connection: a free one, or one made by evicting the longest-idle
    /// connection, or `Full`.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let conn = Arc::new(Conn::default());
        conn.idle_since.store(crate::clock::mono_ms(), Relaxed);
        let id = self.next_id.fetch_add(1, Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        if open.len() >= self.max {
            let idle = open
                .iter()
                .enumerate()
                .filter(|(_, (_, c))| c.busy.load(Relaxed) == 0)
                .min_by_key(|(_, (_, c))| c.idle_since.load(Relaxed))
                .map(|(i, _)| i);
            let Some(i) = idle else { return Admission::Full };
            let (_, old) = open.swap_remove(i);
            // The task sees it at its next poll (or at once if it is waiting).
            old.evict.notify_one();
            evicted = true;
        }
        open.push((id, Arc::clone(&conn)));
        drop(open);
        let place = Place { conns: Arc::clone(self), id, conn };
        if evicted {
            Admission::Evicted(place)
        } else {
            Admission::Admitted(place)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(a: Admission) -> Place {
        match a {
            Admission::Admitted(p) | Admission::Evicted(p) => p,
            Admission::Full => panic!("full"),
        }
    }

    #[test]
    fn the_longest_idle_makes_room_and_busy_ones_never_do() {
        let conns = Conns::new(2);
        let a = place(conns.admit());
        let b = place(conns.admit());
        assert_eq!(conns.len(), 2);
        // b is busy: a (idle) is evicted for c.
        let busy_b = Busy::new(&b.conn);
        let c = match conns.admit() {
            Admission::Evicted(p) => p,
            _ => panic!("expected an eviction"),
        };
        assert_eq!(conns.len(), 2);
        // a's task would now end; dropping its place does not remove anyone else.
        drop(a);
        assert_eq!(conns.len(), 2);
        // b and c busy: full.
        let busy_c = Busy::new(&c.conn);
        assert!(matches!(conns.admit(), Admission::Full));
        drop(busy_b);
        assert!(matches!(conns.admit(), Admission::Evicted(_)), "b is idle again");
        drop(busy_c);
        drop((b, c));
        assert!(conns.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_evicted_connection_is_told() {
        let conns = Conns::new(1);
        let a = place(conns.admit());
        let _b = place(conns.admit());
        tokio::time::timeout(std::time::Duration::from_secs(1), a.conn.evicted()).await.expect("told");
    }

    #[test]
    fn grace_grows_with_the_last_burst_within_bounds() {
        let base = Duration::from_secs(5);
        assert_eq!(grace(0, base), base);
        assert_eq!(grace(4 << 10, base), base, "a small step keeps the write timeout");
        assert_eq!(grace(600_000, base), Duration::from_secs(585));
        assert_eq!(grace(u64::MAX, base), MAX_GRACE);
        assert_eq!(grace(0, Duration::from_secs(900)), Duration::from_secs(900), "never below the write timeout");
    }
}
