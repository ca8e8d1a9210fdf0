//! The `mqtt` thread's two tasks on its own small runtime:
//!
//! - the network task drives rumqttc's event loop: connects, reconnects after a jittered
//!   backoff, counts what was written, and tells the publisher what happened on the link
//!   ([`Link`], one bounded channel, in order);
//! - the publisher acts on those at once (commands, a new connection to announce, publishes
//!   to send again), and every 100 ms turns what changed in the published state into messages
//!   in the [`Outbox`] and moves them to the client while connected.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ClientError, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::command::{self, Action};
use super::outbox::{Kind, Message, Outbox};
use super::Inputs;
use super::{controls, discovery, Backoff, Names, Settings, Stats};

mod control_topics;
use crate::events::{Event as LogEvent, EventKind};
use crate::lifecycle::JobState;
use crate::logging::Quiet;
use crate::shutdown::{Broke, Stop};
use crate::status::controls::Outcome;
use crate::status::{CameraShared, Command, Refusal, Reply};
use crate::testhook::{self, Fault};

/// The largest message camjobd takes from the broker (commands are a few bytes, retained
/// discovery configs a few KiB); larger ones up to [`READ_LIMIT`] are refused and counted.
pub(super) const MAX_MESSAGE: usize = 64 << 10;
/// The largest packet the client reads at all: rumqttc buffers a packet whole and drops the
/// connection on a larger one, so this bounds that buffer, and anything between
/// [`MAX_MESSAGE`] and this is refused with the link kept.
pub(super) const READ_LIMIT: usize = 1 << 20;
/// Refused messages and commands are logged once, then counted once a minute.
static OVERSIZE_LOG: Quiet = Quiet::new();
static REFUSED_LOG: Quiet = Quiet::new();
static UNKNOWN_LOG: Quiet = Quiet::new();
static CLEANUP_LOG: Quiet = Quiet::new();
/// How often the publisher looks at the published state (state changes are read, not
/// pushed: the threads that write them never wait on MQTT).
const TICK: Duration = Duration::from_millis(100);
/// Requests between the publisher and rumqttc's network loop (small: what sits there when
/// the connection drops is lost, the outbox is where messages wait).
const CLIENT_QUEUE: usize = 16;
/// Incoming messages waiting for the publisher: the retained burst after subscribing (ten
/// configs and a state per camera) with room to spare; plus this per camera.
const INCOMING_QUEUE: usize = 64;
const INCOMING_PER_CAMERA: usize = 16;
/// Publishes handed back by the network task at a reconnection, at most (the client's queue
/// plus what can be in flight).
const LOST_QUEUE: usize = CLIENT_QUEUE + INFLIGHT as usize;
/// QoS 1 publishes in flight at most.
pub(super) const INFLIGHT: u16 = 32;
/// Commands waiting for the supervisor's answer at once.
const PENDING_COMMANDS: usize = 8;
/// Longest wait for the supervisor's answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait at shutdown for the jobs' final states (the process gives every thread 1.8 s
/// in all; a camera that takes longer to stop is left at STOPPING).
const SHUTDOWN_WAIT: Duration = Duration::from_millis(800);
/// Longest wait at shutdown for the broker's acknowledgements before disconnecting.
const ACK_WAIT: Duration = Duration::from_millis(400);
/// Longest wait for the broker to close the socket after our DISCONNECT.
const CLOSE_WAIT: Duration = Duration::from_millis(400);
/// A connection that lasts this long restarts the reconnect backoff at 1 s.
const STABLE: Duration = Duration::from_secs(5);
/// After this, the subscriptions that only find leftovers (retained states and discovery
/// configs of removed cameras) are dropped, so camjobd does not read its own publishes back.
const CLEANUP_WINDOW: Duration = Duration::from_secs(5);
/// Job messages per camera at most this often.
const JOB_EVERY: Duration = Duration::from_secs(1);

/// What the publisher remembers per camera.
struct CameraTrack {
    state: Option<JobState>,
    job: Vec<u8>,
    job_at: Option<Instant>,
    snapshot_seq: u64,
    snapshot_at: Option<Instant>,
    /// The controls' generation last published (0: none yet).
    controls_gen: u64,
    /// The control names whose entities this connection announced.
    controls_announced: Vec<String>,
    /// The `controls` state last queued (a camera's open or close alone changes nothing).
    controls_state: Vec<u8>,
}

/// A command waiting for the supervisor.
struct Pending {
    camera: usize,
    action: Action,
    reply: oneshot::Receiver<Reply>,
    deadline: Instant,
}

pub(super) async fn run(inputs: Arc<Inputs>, settings: Settings, stats: Arc<Stats>, stop: Stop) {
    let Settings { options, names, outbox, snapshot_every } = settings;
    let (client, mut events) = AsyncClient::new(options, CLIENT_QUEUE);
    events.network_options.set_connection_timeout(5);
    // Room for the incoming burst, the returned publishes and the link's own news.
    let (link_tx, link_rx) =
        mpsc::channel(INCOMING_QUEUE + INCOMING_PER_CAMERA * inputs.cameras.len() + LOST_QUEUE + 4);
    let mut net = tokio::spawn(network(events, Arc::clone(&stats), link_tx, stop.clone()));
    let mut p = Publisher {
        inputs,
        names,
        client,
        stats,
        outbox: Outbox::new(outbox),
        ours: HashSet::new(),
        cams: Vec::new(),
        after: 0,
        gaps: 0,
        announce_due: false,
        subscribe_due: false,
        returned: Vec::new(),
        pending: Vec::new(),
        snapshot_every,
        links: link_rx,
        cleanup_until: None,
        announcement: VecDeque::new(),
        announcing: None,
        cleared: HashSet::new(),
        controls_pending: Vec::new(),
        removed_topics: Vec::new(),
    };
    p.after = p.inputs.events.newest();
    p.cams = p
        .inputs
        .cameras
        .iter()
        .map(|_| CameraTrack {
            state: None,
            job: Vec::new(),
            job_at: None,
            snapshot_seq: 0,
            snapshot_at: None,
            controls_gen: 0,
            controls_announced: Vec::new(),
            controls_state: Vec::new(),
        })
        .collect();
    p.ours = p
        .inputs
        .cameras
        .iter()
        .flat_map(|c| discovery::configs(&p.names, &c.name, c.config.source.kind_name()))
        .map(|c| c.topic)
        .collect();
    log::info!(
        "mqtt: publishing under {} to {} (discovery {})",
        p.names.topic_prefix,
        p.stats.broker,
        p.names.discovery_prefix.as_deref().unwrap_or("off")
    );
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => p.round(),
            Some(link) = p.links.recv() => p.on_link(link),
            ended = &mut net => {
                // The network task returns on its own only once the stop token is set; a panic
                // or an early end would leave the link dead while the rest looks fine.
                if !stop.is_set() || ended.as_ref().is_err_and(tokio::task::JoinError::is_panic) {
                    let what = if ended.is_err() { Broke::Panicked } else { Broke::Ended };
                    stop.fail("mqtt (network task)", what);
                }
                p.stats.connected.store(false, Relaxed);
                return;
            }
        }
    }
    // Shutdown stops every job too: publish their final states before saying offline, so the
    // retained state is not left at RUNNING or STOPPING. Only states and availability still
    // matter (the rest is dropped, counted); rounds run every 10 ms until the jobs have
    // settled and the outbox is empty, bounded.
    p.outbox.keep_precious();
    p.announcement.clear();
    let until = Instant::now() + SHUTDOWN_WAIT;
    loop {
        p.round();
        let settled = !p.inputs.cameras.iter().any(|c| c.state().is_active());
        if (settled && p.outbox.is_empty()) || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.goodbye(net).await;
}

/// What happened on the link, as the network task tells the publisher (in order).
#[derive(Debug)]
enum Link {
    /// Connected (the broker's CONNACK): announce and subscribe.
    Up,
    /// The connection dropped; publishes it took with it follow as [`Link::Returned`].
    Down,
    /// A message from the broker: a command, or a retained leftover of an earlier run.
    Incoming(Publish),
    /// A publish rumqttc would forget at the reconnection (clean session): back to the outbox.
    Returned(Publish),
}

/// Drives rumqttc's event loop until the stop token is set (or the disconnect went out).
async fn network(mut ev: EventLoop, stats: Arc<Stats>, link: mpsc::Sender<Link>, stop: Stop) {
    let mut backoff = Backoff::new(u64::from(std::process::id()) ^ crate::clock::unix_now().to_bits());
    let mut up_since: Option<Instant> = None;
    // Connections in a row that the broker closed within STABLE of opening.
    let mut short_lived = 0u32;
    loop {
        let event = ev.poll().await;
        stats.inflight.store(u64::from(ev.state.inflight()), Relaxed);
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                assert!(!testhook::hit(Fault::MqttPanic), "test hook: {}", Fault::MqttPanic.name());
                up_since = Some(Instant::now());
                stats.set_error(None);
                stats.connected.store(true, Relaxed);
                stats.connections.fetch_add(1, Relaxed);
                log::info!("mqtt: connected to {}", stats.broker);
                // Waits for room (the publisher drains every round): a connection must be
                // announced. Err: the publisher is gone, shutting down.
                let _ = link.send(Link::Up).await;
            }
            Ok(Event::Incoming(Packet::Publish(m))) if m.payload.len() > MAX_MESSAGE => {
                // Read whole (rumqttc cannot skip a packet), refused here: the link stays up.
                let why = format!(
                    "refused a message of {} bytes on {} (camjobd reads at most {} KiB); the connection stays up",
                    m.payload.len(),
                    m.topic,
                    MAX_MESSAGE >> 10
                );
                OVERSIZE_LOG.warn(format_args!("mqtt: {why}"));
                // The reason before the count: whoever sees the count finds the reason.
                stats.set_error(Some(why));
                stats.incoming_refused.fetch_add(1, Release);
            }
            Ok(Event::Incoming(Packet::Publish(m))) => {
                if link.try_send(Link::Incoming(m)).is_err() {
                    stats.incoming_dropped.fetch_add(1, Relaxed);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                stats.published.fetch_add(1, Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Read until the broker closes the socket: it has then read everything written
                // before (closing with its acks unread would reset the connection, and the
                // broker would drop what it had not read yet and send the will).
                let _ = tokio::time::timeout(CLOSE_WAIT, async { while ev.poll().await.is_ok() {} }).await;
                stats.connected.store(false, Relaxed);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let was = stats.connected.swap(false, Relaxed);
                if was {
                    let _ = link.send(Link::Down).await;
                }
                // Publishes written but not acknowledged, and requests not yet written: rumqttc
                // keeps them for a session the broker does not keep (clean session), so they
                // go back to the outbox, or are counted as dropped.
                for r in ev.pending.drain(..) {
                    if let rumqttc::Request::Publish(p) = r {
                        if link.try_send(Link::Returned(p)).is_err() {
                            stats.lost.fetch_add(1, Relaxed);
                        }
                    }
                }
                // The backoff restarts only after a connection that lasted: one the broker
                // closes at once (a too-large retained message, another client with our id)
                // must not be retried every second forever.
                match up_since.take() {
                    Some(t) if t.elapsed() >= STABLE => {
                        backoff.reset();
                        short_lived = 0;
                    }
                    Some(_) => short_lived += 1,
                    None => {}
                }
                let mut why = describe(&e);
                if short_lived >= 3 {
                    why.push_str("; the broker keeps closing the connection right after it opens: another client using this mqtt.client_id (two boards with the same hostname?), or a retained message over 1 MiB on one of camjobd's topics");
                }
                if was {
                    log::warn!("mqtt: lost {}: {why}", stats.broker);
                } else if stats.last_error().as_deref() != Some(why.as_str()) {
                    log::warn!("mqtt: cannot connect to {}: {why}", stats.broker);
                }
                stats.set_error(Some(why));
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// A connection error as a sentence that says what to check.
fn describe(e: &ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as C;
    match e {
        ConnectionError::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => {
            "the broker refused the connection as not authorized: check mqtt.username and mqtt.password_file (mosquitto: its password_file, allow_anonymous)".into()
        }
        ConnectionError::ConnectionRefused(C::BadClientId) => {
            "the broker refused the client id: set mqtt.client_id (each camjobd needs its own)".into()
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: is the broker running, and is mqtt.url's port right?".into()
        }
        ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp) => {
            "the broker did not answer a keep-alive ping (stopped, overloaded or unreachable)".into()
        }
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::PayloadSizeLimitExceeded(n))) => {
            format!("the broker sent a message of {n} bytes on one of camjobd's subscriptions (commands; retained states and discovery configs just after connecting), over the {} KiB camjobd can read without dropping the connection: find who publishes it; if it is retained, clear it (mosquitto_pub -r -n -t TOPIC)", READ_LIMIT >> 10)
        }
        ConnectionError::NetworkTimeout => "no answer from the broker within 5 s".into(),
        ConnectionError::FlushTimeout => "the broker stopped reading (nothing written for 5 s)".into(),
        ConnectionError::Tls(t) => format!("TLS: {t} (mqtts:// needs the broker's CA in mqtt.ca_file or the system roots)"),
        other => other.to_string(),
    }
}

struct Publisher {
    /// The cameras and events it reads, the channel commands go to.
    inputs: Arc<Inputs>,
    names: Names,
    client: AsyncClient,
    stats: Arc<Stats>,
    outbox: Outbox,
    /// Discovery topics this run announces (anything else of ours found retained is cleared).
    ours: HashSet<String>,
    cams: Vec<CameraTrack>,
    /// The newest event seq already queued.
    after: u64,
    /// Events overwritten in the ring before they could be queued.
    gaps: u64,
    /// A connection came up that is not announced yet.
    announce_due: bool,
    /// A connection came up whose subscriptions are not made yet.
    subscribe_due: bool,
    /// Publishes a lost connection took with it, in order, to go back to the outbox's front.
    returned: Vec<Message>,
    pending: Vec<Pending>,
    snapshot_every: Option<Duration>,
    /// What the network task says, in order.
    links: mpsc::Receiver<Link>,
    /// While set: the leftover-finding subscriptions are open until then.
    cleanup_until: Option<Instant>,
    /// The rest of the last (re)connection's announcement, fed to the outbox as it has room.
    announcement: VecDeque<Message>,
    /// Set while `announce` collects.
    announcing: Option<VecDeque<Message>>,
    /// Leftover topics cleared since the last (re)connection: each is cleared once, however
    /// many ways it is found (a removed camera's state names its configs, which also arrive).
    cleared: HashSet<String>,
    /// Control changes handed to a camera: where to answer a refusal.
    controls_pending: Vec<(String, oneshot::Receiver<Outcome>)>,
    /// Removed cameras' retained topics, cleared when the leftover search ends (after every
    /// discovery config, so Home Assistant drops the entities before their values empty).
    removed_topics: Vec<String>,
}

/// Leftover topics remembered as cleared, at most (a broker holding more under our prefix
/// gets the rest cleared again if they come twice, which is harmless).
const CLEARED_MAX: usize = 4096;

impl Publisher {
    fn push(&mut self, topic: String, payload: impl Into<Vec<u8>>, kind: Kind) {
        let m = Message { topic, payload: payload.into(), kind };
        match &mut self.announcing {
            Some(a) => a.push_back(m),
            None => {
                self.outbox.push(m);
            }
        }
    }

    /// Moves the discovery configs into the outbox while it is at most half full: they are as
    /// many as the cameras make them (10 each) and must neither push out what waits or comes
    /// next nor be cut by the limit.
    fn feed_announcement(&mut self) {
        while self.outbox.half_empty() {
            match self.announcement.pop_front() {
                Some(m) => {
                    self.outbox.push(m);
                }
                None => break,
            }
        }
    }

    /// What the network task said.
    fn on_link(&mut self, link: Link) {
        match link {
            Link::Up => (self.announce_due, self.subscribe_due) = (true, true),
            // Announced and subscribed again at the next Up.
            Link::Down => {}
            Link::Incoming(m) => self.incoming(m),
            Link::Returned(p) => self.returned.push(Message {
                kind: self.classify(&p.topic),
                topic: p.topic,
                payload: p.payload.to_vec(),
            }),
        }
    }

    /// One round: announce a new connection, queue what changed, act on what came in, send.
    fn round(&mut self) {
        // What came since the last look (the select takes most of it at once; this is for the
        // shutdown rounds, which do not select).
        while let Ok(link) = self.links.try_recv() {
            self.on_link(link);
        }
        let connected = self.stats.connected.load(Relaxed);
        if connected && std::mem::take(&mut self.announce_due) {
            self.announce();
        }
        if connected && self.subscribe_due && self.subscribe() {
            self.subscribe_due = false;
            self.cleanup_until = Some(Instant::now() + CLEANUP_WINDOW);
        }
        if connected && self.cleanup_until.is_some_and(|t| Instant::now() >= t) && self.unsubscribe_cleanup() {
            self.cleanup_until = None;
            // Every stale config (a removed camera's control entities arrive on their own) is
            // cleared by now: the removed cameras' topics go after them.
            for topic in std::mem::take(&mut self.removed_topics) {
                self.clear(topic);
            }
        }
        self.take_back_lost();
        self.feed_announcement();
        self.queue_events();
        let now = Instant::now();
        for i in 0..self.cams.len() {
            self.queue_job(i, now, false);
            self.queue_snapshot(i, now, false);
            if connected {
                self.queue_controls(i);
            }
        }
        self.answer_commands(now);
        self.answer_controls();
        if self.stats.connected.load(Relaxed) {
            self.send();
            self.feed_announcement();
        }
        self.stats.queued.store(self.outbox.len() as u64, Relaxed);
        self.stats.dropped.store(self.outbox.dropped() + self.gaps + self.stats.lost.load(Relaxed), Relaxed);
    }

    /// After every (re)connection: availability, discovery, and each camera's state, job and
    /// snapshot, fresh (retained messages are what a new subscriber and Home Assistant read).
    fn announce(&mut self) {
        // First, ahead of whatever waited while the broker was away.
        self.outbox.push_front(Message {
            topic: self.names.availability(),
            payload: b"online".to_vec(),
            kind: Kind::Availability,
        });
        // Discovery configs wait in `announcement` (they are many, and they never change).
        // States go through the outbox like every later state, which keeps them in order.
        self.announcement.clear();
        self.cleared.clear();
        self.removed_topics.clear();
        self.announcing = Some(std::mem::take(&mut self.announcement));
        let inputs = Arc::clone(&self.inputs);
        for c in &inputs.cameras {
            for d in discovery::configs(&self.names, &c.name, c.config.source.kind_name()) {
                self.push(d.topic, d.payload.to_string(), Kind::Discovery);
            }
        }
        self.announcement = self.announcing.take().unwrap_or_default();
        let now = Instant::now();
        for (i, c) in inputs.cameras.iter().enumerate() {
            let state = c.state();
            self.cams[i].state = Some(state);
            // The job (with its reason) before the state, as on every change.
            self.queue_job(i, now, true);
            self.push(self.names.camera(&c.name, "state"), state.as_str(), Kind::State);
            self.queue_snapshot(i, now, true);
            // Controls are announced again by the next round, once their list is known.
            let t = &mut self.cams[i];
            (t.controls_gen, t.controls_announced, t.controls_state) = (0, Vec::new(), Vec::new());
        }
    }

    /// Commands of every camera, and (for a few seconds) the retained messages that show what
    /// earlier runs left.
    fn subscribe(&mut self) -> bool {
        let topics = [self.names.camera("+", "command"), self.names.camera("+", "controls/set")]
            .into_iter()
            .chain(self.cleanup_filters());
        let filters = topics.map(|t| rumqttc::SubscribeFilter::new(t, QoS::AtLeastOnce));
        self.client.try_subscribe_many(filters).is_ok()
    }

    fn cleanup_filters(&self) -> Vec<String> {
        let mut topics = vec![self.names.camera("+", "state")];
        if let Some(d) = &self.names.discovery_prefix {
            topics.push(format!("{d}/+/{}/+/config", self.names.node_id));
        }
        topics
    }

    /// Ends the leftover search: retained messages arrive right after the subscription.
    fn unsubscribe_cleanup(&mut self) -> bool {
        self.cleanup_filters().into_iter().all(|t| self.client.try_unsubscribe(t).is_ok())
    }

    /// Puts back, at the front and in order, what a lost connection took with it.
    fn take_back_lost(&mut self) {
        for m in self.returned.drain(..).rev() {
            self.outbox.push_front(m);
        }
    }

    /// What a topic of ours carries.
    fn classify(&self, topic: &str) -> Kind {
        if topic == self.names.availability() {
            return Kind::Availability;
        }
        let Some(rest) = topic.strip_prefix(self.names.topic_prefix.as_str()).and_then(|r| r.strip_prefix('/')) else {
            return Kind::Discovery;
        };
        match rest.split_once('/').map(|(_, leaf)| leaf) {
            _ if rest == "events" => Kind::Event,
            Some("state") => Kind::State,
            Some("job") => Kind::Job,
            Some("snapshot" | "snapshot_url") => Kind::Snapshot,
            Some("command/result" | "controls/set/result") => Kind::CommandResult,
            Some("controls") => Kind::State,
            _ => Kind::Discovery,
        }
    }

    /// Events since the last round, each on `events`; state events also on `<camera>/state`.
    fn queue_events(&mut self) {
        let mut page: Vec<LogEvent> = Vec::new();
        let next = self.inputs.events.page(self.after, crate::events::MAX_PAGE, &mut page);
        if let Some(first) = page.first() {
            self.gaps += first.seq.saturating_sub(self.after + 1);
        }
        self.after = next;
        let mut changed = vec![false; self.cams.len()];
        let now = Instant::now();
        for e in &page {
            let topic = format!("{}/events", self.names.topic_prefix);
            self.push(topic, serde_json::to_vec(e).expect("plain data"), Kind::Event);
            let (EventKind::State, Some(state)) = (e.kind, e.state) else { continue };
            let Some(i) = self.inputs.camera_index(&e.camera) else { continue };
            changed[i] = true;
            if self.cams[i].state != Some(state) {
                self.cams[i].state = Some(state);
                // The job JSON first, with the reason: an automation triggered by the state
                // reads it as the state's attributes.
                self.queue_job(i, now, true);
                self.push(self.names.camera(&e.camera, "state"), state.as_str(), Kind::State);
            }
        }
        // A change whose event was overwritten before this round (never in practice: the
        // ring holds 256 and this runs 10 times a second) still reaches the broker.
        let inputs = Arc::clone(&self.inputs);
        for (i, c) in inputs.cameras.iter().enumerate() {
            let state = c.state();
            if !changed[i] && self.cams[i].state.is_some() && self.cams[i].state != Some(state) {
                self.cams[i].state = Some(state);
                self.queue_job(i, now, true);
                self.push(self.names.camera(&c.name, "state"), state.as_str(), Kind::State);
            }
        }
    }

    /// The job JSON (the API's, plus `last_frame_age_s`) when it changed, at most once a second.
    fn queue_job(&mut self, i: usize, now: Instant, force: bool) {
        let due = self.cams[i].job_at.is_none_or(|t| now.duration_since(t) >= JOB_EVERY);
        if !(force || due) {
            return;
        }
        let cam = Arc::clone(&self.inputs.cameras[i]);
        let payload = job_payload(&cam);
        self.cams[i].job_at = Some(now);
        if force || payload != self.cams[i].job {
            self.cams[i].job.clone_from(&payload);
            self.push(self.names.camera(&cam.name, "job"), payload, Kind::Job);
        }
    }

    /// The newest kept snapshot, as a URL (or the JPEG), when a new one was kept, at most
    /// every `snapshot_interval_s`.
    fn queue_snapshot(&mut self, i: usize, now: Instant, force: bool) {
        let cam = Arc::clone(&self.inputs.cameras[i]);
        let Some(meta) = cam.snapshots.latest_meta() else { return };
        let t = &self.cams[i];
        let due = match (self.snapshot_every, t.snapshot_at) {
            (_, None) => true,
            (Some(every), Some(at)) => now.duration_since(at) >= every,
            (None, Some(_)) => false,
        };
        if !(force || (due && meta.seq != t.snapshot_seq)) {
            return;
        }
        if self.names.snapshot_jpeg {
            // Copy and let go of capture's buffer at once.
            let Some(jpeg) = cam.snapshots.latest().map(|f| f.bytes().to_vec()) else { return };
            self.push(self.names.camera(&cam.name, "snapshot"), jpeg, Kind::Snapshot);
        } else {
            let url = format!("{}/api/cameras/{}/latest.jpg?seq={}", self.names.http_url, cam.name, meta.seq);
            self.push(self.names.camera(&cam.name, "snapshot_url"), url, Kind::Snapshot);
        }
        self.cams[i].snapshot_seq = meta.seq;
        self.cams[i].snapshot_at = Some(now);
    }

    /// A message from the broker: a command, or a retained message of ours to look at.
    fn incoming(&mut self, m: Publish) {
        let Some(rest) = m.topic.strip_prefix(&format!("{}/", self.names.topic_prefix)) else {
            return self.stale_discovery(&m);
        };
        match rest.split_once('/') {
            Some((camera, "command")) => self.command(camera, &m),
            Some((camera, "controls/set")) => self.control_set(camera, &m),
            Some((camera, "state"))
                if m.retain && !m.payload.is_empty() && self.inputs.camera_index(camera).is_none() =>
            {
                // A camera removed from the config: clear what it left retained, its discovery
                // configs first, so that Home Assistant drops the entities before their
                // topics empty (else it warns about every empty value it still parses).
                CLEANUP_LOG.info(format_args!(
                    "mqtt: clearing the retained topics of camera {camera:?} (no longer configured)"
                ));
                for d in discovery::configs(&self.names, camera, "") {
                    self.clear(d.topic);
                }
                for leaf in ["state", "job", "snapshot_url", "snapshot", "controls"] {
                    let topic = self.names.camera(camera, leaf);
                    if !self.removed_topics.contains(&topic) && self.removed_topics.len() < CLEARED_MAX {
                        self.removed_topics.push(topic);
                    }
                }
            }
            _ => {}
        }
    }

    /// A retained discovery config under our node id that this run does not announce (a
    /// removed camera, an entity no longer offered): cleared with an empty retained payload.
    fn stale_discovery(&mut self, m: &Publish) {
        // A configured camera's control entities are announced once its list is known (after
        // it opens): until then, those left retained are its own, not stale.
        let controls_of_ours =
            self.inputs.cameras.iter().any(|c| controls::is_control_topic(&self.names, &c.name, &m.topic));
        if m.retain
            && !m.payload.is_empty()
            && m.topic.ends_with("/config")
            && !self.ours.contains(&m.topic)
            && !controls_of_ours
        {
            CLEANUP_LOG.info(format_args!("mqtt: clearing stale discovery config {}", m.topic));
            self.clear(m.topic.clone());
        }
    }

    /// Clears a leftover retained topic (an empty retained payload), once per connection, in
    /// the order asked, paced like the announcement: a removed camera's 14 topics must neither
    /// push out what waits in the outbox nor be cut by its limit.
    fn clear(&mut self, topic: String) {
        if self.cleared.contains(&topic) {
            return;
        }
        if self.cleared.len() < CLEARED_MAX {
            self.cleared.insert(topic.clone());
        }
        self.announcement.push_back(Message { topic, payload: Vec::new(), kind: Kind::Discovery });
        self.feed_announcement();
    }

    fn command(&mut self, camera: &str, m: &Publish) {
        let refuse = |p: &mut Publisher, error: &str, message: String| {
            p.stats.commands_refused.fetch_add(1, Relaxed);
            REFUSED_LOG.warn(format_args!("mqtt: command on {} refused: {message}", m.topic));
            let body = serde_json::json!({"ok": false, "error": error, "message": message});
            p.push(format!("{}/result", m.topic), body.to_string(), Kind::CommandResult);
        };
        let Some(index) = self.inputs.camera_index(camera) else {
            // Not ours to answer on a topic of a camera we do not have: say it once, in the log.
            self.stats.commands_refused.fetch_add(1, Relaxed);
            UNKNOWN_LOG.warn(format_args!("mqtt: command for unknown camera {camera:?} ignored"));
            return;
        };
        if m.retain {
            // A retained command would run again at every reconnect.
            return refuse(
                self,
                "retained",
                "retained commands are ignored: publish commands without the retain flag".into(),
            );
        }
        let action = match command::parse(&m.payload) {
            Ok(a) => a,
            Err(e) => return refuse(self, "bad_command", e),
        };
        if self.pending.len() >= PENDING_COMMANDS {
            return refuse(self, "busy", "too many commands at once; try again".into());
        }
        let (tx, rx) = oneshot::channel();
        let cmd = match action {
            Action::Start(limits) => Command::Start { camera: index, limits, reply: tx },
            Action::Stop => Command::Stop { camera: index, reply: tx },
        };
        if self.inputs.commands.try_send(cmd).is_err() {
            return refuse(self, "busy", "the job supervisor is busy; try again".into());
        }
        self.pending.push(Pending { camera: index, action, reply: rx, deadline: Instant::now() + COMMAND_TIMEOUT });
    }

    /// Publishes the supervisor's answers on `<camera>/command/result`.
    fn answer_commands(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            let answer = match p.reply.try_recv() {
                Ok(r) => Some(r),
                Err(oneshot::error::TryRecvError::Empty) if now < p.deadline => None,
                Err(_) => Some(Err(Refusal::Conflict(
                    "the supervisor did not answer; check the state before retrying".into(),
                ))),
            };
            let Some(answer) = answer else {
                i += 1;
                continue;
            };
            let p = self.pending.swap_remove(i);
            let name = self.inputs.cameras[p.camera].name.clone();
            let body = match answer {
                Ok(job) => {
                    self.stats.commands.fetch_add(1, Relaxed);
                    serde_json::json!({"ok": true, "action": p.action.name(), "job_id": job.id, "state": job.state})
                }
                Err(r) => {
                    self.stats.commands_refused.fetch_add(1, Relaxed);
                    let (error, message) = match r {
                        Refusal::Conflict(m) => ("conflict", m),
                        Refusal::IdsExhausted(m) => ("ids_exhausted", m),
                    };
                    serde_json::json!({"ok": false, "action": p.action.name(), "error": error, "message": message})
                }
            };
            self.push(self.names.camera(&name, "command/result"), body.to_string(), Kind::CommandResult);
        }
    }

    /// Moves messages to the client until its small queue is full.
    fn send(&mut self) {
        while let Some(m) = self.outbox.pop() {
            let qos = if m.kind.at_least_once() { QoS::AtLeastOnce } else { QoS::AtMostOnce };
            match self.client.try_publish(&m.topic, qos, m.kind.retained(), m.payload) {
                Ok(()) => {}
                Err(ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                    self.outbox.requeue(Message { topic: m.topic, payload: p.payload.to_vec(), kind: m.kind });
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// At shutdown: `offline` (retained) and a clean disconnect, each waited for at most
    /// [`ACK_WAIT`] and [`CLOSE_WAIT`] (400 ms) plus 100 ms.
    /// Should either not go out, the broker sends the last will (`offline`) when the socket
    /// closes.
    async fn goodbye(self, net: tokio::task::JoinHandle<()>) {
        if self.stats.connected.load(Relaxed) {
            let bye = async {
                self.client.publish(self.names.availability(), QoS::AtLeastOnce, true, "offline").await?;
                // The final states and `offline` acknowledged (bounded), then the disconnect.
                let until = Instant::now() + ACK_WAIT;
                while self.stats.inflight.load(Relaxed) > 0 && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                self.client.disconnect().await
            };
            let _ = tokio::time::timeout(ACK_WAIT + Duration::from_millis(100), bye).await;
            let _ = tokio::time::timeout(CLOSE_WAIT + Duration::from_millis(100), net).await;
        }
        self.stats.connected.store(false, Relaxed);
    }
}

/// The API's job JSON plus `last_frame_age_s` (seconds since the last good frame, while the
/// job captures or after it failed; `null` otherwise).
fn job_payload(cam: &CameraShared) -> Vec<u8> {
    let view = cam.view().job;
    let age = match (view.state, view.last_frame_at) {
        (s, Some(at)) if s.is_capturing() || s == JobState::Failed => {
            Some(((crate::clock::unix_now() - at).max(0.0) * 10.0).round() / 10.0)
        }
        _ => None,
    };
    let mut v = serde_json::to_value(&view).expect("plain data");
    if let Value::Object(o) = &mut v {
        o.insert("last_frame_age_s".into(), age.into());
    }
    serde_json::to_vec(&v).expect("plain data")
}
