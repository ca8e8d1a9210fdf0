//! The `mqtt` section: where the broker is, who camjobd is on it, and what it publishes.
//! Absent or `null` turns MQTT off. Everything here is checked at start-up (exit 2 naming the
//! key); a broker that is down is not a config error (camjobd connects when it comes up).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError};

/// The broker connection and the topics camjobd uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS, 8883).
    pub url: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// A file holding the password (first line), read at start-up; needs `username`.
    pub password_file: Option<PathBuf>,
    /// The password read from `password_file` (never printed, never in the config file).
    #[serde(skip)]
    pub password: Option<String>,
    /// For `mqtts://`: a PEM file of the CA(s) that signed the broker's certificate
    /// (`null`: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// `null`: `camjobd-<hostname>`.
    pub client_id: Option<String>,
    /// `null`: `camjobd/<hostname>`.
    pub topic_prefix: Option<String>,
    /// Home Assistant's discovery prefix; `null` turns discovery off.
    pub discovery_prefix: Option<String>,
    /// Seconds between keep-alive pings; the broker declares camjobd gone (the last will,
    /// `offline`) after 1.5 times this without a word.
    pub keepalive_s: u64,
    /// Messages waiting for the broker at most; when full the oldest that is not a state or
    /// availability message is dropped and counted.
    pub outbox: usize,
    /// Base URL other machines reach the HTTP API at, for the snapshot and dashboard links in
    /// discovery (`null`: from `http.bind`; with `0.0.0.0` or `::` the host's name is used).
    pub http_url: Option<String>,
    /// Announce the newest kept snapshot at most this often, in seconds (Home Assistant's image
    /// entity then shows it); `null`: once per connection.
    pub snapshot_interval_s: Option<u64>,
    /// Send the snapshot itself (JPEG, retained, on `<camera>/snapshot`) instead of its URL
    /// (on `<camera>/snapshot_url`): for a Home Assistant that cannot reach the HTTP API.
    pub snapshot_jpeg: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            username: None,
            password_file: None,
            password: None,
            ca_file: None,
            client_id: None,
            topic_prefix: None,
            discovery_prefix: Some("homeassistant".into()),
            keepalive_s: 30,
            outbox: 256,
            http_url: None,
            snapshot_interval_s: Some(10),
            snapshot_jpeg: false,
        }
    }
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (`[v6]:port` for IPv6).
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?} must start with mqtt:// or mqtts:// (for example \"mqtt://192.168.1.10:1883\")"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{url:?}: give only mqtt://host:port (user names go in mqtt.username, passwords in mqtt.password_file)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = super::host_port(url, rest, default_port)?;
        Ok(BrokerUrl { host, port, tls })
    }
}

/// Checks a topic prefix: levels separated by `/`, none empty, no wildcards, no NUL.
fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() || topic.len() > 200 {
        Some("must be 1 to 200 bytes")
    } else if topic.contains(['+', '#', '\0']) {
        Some("must not contain the wildcards + or # (or NUL)")
    } else if topic.split('/').any(str::is_empty) {
        Some("must not start or end with / or contain //")
    } else if topic.starts_with('$') {
        Some("must not start with $ (brokers reserve those topics)")
    } else {
        None
    }
}

/// Checked in `validate` and read in `load_password_file`.
const PASSWORD_FILE: &str = "mqtt.password_file";

impl MqttConfig {
    /// Range-checks the section.
    pub(super) fn validate(&self, v: &mut Checker) {
        const DISCOVERY_PREFIX: &str = "mqtt.discovery_prefix";
        if let Err(e) = BrokerUrl::parse(&self.url) {
            v.fail("mqtt.url", e);
        }
        let tls = BrokerUrl::parse(&self.url).is_ok_and(|u| u.tls);
        v.check("mqtt.ca_file", self.ca_file.is_none() || tls, "a CA file is for mqtts:// URLs only");
        v.check(
            PASSWORD_FILE,
            self.password_file.is_none() || self.username.is_some(),
            "a password needs mqtt.username",
        );
        if let Some(u) = &self.username {
            v.check("mqtt.username", !u.is_empty() && u.len() <= 256, "must be 1 to 256 bytes");
        }
        if let Some(id) = &self.client_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            v.check("mqtt.client_id", ok, "must be 1 to 64 characters of A-Z a-z 0-9 _ -");
        }
        for (key, value) in [("mqtt.topic_prefix", &self.topic_prefix), (DISCOVERY_PREFIX, &self.discovery_prefix)] {
            if let Some(problem) = value.as_deref().and_then(topic_problem) {
                v.fail(key, problem);
            }
        }
        if let (Some(t), Some(d)) = (&self.topic_prefix, &self.discovery_prefix) {
            let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
            v.check(
                DISCOVERY_PREFIX,
                !(nested(d, t) || nested(t, d)),
                "must not be mqtt.topic_prefix, inside it, or around it (camjobd tells its own topics apart by these prefixes)",
            );
        }
        v.range("mqtt.keepalive_s", self.keepalive_s, 5, 3600);
        v.range("mqtt.outbox", self.outbox, 32, 4096);
        v.range_some("mqtt.snapshot_interval_s", self.snapshot_interval_s, 1, 86_400);
        if let Some(u) = &self.http_url {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.len() <= 200
                && !u.contains(char::is_whitespace);
            v.check(
                "mqtt.http_url",
                ok,
                "must be an http:// or https:// URL (for example \"http://printer-pi.local:8080\")",
            );
        }
    }

    /// Reads `password_file` into `password`.
    pub(super) fn load_password_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.password_file else { return Ok(()) };
        let fail = |message: String| ConfigError { path: PASSWORD_FILE.into(), message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!("cannot read {}: {e}; the service user needs read access to it", path.display()))
        })?;
        let password = text.lines().next().unwrap_or("").trim_end_matches('\r').to_string();
        if password.is_empty() || password.len() > 256 {
            return Err(fail(format!("{}: the first line must be the password (1 to 256 bytes)", path.display())));
        }
        self.password = Some(password);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports_and_refuse_what_is_not_a_broker() {
        let u = BrokerUrl::parse("mqtt://broker.lan").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("broker.lan", 1883, false));
        let u = BrokerUrl::parse("mqtts://10.0.0.2:8884/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("10.0.0.2", 8884, true));
        let u = BrokerUrl::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1999));
        for bad in
            ["tcp://x:1883", "mqtt://", "mqtt://x:0", "mqtt://x:99999", "mqtt://u:p@x", "mqtt://x/topic", "mqtt://[::1"]
        {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn topic_prefixes_without_wildcards_or_empty_levels() {
        assert_eq!(topic_problem("camjobd/printer-pi"), None);
        for bad in ["", "a/+/b", "a/#", "/a", "a/", "a//b", "$SYS/x"] {
            assert!(topic_problem(bad).is_some(), "{bad:?} accepted");
        }
    }
}
