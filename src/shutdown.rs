//! The stop token: shutdown as an input handed to every thread.
//!
//! One [`Stop`] is cloned into each thread. Triggering it sets a flag (for loops that poll)
//! and disconnects a channel (for threads that block in `select!`/`recv_timeout`, which wake
//! at once). SIGTERM and SIGINT only set an atomic flag (async-signal-safe); the main thread
//! notices it and triggers the token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};

/// A cloneable stop token. Cheap to check; never reset once triggered.
#[derive(Clone)]
pub struct Stop {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set once, by `trigger`.
    flag: AtomicBool,
    /// Never receives a message; it disconnects when `tx` is dropped, waking every waiter.
    rx: Receiver<()>,
    /// Dropped by `trigger`.
    tx: Mutex<Option<Sender<()>>>,
}

impl Stop {
    /// A token that has not been triggered.
    pub fn new() -> Stop {
        let (tx, rx) = channel::bounded(0);
        Stop { inner: Arc::new(Inner { flag: AtomicBool::new(false), rx, tx: Mutex::new(Some(tx)) }) }
    }

    /// Asks every holder to stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// True once triggered.
    pub fn is_set(&self) -> bool {
        self.inner.flag.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`; returns true (early) if the token is triggered.
    pub fn wait(&self, d: Duration) -> bool {
        match self.inner.rx.recv_timeout(d) {
            Err(RecvTimeoutError::Disconnected) => true,
            _ => self.is_set(),
        }
    }

    /// A receiver that becomes disconnected on stop, for use in `crossbeam::select!`.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.inner.rx
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

/// How a thread ended, as [`join_by`] saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// It returned.
    Returned,
    /// It ended by a panic.
    Panicked,
    /// It was still running at the deadline and was left behind.
    Late,
}

/// Joins `thread` if it finishes by `deadline`; otherwise leaves it running (a thread stuck in
/// a driver must not keep the process alive). Polls every 5 ms: joining blocks without one.
pub fn join_by<T>(thread: JoinHandle<T>, deadline: Instant) -> Joined {
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return Joined::Late;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match thread.join() {
        Ok(_) => Joined::Returned,
        Err(_) => Joined::Panicked,
    }
}

/// Registers SIGTERM and SIGINT to set the returned flag. The caller polls it and triggers a
/// [`Stop`]; a second signal while shutting down exits at once with status 1, the way people
/// expect Ctrl-C twice to work.
pub fn signal_flag() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        // Order matters: the conditional shutdown is registered first, so it sees the flag
        // as it was before this signal set it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_by_reports_returned_panicked_and_late() {
        let now = Instant::now;
        assert_eq!(join_by(std::thread::spawn(|| 1), now() + Duration::from_secs(5)), Joined::Returned);
        let panics = std::thread::Builder::new().spawn(|| panic!("on purpose")).unwrap();
        assert_eq!(join_by(panics, now() + Duration::from_secs(5)), Joined::Panicked);
        let stop = Stop::new();
        let s = stop.clone();
        let waits = std::thread::spawn(move || s.wait(Duration::from_secs(60)));
        let t0 = now();
        assert_eq!(join_by(waits, t0 + Duration::from_millis(50)), Joined::Late);
        assert!(t0.elapsed() < Duration::from_secs(5));
        stop.trigger();
    }
    use std::time::Instant;

    #[test]
    fn trigger_wakes_waiters_at_once() {
        let stop = Stop::new();
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            assert!(s2.wait(Duration::from_secs(30)));
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(20));
        stop.trigger();
        assert!(t.join().unwrap() < Duration::from_secs(5));
        assert!(stop.is_set());
        assert!(stop.wait(Duration::from_secs(30)));
    }

    #[test]
    fn wait_times_out_when_not_triggered() {
        let stop = Stop::new();
        assert!(!stop.wait(Duration::from_millis(5)));
    }
}
