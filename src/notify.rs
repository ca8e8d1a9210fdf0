//! systemd's notify protocol, spoken directly (no libsystemd): datagrams of `KEY=value` lines
//! to the socket in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! `main` sends `READY=1` once the API listens, `STATUS=` lines a person sees in
//! `systemctl status`, `WATCHDOG=1` every half `$WATCHDOG_USEC` while the service's own
//! threads are alive, and `STOPPING=1` on the way out. Without `$NOTIFY_SOCKET` all of this
//! is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to systemd's notify socket.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when unset (not started by systemd with `Type=notify`).
    pub fn from_env() -> Option<io::Result<Notifier>> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        Some(Notifier::to(path.as_encoded_bytes()))
    }

    /// To a socket path, or `@name` for an abstract socket.
    pub fn to(path: &[u8]) -> io::Result<Notifier> {
        let addr = match path.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => {
                use std::os::unix::ffi::OsStrExt;
                SocketAddr::from_pathname(std::path::Path::new(std::ffi::OsStr::from_bytes(path)))?
            }
        };
        Ok(Notifier { sock: UnixDatagram::unbound()?, addr })
    }

    /// Sends one message (`READY=1`, `STATUS=...`, ...).
    pub fn send(&self, msg: &str) -> io::Result<()> {
        self.sock.send_to_addr(msg.as_bytes(), &self.addr).map(|_| ())
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, if it is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let guard = tempfile::tempdir().unwrap();
        let path = guard.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::to(path.as_os_str().as_encoded_bytes()).unwrap().send("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        std::fs::remove_file(&path).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("camjobd-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::to(format!("@{name}").as_bytes()).unwrap().send("WATCHDOG=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
