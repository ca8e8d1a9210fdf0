//! Logging that never blocks the thread that logs.
//!
//! `simplelog` formats each record; the line goes into a bounded queue and the `log` thread
//! writes it to stderr. If stderr stalls (a full pipe, a stuck terminal, a slow journal) the
//! queue fills and further lines are dropped and counted, so the supervisor, the capture
//! loops and shutdown never wait for a reader of our logs.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};

/// Lines waiting for stderr; beyond this they are dropped.
pub const QUEUE_LINES: usize = 1024;
/// Longest line kept; longer ones are cut.
const MAX_LINE: usize = 4096;

/// Lines dropped because the queue was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

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
