//! The outbox: messages waiting for the broker, at most a fixed number. When it is full the
//! oldest message that is not a state or availability message makes room (counted), because
//! those two are what a dashboard acts on; they are also re-published on every reconnect.
//! A newer job or snapshot message replaces a waiting one on the same topic (only the newest
//! is worth sending, and it must not cost a place).

use std::collections::VecDeque;

/// What a message is, for the drop policy and its QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `availability`: `online` / `offline`.
    Availability,
    /// `<camera>/state`.
    State,
    /// `<camera>/job`: replaced by a newer one on the same topic.
    Job,
    /// `events`.
    Event,
    /// A Home Assistant discovery config, or an empty payload clearing one.
    Discovery,
    /// `<camera>/snapshot`: replaced by a newer one on the same topic.
    Snapshot,
    /// `<camera>/command/result`.
    CommandResult,
}

impl Kind {
    /// Kept when the outbox is full, as long as something else can go.
    fn precious(self) -> bool {
        matches!(self, Kind::State | Kind::Availability)
    }
    /// Only the newest message on a topic matters.
    fn coalesces(self) -> bool {
        matches!(self, Kind::Job | Kind::Snapshot)
    }
    /// Retained on the broker (a new subscriber sees the last one).
    pub fn retained(self) -> bool {
        matches!(self, Kind::Availability | Kind::State | Kind::Job | Kind::Discovery | Kind::Snapshot)
    }
    /// At-least-once for what Home Assistant keeps; at-most-once for the stream of the rest.
    pub fn at_least_once(self) -> bool {
        matches!(self, Kind::Availability | Kind::State | Kind::Discovery | Kind::CommandResult)
    }
}

/// One message for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The full topic.
    pub topic: String,
    /// The payload (empty clears a retained message).
    pub payload: Vec<u8>,
    /// What it is.
    pub kind: Kind,
}

/// A bounded FIFO of [`Message`]s.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Message>,
    limit: usize,
    dropped: u64,
}

impl Outbox {
    /// An outbox holding at most `limit` messages (at least 1).
    pub fn new(limit: usize) -> Outbox {
        let limit = limit.max(1);
        Outbox { queue: VecDeque::with_capacity(limit), limit, dropped: 0 }
    }

    /// Queues `m`, replacing a waiting message of the same topic for job and snapshot
    /// messages, and otherwise dropping the oldest droppable message when full. Returns the
    /// kind of the message dropped, if one was.
    pub fn push(&mut self, m: Message) -> Option<Kind> {
        if m.kind.coalesces() {
            if let Some(waiting) = self.queue.iter_mut().find(|w| w.kind == m.kind && w.topic == m.topic) {
                *waiting = m;
                return None;
            }
        }
        let dropped = self.make_room();
        self.queue.push_back(m);
        dropped
    }

    /// Queues `m` ahead of everything (availability after a reconnection), making room the
    /// same way as [`Outbox::push`].
    pub fn push_front(&mut self, m: Message) -> Option<Kind> {
        let dropped = self.make_room();
        self.queue.push_front(m);
        dropped
    }

    /// When full, drops the oldest message that is not a state or availability message; if
    /// only those wait, the oldest state (availability goes last: it is one message).
    fn make_room(&mut self) -> Option<Kind> {
        if self.queue.len() < self.limit {
            return None;
        }
        let victim = self
            .queue
            .iter()
            .position(|w| !w.kind.precious())
            .or_else(|| self.queue.iter().position(|w| w.kind == Kind::State))
            .unwrap_or(0);
        self.dropped += 1;
        self.queue.remove(victim).map(|w| w.kind)
    }

    /// The oldest message, to send.
    pub fn front(&self) -> Option<&Message> {
        self.queue.front()
    }

    /// Removes the oldest message (it was handed to the client).
    pub fn pop(&mut self) -> Option<Message> {
        self.queue.pop_front()
    }

    /// Puts back at the front a message just popped that could not be handed over.
    pub fn requeue(&mut self, m: Message) {
        if self.queue.len() < self.limit {
            self.queue.push_front(m);
        } else {
            self.dropped += 1;
        }
    }

    /// Drops (counted) everything but state and availability messages: at shutdown, only the
    /// final states are worth the little time left.
    pub fn keep_precious(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|m| m.kind.precious());
        self.dropped += (before - self.queue.len()) as u64;
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True while at most half full: what may be added without crowding out what comes next.
    pub fn half_empty(&self) -> bool {
        self.queue.len() < self.limit / 2
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Messages dropped to make room, since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, kind: Kind) -> Message {
        Message { topic: topic.into(), payload: topic.as_bytes().to_vec(), kind }
    }

    #[test]
    fn never_holds_more_than_its_limit_and_counts_every_drop() {
        let mut o = Outbox::new(16);
        for i in 0..1000 {
            o.push(msg(&format!("events/{i}"), Kind::Event));
            assert!(o.len() <= 16);
        }
        assert_eq!(o.len(), 16);
        assert_eq!(o.dropped(), 1000 - 16);
        // The newest survive, in order.
        let kept: Vec<_> = std::iter::from_fn(|| o.pop()).map(|m| m.topic).collect();
        assert_eq!(kept.first().map(String::as_str), Some("events/984"));
        assert_eq!(kept.last().map(String::as_str), Some("events/999"));
    }

    #[test]
    fn state_and_availability_survive_a_flood_of_events() {
        let mut o = Outbox::new(16);
        o.push(msg("availability", Kind::Availability));
        o.push(msg("cam0/state", Kind::State));
        for i in 0..500 {
            o.push(msg(&format!("events/{i}"), Kind::Event));
        }
        o.push(msg("cam0/state2", Kind::State));
        let kinds: Vec<_> = std::iter::from_fn(|| o.pop()).collect();
        assert_eq!(kinds[0].kind, Kind::Availability);
        assert_eq!(kinds[1].topic, "cam0/state");
        assert_eq!(kinds.last().unwrap().topic, "cam0/state2");
        assert_eq!(kinds.len(), 16);
    }

    #[test]
    fn when_only_states_wait_the_oldest_state_goes() {
        let mut o = Outbox::new(16);
        for i in 0..17 {
            assert_eq!(o.push(msg(&format!("s{i}"), Kind::State)), if i < 16 { None } else { Some(Kind::State) });
        }
        assert_eq!(o.front().unwrap().topic, "s1");
        assert_eq!(o.dropped(), 1);
    }

    #[test]
    fn availability_outlives_states_and_can_go_first() {
        let mut o = Outbox::new(16);
        o.push(msg("availability", Kind::Availability));
        for i in 0..40 {
            o.push(msg(&format!("s{i}"), Kind::State));
        }
        assert_eq!(o.front().unwrap().kind, Kind::Availability);
        o.push_front(msg("online", Kind::Availability));
        assert_eq!(o.front().unwrap().topic, "online");
        assert_eq!(o.len(), 16);
    }

    #[test]
    fn a_newer_job_or_snapshot_replaces_the_waiting_one_in_place() {
        let mut o = Outbox::new(16);
        o.push(msg("cam0/job", Kind::Job));
        o.push(msg("events", Kind::Event));
        o.push(Message { topic: "cam0/job".into(), payload: b"newer".to_vec(), kind: Kind::Job });
        o.push(msg("cam1/job", Kind::Job));
        assert_eq!(o.len(), 3);
        assert_eq!(o.pop().unwrap().payload, b"newer");
        // Events never coalesce.
        o.push(msg("events", Kind::Event));
        assert_eq!(o.len(), 3);
        assert_eq!(o.dropped(), 0);
    }
}
