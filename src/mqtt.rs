//! MQTT: camjobd's state, events and commands on a broker people already run, with Home
//! Assistant discovery, a last will and a bounded outbox.
//!
//! One `mqtt` thread runs a small tokio runtime with the client's network loop
//! (`link`). It *reads* published state (job records, the event ring, the snapshot ring)
//! every 100 ms, like the LED does, so capture, HTTP and the watchdog never wait on it;
//! commands go to the supervisor's bounded channel like the API's. What waits for the broker
//! waits in a fixed [`outbox::Outbox`]; when it is full, the oldest message that is not a
//! state or availability message is dropped and counted ([`Stats`]).
//!
//! - [`outbox`]: the bounded queue and its drop policy (pure).
//! - [`command`]: command payloads (pure).
//! - [`discovery`]: Home Assistant discovery configs (pure).
//! - `link`: the thread: connect, reconnect with jittered backoff, publish, subscribe.

pub mod command;
pub mod controls;
pub mod discovery;
mod link;
pub mod outbox;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use serde_json::{json, Value};

use crate::config::mqtt::BrokerUrl;
use crate::config::{Config, ConfigError, MqttConfig};
use crate::error::Error;
use crate::events::EventLog;
use crate::shutdown::Stop;
use crate::status::{CameraShared, Command, Shared};

/// The names camjobd uses on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Every topic but discovery's is under this (`camjobd/<hostname>`).
    pub topic_prefix: String,
    /// Home Assistant's discovery prefix; `None`: no discovery.
    pub discovery_prefix: Option<String>,
    /// Discovery's node id and the stem of every `unique_id` (the client id).
    pub node_id: String,
    /// This machine's name, for device names.
    pub host: String,
    /// Base URL of the HTTP API as other machines reach it (no trailing `/`).
    pub http_url: String,
    /// Snapshots travel as JPEG on `<camera>/snapshot` (else as a URL on `<camera>/snapshot_url`).
    pub snapshot_jpeg: bool,
}

impl Names {
    /// `<prefix>/availability`.
    pub fn availability(&self) -> String {
        format!("{}/availability", self.topic_prefix)
    }
    /// `<prefix>/<camera>/<leaf>`.
    pub fn camera(&self, camera: &str, leaf: &str) -> String {
        format!("{}/{camera}/{leaf}", self.topic_prefix)
    }
}

/// Everything the `mqtt` thread needs, resolved at start-up (files read, defaults filled).
pub struct Settings {
    options: MqttOptions,
    names: Names,
    outbox: usize,
    snapshot_every: Option<Duration>,
}

/// This machine's name, made safe for topics and ids (`A-Z a-z 0-9 _ -`; anything else `-`).
pub fn hostname() -> String {
    let raw = crate::sys::hostname().unwrap_or_default();
    let name: String =
        raw.chars().take(48).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    if name.is_empty() {
        "camjobd".into()
    } else {
        name
    }
}

impl Settings {
    /// Resolves the `mqtt` section: defaults from the host name, the TLS roots read and
    /// checked (so `--check-config` and the start refuse a bad `ca_file` before anything runs).
    pub fn resolve(config: &Config, m: &MqttConfig) -> Result<Settings, Error> {
        let host = hostname();
        let url = BrokerUrl::parse(&m.url)
            .map_err(|message| Error::Config(ConfigError { path: "mqtt.url".into(), message }))?;
        let client_id = m.client_id.clone().unwrap_or_else(|| format!("camjobd-{host}"));
        let names = Names {
            topic_prefix: m.topic_prefix.clone().unwrap_or_else(|| format!("camjobd/{host}")),
            discovery_prefix: m.discovery_prefix.clone(),
            node_id: client_id.clone(),
            http_url: crate::config::public_base_url(m.http_url.as_deref(), config.bind_addr(), &host),
            host,
            snapshot_jpeg: m.snapshot_jpeg,
        };
        let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
        o.set_keep_alive(Duration::from_secs(m.keepalive_s))
            .set_clean_session(true)
            .set_last_will(LastWill::new(names.availability(), "offline", QoS::AtLeastOnce, true))
            // Retained configs and commands are at most a few KiB: larger messages are read
            // (up to READ_LIMIT) and refused, so the incoming queue holds at most 64 KiB each;
            // a JPEG goes out.
            .set_max_packet_size(
                link::READ_LIMIT,
                config.cameras.iter().map(|c| c.max_frame_bytes + 4096).max().unwrap_or(0).max(64 << 10),
            )
            .set_inflight(link::INFLIGHT);
        if let Some(user) = &m.username {
            o.set_credentials(user.clone(), m.password.clone().unwrap_or_default());
        }
        if url.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls_config(m)?))));
        }
        Ok(Settings {
            options: o,
            names,
            outbox: m.outbox,
            snapshot_every: m.snapshot_interval_s.map(Duration::from_secs),
        })
    }

    /// Links discovery to the address the HTTP API is bound to (port 0 resolved), unless
    /// `mqtt.http_url` says otherwise.
    pub fn bound_to(mut self, m: &MqttConfig, bound: SocketAddr) -> Settings {
        self.names.http_url = crate::config::public_base_url(m.http_url.as_deref(), bound, &self.names.host);
        self
    }

    /// The names camjobd will use.
    pub fn names(&self) -> &Names {
        &self.names
    }
}

/// rustls with the `ring` provider and the roots of `ca_file` or of the system.
fn tls_config(m: &MqttConfig) -> Result<rustls::ClientConfig, Error> {
    let fail = |path: &str, message: String| Error::Config(ConfigError { path: path.into(), message });
    let mut roots = rustls::RootCertStore::empty();
    match &m.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                fail(
                    "mqtt.ca_file",
                    format!("cannot read {}: {e}; the service user needs read access to it", path.display()),
                )
            })?;
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| fail("mqtt.ca_file", format!("{}: not PEM: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(fail("mqtt.ca_file", format!("{}: no usable CERTIFICATE block in it", path.display())));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(fail(
                    "mqtt.url",
                    "mqtts:// with the system's roots, but this system has none: install ca-certificates or set mqtt.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Fatal(format!("TLS set-up: {e}")))?;
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Counters of the MQTT link, for `/api/status` and `/metrics`.
#[derive(Default)]
pub struct Stats {
    /// The broker URL (no secrets in it).
    pub broker: String,
    /// Connected to the broker now (CONNACK received, no error since).
    pub connected: AtomicBool,
    /// Successful connections since start.
    pub connections: AtomicU64,
    /// Messages written to the broker connection.
    pub published: AtomicU64,
    /// Messages dropped: outbox full, or events overwritten before they could be queued.
    pub dropped: AtomicU64,
    /// Messages waiting in the outbox now.
    pub queued: AtomicU64,
    /// Commands handed to the supervisor.
    pub commands: AtomicU64,
    /// Commands refused (malformed, unknown camera, retained, refused by the supervisor).
    pub commands_refused: AtomicU64,
    /// Incoming messages dropped because the publisher had not taken the earlier ones yet.
    pub incoming_dropped: AtomicU64,
    /// Incoming messages refused as larger than 64 KiB (the connection stays up).
    pub incoming_refused: AtomicU64,
    /// Publishes a lost connection took with it that could not be put back (part of `dropped`).
    pub lost: AtomicU64,
    /// QoS 1 publishes not yet acknowledged (for the shutdown's wait).
    pub inflight: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    /// Counters for a link to `broker`.
    pub fn new(broker: &str) -> Stats {
        Stats { broker: broker.to_string(), ..Stats::default() }
    }
    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
    /// The last connection error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// The `mqtt` object of `/api/status`.
    pub fn to_json(&self) -> Value {
        json!({
            "broker": self.broker,
            "connected": self.connected.load(Relaxed),
            "connections": self.connections.load(Relaxed),
            "published": self.published.load(Relaxed),
            "dropped": self.dropped.load(Relaxed),
            "queued": self.queued.load(Relaxed),
            "commands": self.commands.load(Relaxed),
            "commands_refused": self.commands_refused.load(Relaxed),
            "incoming_dropped": self.incoming_dropped.load(Relaxed),
            "incoming_refused": self.incoming_refused.load(Relaxed),
            "last_error": self.last_error(),
        })
    }
}

/// Reconnect delays: 1 s doubling to 60 s, each ±20 % at random (so a fleet that lost its
/// broker does not come back in lockstep); back to 1 s after a connection.
pub struct Backoff {
    next: Duration,
    seed: u64,
}

/// The longest wait between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Backoff {
    /// Starts at 1 s; `seed` varies the jitter between processes.
    pub fn new(seed: u64) -> Backoff {
        Backoff { next: Duration::from_secs(1), seed: seed | 1 }
    }
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: plenty for jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + 0.4 * (self.seed % 10_000) as f64 / 10_000.0;
        let d = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }
    /// After a successful connection.
    pub fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }
}

/// What the `mqtt` thread reads and where it sends commands: nothing else of the shared state.
pub struct Inputs {
    /// The cameras, in config order (commands name them by index).
    pub cameras: Vec<Arc<CameraShared>>,
    /// The event log, read by seq for the `events` topic and state changes.
    pub events: Arc<EventLog>,
    /// The supervisor's command channel.
    pub commands: Sender<Command>,
}

impl Inputs {
    /// The `mqtt` thread's part of `shared`.
    pub fn from(shared: &Shared) -> Inputs {
        Inputs {
            cameras: shared.cameras.clone(),
            events: Arc::clone(&shared.events),
            commands: shared.commands.clone(),
        }
    }

    /// The index of the camera called `name`.
    pub fn camera_index(&self, name: &str) -> Option<usize> {
        self.cameras.iter().position(|c| c.name == name)
    }
}

/// Starts the `mqtt` thread (the caller names and spawns it with `run`).
pub fn run(inputs: Inputs, settings: Settings, stats: Arc<Stats>, stop: Stop) {
    // One blocking thread at most (rumqttc resolves the broker's name on it): the thread count
    // stays what `crate::budget` counts.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build() {
        Ok(rt) => rt,
        Err(e) => {
            // The link is part of what the user configured: without it camjobd is not well.
            log::error!("mqtt: cannot start its runtime: {e}");
            stats.set_error(Some(format!("cannot start: {e}")));
            stop.fail("mqtt", crate::shutdown::Broke::NotStarted);
            return;
        }
    };
    rt.block_on(link::run(Arc::new(inputs), settings, stats, stop));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new(42);
        let mut base = 1.0f64;
        for _ in 0..12 {
            let d = b.next_delay().as_secs_f64();
            assert!(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9, "{d} for base {base}");
            base = (base * 2.0).min(60.0);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
        // Two processes do not wait the same.
        let (mut x, mut y) = (Backoff::new(1), Backoff::new(2));
        assert!((0..5).any(|_| x.next_delay() != y.next_delay()));
    }
}
