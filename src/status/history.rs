//! Each camera's last day at a glance: frame rate, drops and state, one point a minute, in a
//! ring fixed at start-up (`GET /api/cameras/<camera>/history`, the dashboard's chart).
//!
//! Two threads write it, each a little: the supervisor notes every job state it sets
//! ([`History::note`]), so that a RECOVERING of 100 ms still marks its minute; the watchdog's
//! loop runs a [`Sampler`] per camera that adds up frames and drops between its ticks and
//! closes each minute into the ring ([`History::close`]). HTTP copies points out a chunk at a
//! time ([`History::copy`]). The lock is held for O(1) work by the writers, for a chunk's copy
//! by readers, and never while another lock is taken (the supervisor notes while it holds the
//! job's lock: the order is job → history).
//!
//! Nothing goes to disk: the minutes when camjobd was not running do not exist, and a restart
//! begins an empty ring. Points are in the order they were closed; their `t` goes back only
//! when the wall clock is stepped back (a board without a real-time clock meeting NTP).

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::{Mutex, MutexGuard};

use super::Heartbeat;
use crate::lifecycle::JobState;

/// Points a ring holds: a day of minutes.
pub const CAPACITY: usize = 1440;
/// Seconds a point covers. Release builds always use this; debug builds may shorten it for
/// tests (`crate::testhook::history_knobs`).
pub const INTERVAL_S: u32 = 60;
/// What one camera's ring takes, allocated once at start (1440 × 16 bytes: 22.5 KiB).
pub const RING_BYTES: usize = CAPACITY * std::mem::size_of::<Point>();

/// One closed interval of a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Its start, Unix seconds (a whole multiple of the interval).
    pub t: u32,
    /// Good frames the camera delivered in it (the job's `frames_captured`).
    pub frames: u32,
    /// Frames lost in it (the job's `frames_dropped`: oversize, malformed, no free buffer).
    pub drops: u32,
    /// How long camjobd watched it, ms: the interval, or less for the first one after start.
    pub watched_ms: u16,
    /// The worst job state in it ([`worse`]).
    pub state: JobState,
}

impl Point {
    /// A point with nothing in it (for buffers).
    pub const EMPTY: Point = Point { t: 0, frames: 0, drops: 0, watched_ms: 0, state: JobState::Idle };

    /// Frames a second over the time watched, to 0.01.
    pub fn fps(&self) -> f64 {
        let ms = f64::from(self.watched_ms.max(1));
        (f64::from(self.frames) * 100_000.0 / ms).round() / 100.0
    }
}

/// How much a state says that something was wrong, for the worst state of a minute: FAILED,
/// then RECOVERING, then STARTING (no frames yet), STOPPING, RUNNING, and the quiet states.
fn rank(s: JobState) -> u8 {
    match s {
        JobState::Failed => 7,
        JobState::Recovering => 6,
        JobState::Starting => 5,
        JobState::Stopping => 4,
        JobState::Running => 3,
        JobState::Completed => 2,
        JobState::Stopped => 1,
        JobState::Idle => 0,
    }
}

/// The worse of two states (see [`rank`]).
pub fn worse(a: JobState, b: JobState) -> JobState {
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// One camera's history ring.
pub struct History {
    ring: Mutex<Ring>,
    capacity: usize,
    interval_s: u32,
}

struct Ring {
    /// Allocated whole at start; point `seq` is at `seq % len`.
    points: Box<[Point]>,
    /// Points closed so far (the next one's seq).
    pushed: u64,
    /// The state the supervisor set last: where the next interval begins.
    current: JobState,
    /// The worst state since the open interval began.
    worst: JobState,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    /// An empty ring of a day of minutes (in a debug build, what the test knobs say).
    pub fn new() -> History {
        let (interval, capacity) = crate::testhook::history_knobs(CAPACITY);
        History::with(capacity.unwrap_or(CAPACITY), interval.unwrap_or(INTERVAL_S))
    }

    /// An empty ring of `capacity` points of `interval_s` seconds each.
    pub fn with(capacity: usize, interval_s: u32) -> History {
        let capacity = capacity.max(1);
        let ring = Ring {
            points: vec![Point::EMPTY; capacity].into_boxed_slice(),
            pushed: 0,
            current: JobState::Idle,
            worst: JobState::Idle,
        };
        History { ring: Mutex::new(ring), capacity, interval_s: interval_s.max(1) }
    }

    /// Seconds a point covers.
    pub fn interval_s(&self) -> u32 {
        self.interval_s
    }

    /// Points the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The supervisor set the job's state to `state` (the supervisor only).
    pub fn note(&self, state: JobState) {
        let mut r = self.lock();
        r.current = state;
        r.worst = worse(r.worst, state);
    }

    /// Closes the interval that began at `t` with what the sampler counted in it; the next one
    /// begins in the state the job is in now (the watchdog's sampler only).
    pub fn close(&self, t: u32, frames: u64, drops: u64, watched_ms: u64) {
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let mut r = self.lock();
        let state = r.worst;
        let at = (r.pushed % r.points.len() as u64) as usize;
        r.points[at] = Point {
            t,
            frames: sat(frames),
            drops: sat(drops),
            watched_ms: u16::try_from(watched_ms).unwrap_or(u16::MAX),
            state,
        };
        r.pushed += 1;
        r.worst = r.current;
    }

    /// Points closed so far: copies stop there, so that a reader's answer ends where it began.
    pub fn pushed(&self) -> u64 {
        self.lock().pushed
    }

    /// Copies points from seq `from` (or the oldest still held, if that is later) up to `end`
    /// (exclusive) into `out`, oldest first, as many as fit; returns the first one's seq and
    /// how many were copied (0: none left).
    pub fn copy(&self, from: u64, end: u64, out: &mut [Point]) -> (u64, usize) {
        let r = self.lock();
        let len = r.points.len() as u64;
        let first = from.max(r.pushed.saturating_sub(len));
        let n = end.min(r.pushed).saturating_sub(first).min(out.len() as u64) as usize;
        for (k, slot) in out[..n].iter_mut().enumerate() {
            *slot = r.points[((first + k as u64) % len) as usize];
        }
        (first, n)
    }
}

/// A camera's counters as the watchdog reads them at a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// The job the counters belong to (they start again from zero for each job).
    pub job_id: u64,
    /// `frames_captured`.
    pub frames: u64,
    /// `frames_dropped`.
    pub drops: u64,
}

impl Counters {
    /// What `hb` says now.
    pub fn of(hb: &Heartbeat) -> Counters {
        Counters {
            job_id: hb.job_id.load(Acquire),
            frames: hb.frames_captured.load(Relaxed),
            drops: hb.frames_dropped.load(Relaxed),
        }
    }
}

/// The watchdog's side of one camera's ring: adds up what the counters grew by between its
/// ticks, and closes the interval when the wall clock enters the next one. Owned by the
/// watchdog's loop (no lock); it touches the ring only to close an interval.
#[derive(Debug, Default)]
pub struct Sampler {
    /// The open interval: its start (Unix s) and the monotonic ms when it was opened.
    open: Option<(u32, u64)>,
    /// The counters at the last tick.
    last: Counters,
    frames: u64,
    drops: u64,
}

/// What a counter grew by from `old` to `new`. A new job's counters start again from zero,
/// so all it counted is new; a counter that went back within one job was reset too (a new
/// job's first frames read before its id). Wrong by at most the few frames of that moment.
fn grown(old: u64, new: u64, same_job: bool) -> u64 {
    if same_job && new >= old {
        new - old
    } else {
        new
    }
}

impl Sampler {
    /// One tick of the watchdog: the wall clock (`unix_s`), the monotonic clock (`mono_ms`)
    /// and the camera's counters now. Closes the open interval into `history` when `unix_s`
    /// is in another one (the next, or any other after a clock step).
    pub fn tick(&mut self, history: &History, unix_s: f64, mono_ms: u64, now: Counters) {
        let same = now.job_id == self.last.job_id;
        self.frames += grown(self.last.frames, now.frames, same);
        self.drops += grown(self.last.drops, now.drops, same);
        self.last = now;
        let interval = u64::from(history.interval_s());
        let slot = u32::try_from(unix_s.max(0.0) as u64 / interval * interval).unwrap_or(u32::MAX);
        match self.open {
            Some((t, _)) if t == slot => return,
            // Late by up to a tick: what came meanwhile counts in the interval closed.
            Some((t, since)) => history.close(t, self.frames, self.drops, mono_ms.saturating_sub(since)),
            // The first tick: the first interval is watched from now.
            None => {}
        }
        self.open = Some((slot, mono_ms));
        (self.frames, self.drops) = (0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    fn all(h: &History) -> Vec<Point> {
        let mut out = vec![Point::EMPTY; h.capacity()];
        let (_, n) = h.copy(0, h.pushed(), &mut out);
        out.truncate(n);
        out
    }

    fn counters(job_id: u64, frames: u64, drops: u64) -> Counters {
        Counters { job_id, frames, drops }
    }

    #[test]
    fn a_point_is_sixteen_bytes_and_a_day_is_the_ring() {
        assert_eq!(std::mem::size_of::<Point>(), 16);
        assert_eq!(RING_BYTES, 23_040);
        assert_eq!((CAPACITY as u32) * INTERVAL_S, 86_400);
    }

    #[test]
    fn the_ring_wraps_oldest_first_and_never_grows() {
        let h = History::with(4, 60);
        assert!(all(&h).is_empty());
        for i in 0..10u32 {
            h.close(i * 60, u64::from(i), 0, 60_000);
            let pts = all(&h);
            assert_eq!(pts.len(), (i as usize + 1).min(4));
            let ts: Vec<u32> = pts.iter().map(|p| p.t).collect();
            let want: Vec<u32> = (i.saturating_sub(3)..=i).map(|k| k * 60).collect();
            assert_eq!(ts, want, "oldest first after {} closes", i + 1);
        }
        // A reader that asks from an overwritten seq starts at the oldest held.
        let mut buf = [Point::EMPTY; 2];
        assert_eq!(h.copy(0, h.pushed(), &mut buf), (6, 2));
        assert_eq!((buf[0].t, buf[1].t), (360, 420));
        assert_eq!(h.copy(8, h.pushed(), &mut buf), (8, 2));
        assert_eq!(h.copy(10, h.pushed(), &mut buf), (10, 0));
        // `end` bounds the answer even when more was closed since.
        assert_eq!(h.copy(6, 7, &mut buf), (6, 1));
    }

    #[test]
    fn the_worst_state_of_a_minute_is_kept_and_the_next_begins_where_the_job_is() {
        let h = History::with(8, 60);
        h.note(Starting);
        h.note(Running);
        h.close(0, 10, 0, 60_000);
        // A short RECOVERING inside a minute that begins and ends RUNNING.
        h.note(Recovering);
        h.note(Running);
        h.close(60, 10, 0, 60_000);
        h.close(120, 10, 0, 60_000);
        h.note(Recovering);
        h.note(Failed);
        h.close(180, 0, 0, 60_000);
        h.close(240, 0, 0, 60_000);
        // A minute that began FAILED stays FAILED, whatever came after in it.
        h.note(Starting);
        h.note(Stopping);
        h.note(Stopped);
        h.close(300, 0, 0, 60_000);
        h.close(360, 0, 0, 60_000);
        let states: Vec<JobState> = all(&h).iter().map(|p| p.state).collect();
        assert_eq!(states, [Starting, Recovering, Running, Failed, Failed, Failed, Stopped]);
        assert_eq!(worse(Failed, Recovering), Failed);
        assert_eq!(worse(Running, Completed), Running);
        assert_eq!(worse(Idle, Stopped), Stopped);
    }

    #[test]
    fn the_sampler_counts_deltas_and_closes_each_interval() {
        let h = History::with(16, 60);
        let mut s = Sampler::default();
        // The first tick opens an interval; what the counters held before is not in it.
        s.tick(&h, 1_000_030.5, 10_000, counters(1, 500, 3));
        s.tick(&h, 1_000_050.0, 29_500, counters(1, 1475, 4));
        assert!(all(&h).is_empty());
        // Into the next minute: the first closes with the growth since the first tick.
        s.tick(&h, 1_000_080.0, 59_500, counters(1, 2975, 9));
        s.tick(&h, 1_000_140.0, 119_500, counters(1, 5975, 9));
        let pts = all(&h);
        assert_eq!(pts.len(), 2);
        assert_eq!((pts[0].t, pts[0].frames, pts[0].drops, pts[0].watched_ms), (1_000_020, 2475, 6, 49_500));
        assert_eq!(pts[0].fps(), 50.0);
        assert_eq!((pts[1].t, pts[1].frames, pts[1].drops, pts[1].watched_ms), (1_000_080, 3000, 0, 60_000));
        assert_eq!(pts[1].fps(), 50.0);
    }

    #[test]
    fn a_job_restart_inside_a_minute_adds_both_jobs_frames() {
        let h = History::with(16, 60);
        let mut s = Sampler::default();
        s.tick(&h, 60.0, 0, counters(1, 1000, 5));
        s.tick(&h, 70.0, 10_000, counters(1, 1200, 7));
        // Job 2 starts: its counters begin at zero.
        s.tick(&h, 80.0, 20_000, counters(2, 150, 1));
        s.tick(&h, 90.0, 30_000, counters(2, 400, 1));
        s.tick(&h, 95.0, 35_000, counters(3, 0, 0));
        s.tick(&h, 96.0, 36_000, counters(3, 20, 0));
        s.tick(&h, 120.0, 60_000, counters(3, 50, 0));
        let p = all(&h)[0];
        assert_eq!((p.t, p.frames, p.drops), (60, 200 + 150 + 250 + 20 + 30, 2 + 1));
        // Counters that went back within one job (never by the capture thread; a reset read
        // halfway) are taken as new, not as a huge wrapped delta.
        let mut s = Sampler::default();
        s.tick(&h, 180.0, 0, counters(4, 100, 0));
        s.tick(&h, 190.0, 10_000, counters(4, 5, 0));
        s.tick(&h, 240.0, 60_000, counters(4, 10, 0));
        assert_eq!(all(&h).last().unwrap().frames, 10);
    }

    #[test]
    fn clock_steps_close_the_interval_and_late_ticks_count_in_it() {
        let h = History::with(16, 1);
        let mut s = Sampler::default();
        s.tick(&h, 10.2, 0, counters(1, 0, 0));
        // A tick 1.1 s later: the interval of 10 s closes with 1100 ms watched.
        s.tick(&h, 11.3, 1_100, counters(1, 55, 0));
        // The clock is stepped back: a new interval, closed by the next second.
        s.tick(&h, 5.3, 1_200, counters(1, 60, 0));
        s.tick(&h, 6.0, 1_900, counters(1, 95, 0));
        let pts = all(&h);
        let got: Vec<(u32, u32, u16)> = pts.iter().map(|p| (p.t, p.frames, p.watched_ms)).collect();
        assert_eq!(got, [(10, 55, 1100), (11, 5, 100), (5, 35, 700)]);
        assert_eq!(pts[0].fps(), 50.0);
        // Before the epoch (a clock that reads 1970 or earlier): interval 0, never a wrap.
        s.tick(&h, -5.0, 2_000, counters(1, 100, 0));
        s.tick(&h, 1.0, 3_000, counters(1, 150, 0));
        let ts: Vec<u32> = all(&h).iter().map(|p| p.t).collect();
        assert_eq!(ts, [10, 11, 5, 6, 0]);
    }
}
