//! The supervisor thread: the single writer of every camera's job state.
//!
//! Inputs: commands on a bounded channel (start and stop from HTTP, faults from the
//! watchdog) and, every [`TICK`], the capture threads' heartbeats (first good frame,
//! `max_frames` done, source closed after a stop). Outputs: the published [`JobRecord`]s,
//! events, and orders to the capture threads. Every state change goes through
//! [`lifecycle::next`], so an illegal transition cannot happen silently.

use std::sync::atomic::Ordering::Acquire;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::capture::{Action, Order, Orders};
use crate::clock;
use crate::events::{Event, EventKind};
use crate::lifecycle::{self, JobState, Trigger};
use crate::shutdown::Stop;
use crate::status::{CameraShared, Command, JobLimits, JobRecord, JobSummary, Phase, Refusal, Reply, Shared};
use crate::store::StateFile;

/// How often heartbeats are looked at; bounds how late RUNNING/COMPLETED/STOPPED show.
pub const TICK: Duration = Duration::from_millis(20);
/// How long a job must stay RUNNING before its recovery budget is refilled. A camera that
/// delivers a few frames and dies again (a crash loop) thus still ends in FAILED.
pub const STABLE_RUNNING: Duration = Duration::from_secs(60);
/// How long a stop waits for the camera to close before the job is marked STOPPED anyway.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Per-camera bookkeeping that is not published.
struct CamCtl {
    cam: Arc<CameraShared>,
    orders: Arc<Orders>,
    /// Recoveries since the job was last stable; reset after [`STABLE_RUNNING`] in RUNNING.
    failed_in_row: u32,
    /// When the job last entered RUNNING.
    running_since: Option<Instant>,
    /// When the current job started (for `max_duration_s`).
    started: Option<Instant>,
    /// When STOPPING began.
    stopping_since: Option<Instant>,
}

/// The supervisor's state; moved into its thread by [`Supervisor::run`].
pub struct Supervisor {
    shared: Arc<Shared>,
    cams: Vec<CamCtl>,
    state_file: StateFile,
    /// The id the next job gets.
    next_job_id: u64,
    /// Per camera: a job was running when the process last died, so a new one starts even
    /// without `autostart`.
    resume: Vec<bool>,
    /// Where `Instant`s come from: the system clock, or a manual one in the unit tests.
    clock: clock::Mono,
    /// Ids below this are on disk as used; reserving [`ID_BLOCK`] at a time keeps fsyncs
    /// (slow on SD cards, and wear) off most starts. A restart skips the unused rest.
    reserved_until: u64,
}

/// Job ids reserved per write of the state file.
pub const ID_BLOCK: u64 = 16;
/// The largest job id: 2^53 − 1, the largest integer a JavaScript client (the dashboard, Home
/// Assistant's templates) reads exactly. Ids never wrap: past it, starts are refused.
pub const MAX_JOB_ID: u64 = (1 << 53) - 1;

impl Supervisor {
    /// `orders[i]` is the mailbox of camera `i`'s capture thread.
    pub fn new(
        shared: Arc<Shared>,
        orders: Vec<Arc<Orders>>,
        state_file: StateFile,
        next_job_id: u64,
        past: &[Event],
    ) -> Supervisor {
        let resume = recover_history(&shared, past);
        let cams = shared
            .cameras
            .iter()
            .zip(orders)
            .map(|(cam, orders)| CamCtl {
                cam: Arc::clone(cam),
                orders,
                failed_in_row: 0,
                running_since: None,
                started: None,
                stopping_since: None,
            })
            .collect();
        Supervisor {
            shared,
            cams,
            state_file,
            next_job_id,
            reserved_until: next_job_id,
            resume,
            clock: clock::Mono::system(),
        }
    }

    /// Reads time from `clock` instead of the system's (tests drive backoff and budgets).
    pub fn with_clock(mut self, clock: clock::Mono) -> Supervisor {
        self.clock = clock;
        self
    }

    /// Serves commands until `stop`, then stops every active job and returns.
    pub fn run(mut self, commands: Receiver<Command>, stop: Stop) {
        for i in 0..self.cams.len() {
            if self.resume[i] {
                let _ = self.start(i, JobLimits::default(), "resuming after a restart");
            } else if self.cams[i].cam.config.autostart {
                let _ = self.start(i, JobLimits::default(), "autostart");
            }
        }
        loop {
            crossbeam_channel::select! {
                recv(commands) -> cmd => match cmd {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                },
                recv(stop.receiver()) -> _ => break,
                default(TICK) => {},
            }
            for i in 0..self.cams.len() {
                self.observe(i);
            }
            crate::status::Liveness::beat(&self.shared.liveness.supervisor);
        }
        match stop.failure() {
            Some(failure) => self.abandon(&failure),
            None => self.shutdown(),
        }
        // The store writes the journal's last lines once this is set.
        self.shared.liveness.supervisor_finished.trigger();
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start { camera, limits, reply } => {
                let _ = reply.send(self.start(camera, limits, "start requested"));
            }
            Command::Stop { camera, reply } => {
                let _ = reply.send(self.stop(camera, "stop requested"));
            }
            Command::Fault { camera, job_id, attempt, reason } => self.fault(camera, job_id, attempt, &reason),
        }
    }

    fn start(&mut self, i: usize, limits: JobLimits, why: &str) -> Reply {
        let ctl = &self.cams[i];
        let rec = ctl.cam.job();
        if rec.state.is_active() {
            return Err(Refusal::Conflict(format!(
                "camera {} already has job {} in state {}; stop it first",
                ctl.cam.name,
                rec.id,
                rec.state.as_str()
            )));
        }
        lifecycle::next(rec.state, Trigger::Start).map_err(|e| Refusal::Conflict(e.to_string()))?;
        let id = self.next_job_id;
        if id > MAX_JOB_ID {
            let msg = format!(
                "job ids are used up (the next would be {id}, the largest is {MAX_JOB_ID}); state.json in storage.dir was tampered with or is ancient: stop camjobd and move it away to count from 1 again"
            );
            self.shared.events.error(&ctl.cam.name, format_args!("{msg}"));
            return Err(Refusal::IdsExhausted(msg));
        }
        self.next_job_id += 1;
        if self.next_job_id > self.reserved_until {
            self.reserved_until = (id + ID_BLOCK).min(MAX_JOB_ID + 1);
            if let Err(e) = self.state_file.save(self.reserved_until) {
                // The job still runs; ids may repeat after a restart, and the event says so.
                self.shared.events.push(
                    EventKind::Error,
                    &ctl.cam.name,
                    Some(id),
                    None,
                    format_args!("{e}; job ids may repeat after a restart"),
                );
            }
        }
        let cfg = &ctl.cam.config;
        let max_frames = limits.max_frames.or(cfg.max_frames);
        let max_duration_s = limits.max_duration_s.or(cfg.max_duration_s);
        let now = clock::unix_now();
        *ctl.cam.job.lock().unwrap_or_else(|e| e.into_inner()) = JobRecord {
            id,
            state: JobState::Starting,
            reason: None,
            started_at: Some(now),
            ended_at: None,
            state_since: now,
            recoveries: 0,
            attempt: 0,
            max_frames,
            max_duration_s,
        };
        ctl.cam.history.note(JobState::Starting);
        self.shared.events.push_state(
            &ctl.cam.name,
            id,
            JobState::Starting,
            Some(why),
            format_args!("job {id} STARTING ({why}{})", limits_text(max_frames, max_duration_s)),
        );
        let ctl = &mut self.cams[i];
        ctl.failed_in_row = 0;
        ctl.running_since = None;
        ctl.started = Some(self.clock.now());
        ctl.stopping_since = None;
        ctl.orders.post(Order { job_id: id, attempt: 0, max_frames, action: Action::Run { not_before: None } });
        Ok(ctl.cam.view().job)
    }

    fn stop(&mut self, i: usize, why: &str) -> Reply {
        let rec = self.cams[i].cam.job();
        if !rec.state.is_capturing() {
            return Err(Refusal::Conflict(match rec.state {
                JobState::Stopping => format!("job {} is already stopping", rec.id),
                s if rec.id == 0 => format!("camera {} has no job to stop ({})", self.cams[i].cam.name, s.as_str()),
                s => format!("job {} is not active ({})", rec.id, s.as_str()),
            }));
        }
        self.transition(i, Trigger::StopRequested, Some(why.to_string()));
        let now = self.clock.now();
        let ctl = &mut self.cams[i];
        ctl.stopping_since = Some(now);
        post_halt(ctl, &rec);
        Ok(ctl.cam.view().job)
    }

    fn fault(&mut self, i: usize, job_id: u64, attempt: u32, reason: &str) {
        let rec = self.cams[i].cam.job();
        if rec.id != job_id || rec.attempt != attempt || !rec.state.is_capturing() {
            return; // about an attempt that is already over
        }
        let wd = self.cams[i].cam.config.watchdog.clone();
        let failed = self.cams[i].failed_in_row;
        if failed >= wd.max_recoveries {
            let why = if wd.max_recoveries == 0 {
                format!("{reason}; recovery is off (max_recoveries 0)")
            } else {
                format!("{reason}; {} failed", recoveries(failed))
            };
            self.transition(i, Trigger::GiveUp, Some(why));
            post_halt(&self.cams[i], &rec);
            return;
        }
        let n = failed + 1;
        let backoff_ms = wd.backoff_initial_ms.saturating_mul(1u64 << (n - 1).min(30)).min(wd.backoff_max_ms);
        let backoff = Duration::from_millis(backoff_ms);
        let attempt = rec.attempt + 1;
        {
            let mut g = self.cams[i].cam.job.lock().unwrap_or_else(|e| e.into_inner());
            g.recoveries += 1;
            g.attempt = attempt;
        }
        self.transition(
            i,
            Trigger::Fault,
            Some(format!(
                "{reason}; reopening in {:.1} s (recovery {n} of {})",
                backoff.as_secs_f64(),
                wd.max_recoveries
            )),
        );
        let not_before = self.clock.now() + backoff;
        let ctl = &mut self.cams[i];
        ctl.failed_in_row = n;
        ctl.running_since = None;
        ctl.orders.post(Order {
            job_id: rec.id,
            attempt,
            max_frames: rec.max_frames,
            action: Action::Run { not_before: Some(not_before) },
        });
    }

    /// Looks at one camera's heartbeat and applies what it shows.
    fn observe(&mut self, i: usize) {
        let ctl = &self.cams[i];
        let (cam, started, stopping_since) = (Arc::clone(&ctl.cam), ctl.started, ctl.stopping_since);
        let mut rec = cam.job();
        let hb = &cam.heartbeat;
        let current = hb.job_id.load(Acquire) == rec.id && hb.attempt.load(Acquire) == rec.attempt;
        let phase = hb.phase();
        let now = self.clock.now();
        let overdue = match (rec.max_duration_s, started) {
            (Some(max), Some(t0)) => now - t0 >= Duration::from_secs(max),
            _ => false,
        };
        if matches!(rec.state, JobState::Starting | JobState::Recovering)
            && current
            && matches!(phase, Phase::Streaming | Phase::Done)
        {
            self.cams[i].running_since = Some(now);
            let why =
                (rec.state == JobState::Recovering).then(|| format!("recovered after {}", recoveries(rec.recoveries)));
            self.transition(i, Trigger::GoodFrame, why);
            rec.state = JobState::Running;
        }
        if rec.state == JobState::Running && self.cams[i].running_since.is_some_and(|t| now - t >= STABLE_RUNNING) {
            // Stable again: a camera that glitches once a day never runs out of recoveries.
            self.cams[i].failed_in_row = 0;
        }
        match rec.state {
            JobState::Running if current && phase == Phase::Done => {
                let n = rec.max_frames.unwrap_or(0);
                self.transition(i, Trigger::LimitReached, Some(format!("max_frames {n} reached")));
                post_halt(&self.cams[i], &rec);
            }
            JobState::Running if overdue => {
                let max = rec.max_duration_s.unwrap_or(0);
                self.transition(i, Trigger::LimitReached, Some(format!("max_duration_s {max} reached")));
                post_halt(&self.cams[i], &rec);
            }
            // Time ran out while the camera was not delivering: that is a failure, not a
            // completed job.
            JobState::Starting | JobState::Recovering if overdue => {
                let max = rec.max_duration_s.unwrap_or(0);
                let last = rec.reason.as_deref().unwrap_or("the camera delivered no frame");
                let why = format!("max_duration_s {max} reached while {}: {last}", rec.state.as_str());
                self.transition(i, Trigger::GiveUp, Some(why));
                post_halt(&self.cams[i], &rec);
            }
            JobState::Stopping => {
                let closed = hb.job_id.load(Acquire) == rec.id && phase == Phase::Idle;
                let waited = stopping_since.map_or(Duration::ZERO, |t| now - t);
                if closed || waited >= STOP_GRACE {
                    let mut why = rec.reason.clone().unwrap_or_default();
                    if !closed {
                        why.push_str(&format!(" (the camera did not close within {} s)", STOP_GRACE.as_secs()));
                    }
                    self.transition(i, Trigger::Closed, Some(why));
                }
            }
            _ => {}
        }
    }

    /// Applies a trigger through the lifecycle, publishes the record and logs an event.
    fn transition(&mut self, i: usize, trigger: Trigger, reason: Option<String>) {
        let cam = &self.cams[i].cam;
        let mut g = cam.job.lock().unwrap_or_else(|e| e.into_inner());
        let from = g.state;
        let to = match lifecycle::next(from, trigger) {
            Ok(s) => s,
            Err(e) => {
                drop(g);
                log::error!("{}: job state machine refused a transition: {e}", cam.name);
                return;
            }
        };
        let now = clock::unix_now();
        g.state = to;
        cam.history.note(to);
        // RUNNING carries no reason: the last recovery's reason is in the events.
        g.reason = if to == JobState::Running { None } else { reason.clone() };
        g.state_since = now;
        if lifecycle::is_terminal(to) {
            g.ended_at = Some(now);
        }
        let id = g.id;
        // The event goes out before the record is released: whoever sees the new state (the
        // store's last journal flush at shutdown waits for no job to be active) also finds its
        // event in the log. Lock order job → events; the event log never takes a job lock.
        let events = &self.shared.events;
        match &reason {
            Some(r) => events.push_state(
                &cam.name,
                id,
                to,
                Some(r),
                format_args!("job {id} {} → {}: {r}", from.as_str(), to.as_str()),
            ),
            None => {
                events.push_state(&cam.name, id, to, None, format_args!("job {id} {} → {}", from.as_str(), to.as_str()))
            }
        };
        drop(g);
        if lifecycle::is_terminal(to) {
            // The API's view already pairs the record with this job's counters.
            self.shared.history.push(JobSummary::from(cam.view().job));
        }
    }

    /// The service is failing (a core thread broke): active jobs stay as they are in the
    /// journal, as after a kill -9, so that the restart records them as interrupted and starts
    /// them again. An event says so; the capture threads close their sources on the stop token.
    fn abandon(&mut self, failure: &crate::shutdown::Failure) {
        for ctl in &self.cams {
            let rec = ctl.cam.job();
            if rec.state.is_active() {
                self.shared.events.push(
                    EventKind::Error,
                    &ctl.cam.name,
                    Some(rec.id),
                    None,
                    format_args!(
                        "job {} left {}: {failure}; camjobd exits with status 1 and the job starts again after the restart",
                        rec.id,
                        rec.state.as_str()
                    ),
                );
            }
        }
    }

    /// Stops every active job, waits briefly for the cameras to close, and records STOPPED.
    fn shutdown(&mut self) {
        for i in 0..self.cams.len() {
            if self.cams[i].cam.job().state.is_capturing() {
                let _ = self.stop(i, "service shutting down");
            }
        }
        // Real time, not `self.clock`: this loop sleeps while the cameras close.
        let deadline = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < deadline && self.cams.iter().any(|c| c.cam.job().state == JobState::Stopping) {
            for i in 0..self.cams.len() {
                let ctl = &self.cams[i];
                let rec = ctl.cam.job();
                if rec.state == JobState::Stopping && ctl.cam.heartbeat.phase() == Phase::Idle {
                    self.transition(i, Trigger::Closed, rec.reason.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for i in 0..self.cams.len() {
            if self.cams[i].cam.job().state == JobState::Stopping {
                self.transition(
                    i,
                    Trigger::Closed,
                    Some("service shut down (the camera did not close in time)".into()),
                );
            }
        }
    }
}

fn post_halt(ctl: &CamCtl, rec: &JobRecord) {
    ctl.orders.post(Order { job_id: rec.id, attempt: rec.attempt, max_frames: rec.max_frames, action: Action::Halt });
}

fn limits_text(max_frames: Option<u64>, max_duration_s: Option<u64>) -> String {
    let mut s = String::new();
    if let Some(n) = max_frames {
        s.push_str(&format!(", max_frames {n}"));
    }
    if let Some(n) = max_duration_s {
        s.push_str(&format!(", max_duration_s {n}"));
    }
    s
}

/// Rebuilds the job history from the journal of earlier runs and records jobs that were
/// active when the process died as FAILED (`interrupted: process restarted`), with an event
/// that the journal keeps, so the next restart does not report them again. Returns, per
/// camera, whether a job was capturing then (a new one is started, as a user would expect).
fn recover_history(shared: &Shared, past: &[Event]) -> Vec<bool> {
    struct Seen {
        camera: String,
        started_at: Option<f64>,
        last: (JobState, Option<String>, f64),
    }
    let mut jobs: std::collections::BTreeMap<u64, Seen> = std::collections::BTreeMap::new();
    let mut last_job: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for e in past {
        let (Some(id), Some(state)) = (e.job_id, e.state) else { continue };
        let seen = jobs.entry(id).or_insert_with(|| Seen {
            camera: e.camera.to_string(),
            started_at: None,
            last: (state, None, e.at),
        });
        if state == JobState::Starting {
            seen.started_at = Some(e.at);
        }
        seen.last = (state, e.reason.as_ref().map(|r| r.to_string()), e.at);
        if let Some(i) = shared.camera_index(&e.camera) {
            last_job.insert(shared.cameras[i].name.as_str(), id);
        }
    }
    let mut resume = vec![false; shared.cameras.len()];
    let now = clock::unix_now();
    for (id, seen) in &jobs {
        let (state, reason, at) = &seen.last;
        let interrupted = state.is_active() && last_job.get(seen.camera.as_str()) == Some(id);
        if !interrupted && !lifecycle::is_terminal(*state) {
            continue; // superseded by a later job of the same camera (an older crash)
        }
        let (state, reason, ended_at) = if interrupted {
            let why = "interrupted: process restarted";
            shared.events.push_state(
                &seen.camera,
                *id,
                JobState::Failed,
                Some(why),
                format_args!("job {id} {} → FAILED: {why}", state.as_str()),
            );
            if let Some(i) = shared.camera_index(&seen.camera) {
                resume[i] = state.is_capturing();
            }
            (JobState::Failed, Some(why.to_string()), now)
        } else {
            (*state, reason.clone(), *at)
        };
        shared.history.push(JobSummary {
            id: *id,
            camera: seen.camera.clone(),
            state,
            reason,
            started_at: seen.started_at,
            ended_at: Some(ended_at),
            frames_captured: None,
            frames_dropped: None,
            errors_total: None,
            recoveries: None,
        });
    }
    resume
}

/// "1 recovery", "2 recoveries".
fn recoveries(n: u32) -> String {
    if n == 1 {
        "1 recovery".into()
    } else {
        format!("{n} recoveries")
    }
}

#[cfg(test)]
mod tests;
