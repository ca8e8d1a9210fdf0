//! The stop token: shutdown as an input handed to every thread.
//!
//! One [`Stop`] is cloned into each thread. Triggering it sets a flag (for loops that poll)
//! and disconnects a channel (for threads that block in `select!`/`recv_timeout`, which wake
//! at once). SIGTERM and SIGINT only set an atomic flag (async-signal-safe); the main thread
//! notices it and triggers the token.
//!
//! The panic policy, in one place: a core thread or task that panics, cannot start, or ends
//! while the service runs calls [`Stop::fail`] (directly, or through the [`Stop::guard`] it
//! holds). That records the first
//! [`Failure`] and triggers the token: every thread winds down in order, `/healthz` answers 503,
//! the jobs are left as they were in the journal (the restart resumes them, as after a kill -9)
//! and the process exits 1, which systemd's `Restart=on-failure` acts on. Work done on behalf
//! of one client (an HTTP handler, one export) catches its own panic instead, answers or fails
//! that one piece of work, counts it, and the service goes on.

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
    /// The first failure, if the service is stopping because something broke.
    failure: Mutex<Option<Failure>>,
}

/// What broke in a core thread or task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broke {
    /// It panicked.
    Panicked,
    /// It could not start (a thread not spawned, an encoder not created).
    NotStarted,
    /// It ended while the service was still running.
    Ended,
}

/// Why the service stops on its own: the first core thread or task that broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The thread's (or task's) name, e.g. `enc0-cam0`, `mqtt (network task)`.
    pub thread: String,
    /// What happened to it.
    pub what: Broke,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.what {
            Broke::Panicked => "panicked",
            Broke::NotStarted => "could not start",
            Broke::Ended => "ended unexpectedly",
        };
        write!(f, "thread {} {what}", self.thread)
    }
}

impl Stop {
    /// A token that has not been triggered.
    pub fn new() -> Stop {
        let (tx, rx) = channel::bounded(0);
        let inner = Inner { flag: AtomicBool::new(false), rx, tx: Mutex::new(Some(tx)), failure: Mutex::new(None) };
        Stop { inner: Arc::new(inner) }
    }

    /// Asks every holder to stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Stops the service because `thread` broke: the first failure is kept (later ones are
    /// only logged), then the token is triggered. The process then exits 1.
    pub fn fail(&self, thread: &str, what: Broke) {
        let failure = Failure { thread: thread.to_string(), what };
        // Recorded before it is logged: whoever reads the line finds /healthz failing already.
        self.inner.failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(failure.clone());
        self.trigger();
        log::error!("{failure}; stopping the service (exit status 1, so that systemd restarts it)");
    }

    /// The first failure, if the service is stopping because something broke.
    pub fn failure(&self) -> Option<Failure> {
        self.inner.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A guard for the thread `name`: if the thread unwinds while holding it, or returns while
    /// the service still runs, the service fails ([`Stop::fail`] with [`Broke::Panicked`] or
    /// [`Broke::Ended`]). Hold it for the thread's whole life.
    pub fn guard(&self, name: &str) -> PanicGuard {
        PanicGuard { name: name.to_string(), stop: self.clone(), armed: true }
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

/// Fails the service when the thread holding it unwinds, or ends before the stop token is set
/// (see [`Stop::guard`]): a half-dead camjobd that still answers `/healthz` is worse than a
/// restart by systemd.
pub struct PanicGuard {
    name: String,
    stop: Stop,
    armed: bool,
}

impl PanicGuard {
    /// The thread ends by design (its owner closed it): nothing to report.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stop.fail(&self.name, Broke::Panicked);
        } else if self.armed && !self.stop.is_set() {
            self.stop.fail(&self.name, Broke::Ended);
        }
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
    fn the_first_failure_is_kept_and_a_guard_reports_a_panic() {
        let stop = Stop::new();
        assert_eq!(stop.failure(), None);
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let _guard = s.guard("worker");
            panic!("on purpose");
        });
        assert!(t.join().is_err());
        assert!(stop.is_set());
        stop.fail("later", Broke::NotStarted);
        assert_eq!(stop.failure(), Some(Failure { thread: "worker".into(), what: Broke::Panicked }));
        assert_eq!(stop.failure().unwrap().to_string(), "thread worker panicked");
        // A guard dropped without a panic once the service stops records nothing; dropped
        // while it runs (a core thread that returned early), it fails the service.
        let calm = Stop::new();
        let guard = calm.guard("calm");
        calm.trigger();
        drop(guard);
        assert!(calm.failure().is_none());
        let early = Stop::new();
        drop(early.guard("early"));
        assert_eq!(early.failure(), Some(Failure { thread: "early".into(), what: Broke::Ended }));
    }

    #[test]
    fn wait_times_out_when_not_triggered() {
        let stop = Stop::new();
        assert!(!stop.wait(Duration::from_millis(5)));
    }
}
