//! Logging that never blocks the thread that logs.
//!
//! `simplelog` formats each record; the line goes into a bounded queue and the `log` thread
//! writes it to stderr. If stderr stalls (a full pipe, a stuck terminal, a slow journal) the
//! queue fills and further lines are dropped and counted, so the supervisor, the capture
//! loops and shutdown never wait for a reader of our logs.
//!
//! A line that a client or a broker can make us write at will goes through a [`Quiet`] site
//! instead, so that a flood cannot push the real state-change lines out of journald's rate
//! limit.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{self as channel, Receiver, Sender, TrySendError};

/// Lines waiting for stderr; beyond this they are dropped.
pub const QUEUE_LINES: usize = 1024;
/// Longest line kept; longer ones are cut.
const MAX_LINE: usize = 4096;

/// Lines dropped because the queue was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines held back by a [`Quiet`] site.
pub static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
/// A [`Quiet`] site logs at most one line per this.
pub const QUIET_FOR: Duration = Duration::from_secs(60);

/// Lines that never reached stderr: dropped at a full queue, or held back by a [`Quiet`] site.
pub fn lines_dropped() -> u64 {
    DROPPED.load(Relaxed) + SUPPRESSED.load(Relaxed)
}

/// A log site that may repeat without end (a hostile client, a broken broker): its first line
/// goes out; later ones within [`QUIET_FOR`] are only counted (in [`SUPPRESSED`]), and the
/// first line after that says how many were held back. One `static` per site.
pub struct Quiet {
    /// When the last line went out, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Quiet {
    /// A site that has logged nothing yet.
    pub const fn new() -> Quiet {
        Quiet { state: Mutex::new((None, 0)) }
    }
    /// A warning, unless one went out within the last minute.
    pub fn warn(&self, line: std::fmt::Arguments<'_>) {
        self.log(log::Level::Warn, line);
    }
    /// An error, unless one went out within the last minute.
    pub fn error(&self, line: std::fmt::Arguments<'_>) {
        self.log(log::Level::Error, line);
    }
    /// An info line, unless one went out within the last minute.
    pub fn info(&self, line: std::fmt::Arguments<'_>) {
        self.log(log::Level::Info, line);
    }
    fn log(&self, level: log::Level, line: std::fmt::Arguments<'_>) {
        if !log::log_enabled!(level) {
            return;
        }
        let now = Instant::now();
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.is_some_and(|t| now.duration_since(t) < QUIET_FOR) {
            g.1 += 1;
            SUPPRESSED.fetch_add(1, Relaxed);
            return;
        }
        let held = std::mem::take(&mut g.1);
        g.0 = Some(now);
        drop(g);
        if held == 0 {
            log::log!(level, "{line}");
        } else {
            log::log!(level, "{line} (and {held} more like this in the last {} s, not logged)", QUIET_FOR.as_secs());
        }
    }
}

impl Default for Quiet {
    fn default() -> Self {
        Quiet::new()
    }
}

/// The `Write` simplelog writes into: collects a line, queues it without blocking.
struct QueueWriter {
    line: Vec<u8>,
    tx: Sender<Vec<u8>>,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
            if b == b'\n' {
                let line = std::mem::replace(&mut self.line, Vec::with_capacity(128));
                if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
                    DROPPED.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes queued lines to stderr; after a drop, says how many lines were lost.
fn drain(rx: Receiver<Vec<u8>>) {
    let mut reported = 0;
    for line in rx {
        let mut err = io::stderr().lock();
        let _ = err.write_all(&line);
        let dropped = DROPPED.load(Relaxed);
        if dropped != reported {
            let _ = writeln!(err, "camjobd: {} log lines dropped (stderr was not being read)", dropped - reported);
            reported = dropped;
        }
    }
}

/// Installs the logger at `level` and starts the `log` thread. Returns a handle to wait for
/// the queue to drain at exit.
pub fn init(level: log::LevelFilter) -> io::Result<Flush> {
    let (tx, rx) = channel::bounded(QUEUE_LINES);
    let pending = rx.clone();
    std::thread::Builder::new().name("log".into()).spawn(move || drain(rx))?;
    // The MQTT client and TLS libraries log every packet at debug; camjobd logs what matters
    // of the link itself (connected, lost, refused and why).
    let cfg = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .add_filter_ignore_str("rumqttc")
        .add_filter_ignore_str("rustls")
        .build();
    let writer = QueueWriter { line: Vec::with_capacity(128), tx };
    simplelog::WriteLogger::init(level, cfg, writer).map_err(io::Error::other)?;
    Ok(Flush { pending })
}

/// Waits (bounded) for queued log lines to reach stderr.
pub struct Flush {
    pending: Receiver<Vec<u8>>,
}

impl Flush {
    /// Returns when the queue is empty or at `deadline`.
    pub fn wait(&self, deadline: Instant) {
        while !self.pending.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
