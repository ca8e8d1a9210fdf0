//! The `http` section: where the API listens, who may use it (the token rule lives here, for
//! `http.token` and `http.token_file` alike), and the limits that bound every connection's
//! threads, bytes and time.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Checker, ConfigError};

/// HTTP server limits. Every one bounds a resource: threads, queued sockets, bytes, time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address, `IP:PORT`; port 0 picks a free one (printed at start).
    pub bind: String,
    /// When set, every non-GET request needs `Authorization: Bearer <token>`. Printed as
    /// `<redacted>` by `--check-config`.
    #[serde(serialize_with = "redact")]
    pub token: Option<String>,
    /// A file holding the token (first line), read at start-up; keeps it out of the config.
    pub token_file: Option<PathBuf>,
    /// Listening beyond loopback without a token is refused unless this is true.
    pub allow_open: bool,
    /// With a token: reads need it too (Bearer header, or the dashboard's `camjobd_token`
    /// cookie), except `/`, `/index.html` and `/healthz`.
    pub protect_reads: bool,
    /// Runtime threads serving every connection (1: a single `http` thread; more: that many
    /// workers `http-N` beside it). Connections cost memory, never a thread.
    pub workers: usize,
    /// Accepted for configs written for the first server (its connection queue); unused.
    pub queue: usize,
    /// Open connections at most. At the limit the longest-idle connection is closed to make
    /// room; only when every one is busy is the new one answered 503 and closed.
    pub max_connections: usize,
    /// MJPEG stream clients at most (all cameras together); one more gets 503 `busy`.
    pub max_stream_clients: usize,
    /// Copies of published frames that HTTP readers hold, per camera (fixed, allocated at
    /// start: `frame_copies` x `max_frame_bytes`). Readers never hold capture's buffers.
    /// `null`: `max_stream_clients + 2`, so that every stream client can hold one while new
    /// frames still find a free copy (see [`HttpConfig::frame_copies`]).
    pub frame_copies: Option<usize>,
    /// `Access-Control-Allow-Origin` on reads (`null`: none), so pages on other origins
    /// (Mainsail, Fluidd) can `fetch` the stream and snapshots.
    pub cors_origin: Option<String>,
    /// Host names (without port) this service is reached by, besides IP addresses,
    /// `localhost`, the machine's host name and `<hostname>.local`: a write whose `Host` is
    /// none of these is refused (403 `host`), which stops DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Longest wait for a whole request head (and body) once a request has begun.
    pub read_timeout_ms: u64,
    /// Longest time a response may take to write.
    pub write_timeout_ms: u64,
    /// How long an idle keep-alive connection may hold a worker.
    pub idle_timeout_ms: u64,
    /// Largest request head (request line plus headers) in bytes.
    pub max_header_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Largest request body in bytes; larger is 413 without reading it.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1:8080".into(),
            token: None,
            token_file: None,
            allow_open: false,
            protect_reads: false,
            workers: 2,
            queue: 32,
            max_connections: 256,
            max_stream_clients: 8,
            frame_copies: None,
            cors_origin: Some("*".into()),
            allowed_hosts: Vec::new(),
            read_timeout_ms: 5_000,
            write_timeout_ms: 5_000,
            idle_timeout_ms: 5_000,
            max_header_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 16 * 1024,
        }
    }
}

/// Longest API token in bytes. The HTTP side decodes presented credentials into fixed buffers
/// of this size, so it is part of the token rule ([`HttpConfig::token`]).
pub const MAX_TOKEN_BYTES: usize = 256;

/// Whether `given` is the token, in constant time for equal lengths (`subtle`; HTTP and RTSP
/// compare with it).
pub fn is_token(given: &[u8], token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    given.ct_eq(token.as_bytes()).into()
}

/// Whether Basic credentials (base64 of `user:password`) carry the token as the password, any
/// user name: what Home Assistant, OctoPrint and RTSP clients send. Decoded into a fixed buffer.
pub fn basic_has_token(encoded: &[u8], token: &str) -> bool {
    use base64::Engine as _;
    // user:token: the token is at most MAX_TOKEN_BYTES, the rest is room for a user name.
    let mut buf = [0u8; 1024];
    let Ok(n) = base64::engine::general_purpose::STANDARD.decode_slice(encoded, &mut buf) else { return false };
    buf[..n].iter().position(|&b| b == b':').is_some_and(|colon| is_token(&buf[colon + 1..n], token))
}

/// The token rule, whether the token comes from `http.token` or from the first line of
/// `http.token_file`: 1 to [`MAX_TOKEN_BYTES`] printable ASCII characters, no spaces (it
/// travels in a header, a cookie and a Basic password).
fn is_valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_BYTES && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Most names in `http.allowed_hosts`.
const MAX_ALLOWED_HOSTS: usize = 32;

/// A DNS name as `Host` carries it: labels of letters, digits and `-`, separated by dots.
fn is_host_name(h: &str) -> bool {
    (1..=253).contains(&h.len())
        && h.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Checked in `validate` and read in `load_token_file`.
const TOKEN_FILE: &str = "http.token_file";

/// `--check-config` must not print the secret.
fn redact<S: serde::Serializer>(token: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match token {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

impl HttpConfig {
    /// Frame copies per camera: the configured number, or one per stream client plus two
    /// for snapshot readers.
    pub fn frame_copies(&self) -> usize {
        self.frame_copies.unwrap_or(self.max_stream_clients + 2)
    }

    /// Range-checks the section.
    pub(super) fn validate(&self, v: &mut Checker) {
        let has_token = self.token.is_some() || self.token_file.is_some();
        // One match for both bind rules: an open bind needs no token at all, so it can never
        // coincide with the token_file rule below, and the first error stays the same.
        match self.bind.parse::<SocketAddr>() {
            Err(_) => v.fail(
                "http.bind",
                format!("{:?} is not IP:PORT (for example \"127.0.0.1:8080\" or \"[::]:8080\")", self.bind),
            ),
            Ok(addr) if !addr.ip().is_loopback() && !has_token && !self.allow_open => v.fail(
                "http.bind",
                format!(
                    "{addr} lets anyone on the network start and stop jobs: set http.token or http.token_file, or set http.allow_open: true to accept that"
                ),
            ),
            Ok(_) => {}
        }
        v.check(
            TOKEN_FILE,
            !(self.token.is_some() && self.token_file.is_some()),
            "give http.token or http.token_file, not both",
        );
        v.check(
            "http.protect_reads",
            !self.protect_reads || has_token,
            "needs http.token or http.token_file (the token that reads must carry)",
        );
        if let Some(t) = &self.token {
            if !is_valid_token(t) {
                v.fail(
                    "http.token",
                    format!("must be 1 to {MAX_TOKEN_BYTES} printable ASCII characters without spaces"),
                );
            }
        }
        v.range("http.workers", self.workers, 1, 64);
        v.range("http.queue", self.queue, 1, 4096);
        v.range("http.max_connections", self.max_connections, 8, 65_536);
        v.range("http.max_stream_clients", self.max_stream_clients, 1, 1024);
        v.range_some("http.frame_copies", self.frame_copies, 1, 1026);
        if let Some(o) = &self.cors_origin {
            v.check(
                "http.cors_origin",
                !o.is_empty() && o.len() <= 256 && o.bytes().all(|b| b.is_ascii_graphic()),
                "must be \"*\", an origin such as \"http://mainsail.local\", or null",
            );
        }
        v.check("http.allowed_hosts", self.allowed_hosts.len() <= MAX_ALLOWED_HOSTS, "at most 32 names");
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            v.check(
                &format!("http.allowed_hosts[{i}]"),
                is_host_name(h),
                "must be a host name without port or scheme, such as \"camera.lan\" (1 to 253 of A-Z a-z 0-9 . -)",
            );
        }
        v.range("http.read_timeout_ms", self.read_timeout_ms, 100, 600_000);
        v.range("http.write_timeout_ms", self.write_timeout_ms, 100, 600_000);
        v.range("http.idle_timeout_ms", self.idle_timeout_ms, 100, 600_000);
        v.range("http.max_header_bytes", self.max_header_bytes, 1024, 1 << 20);
        v.range("http.max_headers", self.max_headers, 4, 256);
        v.range("http.max_body_bytes", self.max_body_bytes, 0, 1 << 20);
    }

    /// Reads `token_file` into `token` (after validation).
    pub(super) fn load_token_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.token_file else { return Ok(()) };
        let fail = |message: String| ConfigError { path: TOKEN_FILE.into(), message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!("cannot read {}: {e}; the service user needs read access to it", path.display()))
        })?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if !is_valid_token(&token) {
            return Err(fail(format!(
                "{}: the first line must be 1 to {MAX_TOKEN_BYTES} printable ASCII characters",
                path.display()
            )));
        }
        self.token = Some(token);
        Ok(())
    }
}
