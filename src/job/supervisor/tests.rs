//! The supervisor driven by hand: commands and heartbeats in, records and orders out, time
//! from a manual clock. Backoff, the recovery budget, limits and command races are checked
//! exactly, without sleeping (the end-to-end tests only see them through timing).

use std::sync::atomic::Ordering::Release;

use serde_json::json;
use tokio::sync::oneshot;

use super::*;
use crate::config::Config;
use crate::job::capture::Orders;

struct Rig {
    sup: Supervisor,
    shared: Arc<Shared>,
    orders: Vec<Arc<Orders>>,
    clock: clock::Mono,
    _dir: tempfile::TempDir,
}

/// One synthetic camera (or `n`) with the given watchdog settings.
fn rig_n(n: usize, watchdog: serde_json::Value) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let cameras: Vec<_> =
        (0..n).map(|i| json!({"name": format!("cam{i}"), "autostart": false, "watchdog": watchdog})).collect();
    let config = Config::from_json(&json!({"storage": {"dir": dir.path()}, "cameras": cameras}).to_string()).unwrap();
    let (tx, _rx) = crossbeam_channel::bounded(COMMAND_QUEUE_FOR_TESTS);
    let shared = Arc::new(Shared::new(config, tx));
    let orders: Vec<_> = (0..n).map(|_| Arc::new(Orders::default())).collect();
    let (state_file, next) = StateFile::open(dir.path()).unwrap();
    let clock = clock::Mono::manual();
    let sup = Supervisor::new(Arc::clone(&shared), orders.clone(), state_file, next, &[]).with_clock(clock.clone());
    Rig { sup, shared, orders, clock, _dir: dir }
}

const COMMAND_QUEUE_FOR_TESTS: usize = 4;

fn rig(watchdog: serde_json::Value) -> Rig {
    rig_n(1, watchdog)
}

impl Rig {
    fn start(&mut self, limits: JobLimits) -> Reply {
        let (reply, mut rx) = oneshot::channel();
        self.sup.handle(Command::Start { camera: 0, limits, reply });
        rx.try_recv().expect("the supervisor answers a start at once")
    }

    fn stop(&mut self) -> Reply {
        let (reply, mut rx) = oneshot::channel();
        self.sup.handle(Command::Stop { camera: 0, reply });
        rx.try_recv().expect("the supervisor answers a stop at once")
    }

    fn fault(&mut self, reason: &str) {
        let rec = self.job();
        self.sup.handle(Command::Fault { camera: 0, job_id: rec.id, attempt: rec.attempt, reason: reason.into() });
    }

    fn job(&self) -> JobRecord {
        self.shared.cameras[0].job()
    }

    /// What capture would publish: this attempt of the current job is in `phase`.
    fn beat(&mut self, phase: Phase) {
        let rec = self.job();
        let hb = &self.shared.cameras[0].heartbeat;
        hb.job_id.store(rec.id, Release);
        hb.attempt.store(rec.attempt, Release);
        hb.set_phase(phase);
        self.sup.observe(0);
    }

    /// Starts a job and brings it to RUNNING.
    fn running(&mut self, limits: JobLimits) {
        self.start(limits).unwrap();
        self.beat(Phase::Streaming);
        assert_eq!(self.job().state, JobState::Running);
    }

    /// The reopen wait the last order asks for, on the supervisor's clock.
    fn backoff(&self) -> Duration {
        match self.orders[0].current().action {
            Action::Run { not_before: Some(t) } => t - self.clock.now(),
            other => panic!("expected a delayed reopen, got {other:?}"),
        }
    }

    fn events(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.shared.events.page(0, 1000, &mut out);
        out.iter().map(|e| e.message.to_string()).collect()
    }
}

#[test]
fn backoff_doubles_from_the_initial_wait_up_to_the_maximum() {
    let mut r = rig(json!({"max_recoveries": 10, "backoff_initial_ms": 100, "backoff_max_ms": 500}));
    r.running(JobLimits::default());
    let mut waits = Vec::new();
    for _ in 0..6 {
        r.fault("no frame for 2 s");
        assert_eq!(r.job().state, JobState::Recovering);
        waits.push(r.backoff().as_millis());
    }
    assert_eq!(waits, [100, 200, 400, 500, 500, 500]);
    let rec = r.job();
    assert_eq!((rec.recoveries, rec.attempt), (6, 6));
    assert_eq!(rec.reason.as_deref(), Some("no frame for 2 s; reopening in 0.5 s (recovery 6 of 10)"));
}

#[test]
fn the_budget_runs_out_without_a_stable_minute_and_the_job_fails() {
    let mut r = rig(json!({"max_recoveries": 2, "backoff_initial_ms": 100}));
    r.running(JobLimits::default());
    r.fault("stall");
    r.beat(Phase::Streaming); // recovered, but only for a moment
    assert_eq!(r.job().state, JobState::Running);
    r.clock.advance(STABLE_RUNNING - Duration::from_millis(1));
    r.beat(Phase::Streaming);
    r.fault("stall");
    r.beat(Phase::Streaming);
    r.fault("stall");
    let rec = r.job();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.reason.as_deref(), Some("stall; 2 recoveries failed"));
    assert_eq!(r.orders[0].current().action, Action::Halt);
}

#[test]
fn a_stable_minute_in_running_refills_the_budget() {
    let mut r = rig(json!({"max_recoveries": 2, "backoff_initial_ms": 100}));
    r.running(JobLimits::default());
    r.fault("stall");
    r.beat(Phase::Streaming);
    r.fault("stall");
    r.beat(Phase::Streaming);
    r.clock.advance(STABLE_RUNNING);
    r.beat(Phase::Streaming); // the supervisor notices the stable minute on a tick
    r.fault("stall");
    let rec = r.job();
    assert_eq!(rec.state, JobState::Recovering, "{:?}", rec.reason);
    assert!(rec.reason.as_deref().unwrap().ends_with("(recovery 1 of 2)"), "{:?}", rec.reason);
    assert_eq!(r.backoff(), Duration::from_millis(100), "the backoff starts over too");
}

#[test]
fn recovery_off_fails_at_the_first_fault() {
    let mut r = rig(json!({"max_recoveries": 0}));
    r.running(JobLimits::default());
    r.fault("camera unplugged");
    let rec = r.job();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.reason.as_deref(), Some("camera unplugged; recovery is off (max_recoveries 0)"));
}

#[test]
fn faults_about_an_attempt_or_job_that_is_over_are_ignored() {
    let mut r = rig(json!({"max_recoveries": 5, "backoff_initial_ms": 100}));
    r.running(JobLimits::default());
    let first = r.job();
    r.fault("stall");
    assert_eq!(r.job().attempt, 1);
    // The watchdog saw attempt 0 a second time before the reopen: not a second recovery.
    r.sup.handle(Command::Fault { camera: 0, job_id: first.id, attempt: 0, reason: "late".into() });
    assert_eq!((r.job().recoveries, r.job().attempt), (1, 1));
    // A fault about a job that was stopped and replaced.
    r.stop().unwrap();
    r.beat(Phase::Idle);
    assert_eq!(r.job().state, JobState::Stopped);
    r.start(JobLimits::default()).unwrap();
    r.sup.handle(Command::Fault { camera: 0, job_id: first.id, attempt: 1, reason: "old job".into() });
    let rec = r.job();
    assert_eq!((rec.state, rec.recoveries), (JobState::Starting, 0));
    // And about a job that is no longer capturing.
    r.stop().unwrap();
    r.fault("after the stop");
    assert_eq!(r.job().state, JobState::Stopping);
}

#[test]
fn a_second_start_and_a_second_stop_are_refused_with_the_reason() {
    let mut r = rig(json!({}));
    let Err(Refusal::Conflict(msg)) = r.stop() else { panic!("stop without a job must be refused") };
    assert_eq!(msg, "camera cam0 has no job to stop (IDLE)");
    let id = r.start(JobLimits::default()).unwrap().id.unwrap();
    let Err(Refusal::Conflict(msg)) = r.start(JobLimits::default()) else { panic!("second start accepted") };
    assert_eq!(msg, format!("camera cam0 already has job {id} in state STARTING; stop it first"));
    r.stop().unwrap();
    let Err(Refusal::Conflict(msg)) = r.stop() else { panic!("second stop accepted") };
    assert_eq!(msg, format!("job {id} is already stopping"));
    let Err(Refusal::Conflict(_)) = r.start(JobLimits::default()) else { panic!("start while STOPPING accepted") };
    r.beat(Phase::Idle);
    let Err(Refusal::Conflict(msg)) = r.stop() else { panic!("stop of a stopped job accepted") };
    assert_eq!(msg, format!("job {id} is not active (STOPPED)"));
    assert_eq!(r.start(JobLimits::default()).unwrap().id, Some(id + 1));
}

#[test]
fn a_stop_waits_for_the_camera_to_close_for_the_grace_period_only() {
    let mut r = rig(json!({}));
    r.running(JobLimits::default());
    r.stop().unwrap();
    assert_eq!(r.orders[0].current().action, Action::Halt);
    r.clock.advance(STOP_GRACE - Duration::from_millis(1));
    r.beat(Phase::Streaming); // the camera is still closing
    assert_eq!(r.job().state, JobState::Stopping);
    r.clock.advance(Duration::from_millis(1));
    r.sup.observe(0);
    let rec = r.job();
    assert_eq!(rec.state, JobState::Stopped);
    assert_eq!(rec.reason.as_deref(), Some("stop requested (the camera did not close within 2 s)"));

    // Closed in time: STOPPED on the next tick, with the plain reason.
    r.running(JobLimits::default());
    r.stop().unwrap();
    r.beat(Phase::Idle);
    assert_eq!(r.job().reason.as_deref(), Some("stop requested"));
    assert_eq!(r.job().state, JobState::Stopped);
}

#[test]
fn the_duration_limit_completes_a_running_job_and_fails_one_that_never_ran() {
    let limits = JobLimits { max_frames: None, max_duration_s: Some(10) };
    let mut r = rig(json!({"max_recoveries": 5}));
    r.running(limits);
    r.clock.advance(Duration::from_millis(9_999));
    r.beat(Phase::Streaming);
    assert_eq!(r.job().state, JobState::Running);
    r.clock.advance(Duration::from_millis(1));
    r.beat(Phase::Streaming);
    assert_eq!(r.job().state, JobState::Completed);
    assert_eq!(r.job().reason.as_deref(), Some("max_duration_s 10 reached"));

    r.start(limits).unwrap();
    r.beat(Phase::Opening);
    r.clock.advance(Duration::from_secs(10));
    r.beat(Phase::Opening);
    let rec = r.job();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.reason.as_deref(), Some("max_duration_s 10 reached while STARTING: the camera delivered no frame"));
    assert_eq!(r.orders[0].current().action, Action::Halt);
}

#[test]
fn the_frame_limit_completes_when_capture_says_done() {
    let mut r = rig(json!({}));
    r.running(JobLimits { max_frames: Some(30), max_duration_s: None });
    assert_eq!(r.orders[0].current().max_frames, Some(30));
    r.beat(Phase::Done);
    assert_eq!(r.job().state, JobState::Completed);
    assert_eq!(r.job().reason.as_deref(), Some("max_frames 30 reached"));
    let history = r.shared.history.list(Some("cam0"), 10);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].state, JobState::Completed);
}

#[test]
fn a_heartbeat_of_an_older_attempt_does_not_end_a_recovery() {
    let mut r = rig(json!({"max_recoveries": 5, "backoff_initial_ms": 100}));
    r.running(JobLimits::default());
    r.fault("stall");
    // Capture still publishes attempt 0 streaming (it has not applied the reopen order yet).
    let hb = &r.shared.cameras[0].heartbeat;
    hb.attempt.store(0, Release);
    hb.set_phase(Phase::Streaming);
    r.sup.observe(0);
    assert_eq!(r.job().state, JobState::Recovering);
    r.beat(Phase::Streaming);
    assert_eq!(r.job().state, JobState::Running);
    assert_eq!(r.job().reason, None, "RUNNING carries no reason");
    assert!(
        r.events().iter().any(|m| m.ends_with("RECOVERING → RUNNING: recovered after 1 recovery")),
        "{:?}",
        r.events()
    );
}

#[test]
fn each_camera_has_its_own_budget() {
    let mut r = rig_n(2, json!({"max_recoveries": 1, "backoff_initial_ms": 100}));
    for cam in 0..2 {
        let (reply, mut rx) = oneshot::channel();
        r.sup.handle(Command::Start { camera: cam, limits: JobLimits::default(), reply });
        rx.try_recv().unwrap().unwrap();
    }
    r.fault("stall");
    r.beat(Phase::Streaming);
    r.fault("stall");
    assert_eq!(r.job().state, JobState::Failed);
    let other = r.shared.cameras[1].job();
    r.sup.handle(Command::Fault { camera: 1, job_id: other.id, attempt: 0, reason: "stall".into() });
    assert_eq!(r.shared.cameras[1].job().state, JobState::Recovering);
    assert_ne!(r.shared.cameras[1].job().id, r.job().id, "job ids are per process, not per camera");
}
