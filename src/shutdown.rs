//! The stop token: shutdown as an input handed to every thread.
//!
//! One [`Stop`] is cloned into each thread and task. Triggering it sets a flag (for a loop
//! that checks between pieces of work), disconnects a channel (for threads that block in
//! `select!`/`recv_timeout`, which wake at once) and wakes every [`Stop::cancelled`] future
//! (for async loops, which `select!` on it). Nothing sleeps to look at it. SIGTERM and SIGINT
//! trigger it from the `signals` thread ([`SignalThread`]).
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

use crossbeam_channel::{self as channel, Receiver, RecvTimeoutError, Sender};

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
    /// Woken by `trigger`, for `cancelled`.
    notify: tokio::sync::Notify,
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
        let inner = Inner {
            flag: AtomicBool::new(false),
            rx,
            tx: Mutex::new(Some(tx)),
            notify: tokio::sync::Notify::new(),
            failure: Mutex::new(None),
        };
        Stop { inner: Arc::new(inner) }
    }

    /// Asks every holder to stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.inner.notify.notify_waiters();
    }

    /// Completes once the token is triggered (at once if it already is): for async loops to
    /// `select!` on.
    pub async fn cancelled(&self) {
        let notified = self.inner.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a trigger between the two still wakes it.
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        notified.await;
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

    /// A receiver that becomes disconnected on stop, for use in `crossbeam_channel::select!`.
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

/// How a thread ended, as [`Worker::join_by`] saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// It returned.
    Returned,
    /// It ended by a panic.
    Panicked,
    /// It was still running at the deadline and was left behind.
    Late,
}

/// A named thread whose end can be waited for with a deadline. `JoinHandle::join` has none, so
/// the thread holds a channel's sender: its end (return or unwind) disconnects the channel.
pub struct Worker {
    handle: JoinHandle<()>,
    done: Receiver<()>,
}

impl Worker {
    /// Spawns `f` on a thread called `name`.
    pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<Worker> {
        let (tx, done) = channel::bounded::<()>(0);
        let handle = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            let _ends = tx;
            f()
        })?;
        Ok(Worker { handle, done })
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        self.handle.thread().name().unwrap_or("?")
    }

    /// True once the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Joins the thread if it ends by `deadline`; otherwise leaves it running (a thread stuck
    /// in a driver must not keep the process alive).
    pub fn join_by(self, deadline: Instant) -> Joined {
        if self.done.recv_deadline(deadline) == Err(channel::RecvTimeoutError::Timeout) {
            return Joined::Late;
        }
        match self.handle.join() {
            Ok(()) => Joined::Returned,
            Err(_) => Joined::Panicked,
        }
    }
}

/// SIGTERM and SIGINT, turned into a trigger of the stop token on the `signals` thread (a
/// signal handler can only set a flag; this thread blocks until a signal comes, so nothing
/// polls for it). A second signal while shutting down exits at once with status 1, the way
/// people expect Ctrl-C twice to work.
pub struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: Worker,
}

impl SignalThread {
    /// Installs the handlers and starts the `signals` thread, which triggers `stop`.
    pub fn start(stop: &Stop) -> std::io::Result<SignalThread> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let seen = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            // Order matters: the conditional shutdown is registered first, so it sees the flag
            // as it was before this signal set it.
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&seen))?;
            signal_hook::flag::register(sig, Arc::clone(&seen))?;
        }
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let handle = signals.handle();
        let stop = stop.clone();
        // Without this thread SIGTERM would do nothing: if it panics (or its iterator ends while
        // the service runs), the service fails like any core thread's loss.
        let guard = stop.guard("signals");
        let thread = Worker::spawn("signals", move || {
            let _guard = guard;
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: stopping");
                stop.trigger();
            }
        })?;
        Ok(SignalThread { handle, thread })
    }

    /// Ends the thread (the handlers stay: a second signal still exits at once).
    pub fn close(self, deadline: Instant) {
        self.handle.close();
        if self.thread.join_by(deadline) == Joined::Late {
            log::warn!("thread signals did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_by_reports_returned_panicked_and_late() {
        let now = Instant::now;
        let returns = Worker::spawn("returns", || ()).unwrap();
        assert_eq!(returns.name(), "returns");
        assert_eq!(returns.join_by(now() + Duration::from_secs(5)), Joined::Returned);
        let panics = Worker::spawn("panics", || panic!("on purpose")).unwrap();
        assert_eq!(panics.join_by(now() + Duration::from_secs(5)), Joined::Panicked);
        let stop = Stop::new();
        let s = stop.clone();
        let waits = Worker::spawn("waits", move || {
            s.wait(Duration::from_secs(60));
        })
        .unwrap();
        let t0 = now();
        assert_eq!(waits.join_by(t0 + Duration::from_millis(50)), Joined::Late);
        assert!(t0.elapsed() < Duration::from_secs(5));
        stop.trigger();
    }

    #[test]
    fn cancelled_completes_on_trigger_and_after_it() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let stop = Stop::new();
        let s = stop.clone();
        let waiter = std::thread::spawn(move || {
            rt.block_on(async {
                let t0 = Instant::now();
                // Not yet triggered: the future waits.
                let early = tokio::time::timeout(Duration::from_millis(30), s.cancelled()).await;
                assert!(early.is_err());
                s.cancelled().await;
                // Completed because of the trigger, not before it.
                assert!(s.is_set());
                t0.elapsed()
            })
        });
        std::thread::sleep(Duration::from_millis(100));
        stop.trigger();
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // Already triggered: completes at once.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(stop.cancelled());
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
