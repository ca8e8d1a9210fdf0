//! The event log: state changes with their reasons, drops and errors, in a fixed-capacity
//! ring of [`EVENT_CAPACITY`] entries. The ring never allocates (messages are truncated into
//! fixed strings); each event is also logged, and that line is allocated by the log sink, which
//! is why capture summarises its drops at most once a second rather than pushing each.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use heapless::HistoryBuf;
use serde::{Deserialize, Serialize};

use crate::clock;
use crate::lifecycle::JobState;

/// Events kept in memory; older ones are overwritten.
pub const EVENT_CAPACITY: usize = 256;
/// Most events one `GET /api/events` returns.
pub const MAX_PAGE: usize = 256;
/// Longest message kept; longer ones are cut with "…".
pub const MESSAGE_BYTES: usize = 240;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A job state transition.
    State,
    /// Frames were dropped (oversize, garbage, no free buffer).
    Drop,
    /// A source or device error.
    Error,
    /// Anything else worth telling (start-up, LED disabled, ...).
    Info,
    /// The scene changed (a snapshot's change score reached `change_threshold`).
    Change,
    /// An export job changed state (queued, running, succeeded, failed, cancelled).
    Export,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing id, for `after=`.
    pub seq: u64,
    /// Unix seconds.
    pub at: f64,
    /// What kind of event.
    pub kind: EventKind,
    /// The camera, or empty for process-wide events.
    pub camera: heapless::String<32>,
    /// The job it belongs to, if any.
    pub job_id: Option<u64>,
    /// The state entered, for `state` events.
    pub state: Option<JobState>,
    /// Why, for `state` events that have a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<heapless::String<MESSAGE_BYTES>>,
    /// A sentence for people.
    pub message: heapless::String<MESSAGE_BYTES>,
}

struct Inner {
    ring: HistoryBuf<Event, EVENT_CAPACITY>,
    next_seq: u64,
}

/// The process-wide event log.
pub struct EventLog {
    inner: Mutex<Inner>,
    /// Seq of the newest state event, so the journal can write state changes promptly.
    last_state: AtomicU64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog { inner: Mutex::new(Inner { ring: HistoryBuf::new(), next_seq: 1 }), last_state: AtomicU64::new(0) }
    }
}

impl EventLog {
    /// The service's log, its memory committed where it lies (every slot written once, then
    /// emptied), as the frame pool is: left untouched, the ring's 146 KiB became resident a
    /// page at a time as events came, a slow step-wise growth of RSS until it first wrapped
    /// (docs/testing.md, "Soak").
    pub fn committed() -> std::sync::Arc<EventLog> {
        let log = std::sync::Arc::new(EventLog::default());
        log.commit();
        log
    }

    fn commit(&self) {
        let mut g = self.lock();
        for _ in 0..EVENT_CAPACITY {
            g.ring.write(filler());
        }
        g.ring.clear();
    }
}

/// An event whose strings are full, written over memory to commit it (every byte set).
pub fn filler() -> Event {
    let full = fixed::<MESSAGE_BYTES>(format_args!("{:1$}", "", MESSAGE_BYTES));
    Event {
        seq: 0,
        at: 0.0,
        kind: EventKind::Info,
        camera: fixed(format_args!("{:32}", "")),
        job_id: None,
        state: None,
        reason: Some(full.clone()),
        message: full,
    }
}

/// Writes into a fixed string, cutting at a char boundary when full.
struct Truncating<'a, const N: usize>(&'a mut heapless::String<N>, bool);

impl<const N: usize> fmt::Write for Truncating<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.len() + c.len_utf8() + '…'.len_utf8() > N {
                self.1 = true;
                return Ok(());
            }
            let _ = self.0.push(c);
        }
        Ok(())
    }
}

/// Formats into a fixed string, truncating; no allocation.
pub fn fixed<const N: usize>(args: fmt::Arguments<'_>) -> heapless::String<N> {
    let mut s = heapless::String::new();
    let mut w = Truncating(&mut s, false);
    let _ = w.write_fmt(args);
    if w.1 {
        let _ = s.push('…');
    }
    s
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event and returns its seq. Also logs it.
    pub fn push(
        &self,
        kind: EventKind,
        camera: &str,
        job_id: Option<u64>,
        state: Option<JobState>,
        message: fmt::Arguments<'_>,
    ) -> u64 {
        self.record(kind, camera, job_id, state, None, message)
    }

    /// Records an error event of `camera` ("" for the service).
    pub fn error(&self, camera: &str, message: fmt::Arguments<'_>) -> u64 {
        self.push(EventKind::Error, camera, None, None, message)
    }

    /// Records a job state change with its reason as a field of its own (the journal rebuilds
    /// the job history from these).
    pub fn push_state(
        &self,
        camera: &str,
        job_id: u64,
        state: JobState,
        reason: Option<&str>,
        message: fmt::Arguments<'_>,
    ) -> u64 {
        let reason = reason.map(|r| fixed::<MESSAGE_BYTES>(format_args!("{r}")));
        let seq = self.record(EventKind::State, camera, Some(job_id), Some(state), reason, message);
        self.last_state.fetch_max(seq, Ordering::Relaxed);
        seq
    }

    /// Seq of the newest state event (0 if none).
    pub fn last_state_seq(&self) -> u64 {
        self.last_state.load(Ordering::Relaxed)
    }

    fn record(
        &self,
        kind: EventKind,
        camera: &str,
        job_id: Option<u64>,
        state: Option<JobState>,
        reason: Option<heapless::String<MESSAGE_BYTES>>,
        message: fmt::Arguments<'_>,
    ) -> u64 {
        let message = fixed::<MESSAGE_BYTES>(message);
        let sep = if camera.is_empty() { "" } else { ": " };
        match kind {
            EventKind::Error | EventKind::Drop => log::warn!("{camera}{sep}{message}"),
            _ => log::info!("{camera}{sep}{message}"),
        }
        let mut g = self.lock();
        let seq = g.next_seq;
        g.next_seq += 1;
        g.ring.write(Event {
            seq,
            at: clock::unix_now(),
            kind,
            camera: fixed(format_args!("{camera}")),
            job_id,
            state,
            reason,
            message,
        });
        seq
    }

    /// Events with `seq > after`, oldest first, at most `limit` (capped at [`MAX_PAGE`]).
    /// Returns the `next` cursor: the last seq returned, or — when nothing is newer — the
    /// newest seq if `after` is beyond it (the process restarted), else `after`.
    pub fn page(&self, after: u64, limit: usize, out: &mut Vec<Event>) -> u64 {
        let limit = limit.min(MAX_PAGE);
        let g = self.lock();
        out.extend(g.ring.oldest_ordered().filter(|e| e.seq > after).take(limit).cloned());
        match out.last() {
            Some(e) => e.seq,
            None => after.min(g.next_seq - 1),
        }
    }

    /// The seq of the newest event (0 when empty).
    pub fn newest(&self) -> u64 {
        self.lock().next_seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_paged() {
        let log = EventLog::default();
        for i in 0..(EVENT_CAPACITY as u64 + 10) {
            log.push(EventKind::Info, "cam0", None, None, format_args!("event {i}"));
        }
        let mut out = Vec::new();
        let next = log.page(0, 1000, &mut out);
        assert_eq!(out.len(), MAX_PAGE.min(EVENT_CAPACITY));
        assert_eq!(out[0].seq, 11, "the oldest ten were overwritten");
        assert_eq!(next, out.last().unwrap().seq);
        out.clear();
        let next2 = log.page(next, 10, &mut out);
        assert!(out.len() <= 10 && out.iter().all(|e| e.seq > next));
        assert!(next2 >= next);
    }

    #[test]
    fn cursor_beyond_the_newest_resets_to_it() {
        let log = EventLog::default();
        log.push(EventKind::Info, "", None, None, format_args!("one"));
        let mut out = Vec::new();
        assert_eq!(log.page(1000, 10, &mut out), 1);
        assert!(out.is_empty());
        assert_eq!(log.page(1, 10, &mut out), 1);
    }

    #[test]
    fn long_messages_are_cut_not_grown() {
        let s: heapless::String<8> = fixed(format_args!("{}", "abcdefghijkl"));
        assert!(s.len() <= 8 && s.ends_with('…'), "{s}");
        let s: heapless::String<8> = fixed(format_args!("ab"));
        assert_eq!(s.as_str(), "ab");
    }
}
