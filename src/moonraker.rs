//! Registration with Moonraker (Mainsail, Fluidd, KlipperScreen, moonraker-obico, the mobile
//! apps): each camera's stream and snapshot URLs, kept in sync with `POST /server/webcams/item`,
//! so that users need not type them into each UI.
//!
//! One `moonraker` thread runs a small current-thread runtime with a sync loop: list
//! Moonraker's webcams, post what is missing or different, delete what this camjobd made for a
//! camera it no longer registers ([`plan`] decides, without I/O). A round that goes through is
//! repeated every [`RECHECK`] (a Moonraker whose database was lost gets the webcams back) and
//! at once when Moonraker closes the connection (it restarted); one that fails is retried after
//! 1 s, doubling to 60 s. The thread only publishes into [`Registration`]: capture, HTTP and the
//! supervisor never wait on Moonraker.
//!
//! - [`plan`]: what a round must do (pure).
//! - `client`: Moonraker's HTTP API over one kept-alive connection, every step with a deadline.

mod client;
pub mod plan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use crate::config::moonraker::{MoonrakerUrl, WEBRTC_SERVICE};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::shutdown::Stop;
use crate::status::moonraker::{Registration, SyncState};

use client::Conn;
use plan::{Listed, Step, Wanted};

/// A round that went through is repeated this often: a Moonraker that restarted without its
/// database (and without closing our connection first) gets the webcams back within it.
pub const RECHECK: Duration = Duration::from_secs(30);
/// The first retry after a failure; doubled each time up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Rounds begin at least this far apart when Moonraker's connection ends unannounced (it
/// restarted; or a proxy in between drops idle connections quickly: then not a round a moment).
const MIN_GAP: Duration = Duration::from_secs(2);

/// Everything the `moonraker` thread needs, resolved at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Moonraker's URL, as configured (for status and messages).
    pub url: String,
    /// Its host and port.
    target: MoonrakerUrl,
    api_key: Option<String>,
    /// The mark of this camjobd's webcams.
    pub instance: String,
    /// The base of the registered URLs (no trailing `/`).
    pub base_url: String,
    /// Each registering camera's webcam, in config order.
    pub wanted: Vec<Wanted>,
}

/// This machine's host name, or `camjobd` when it has none.
fn hostname() -> String {
    crate::sys::hostname().unwrap_or_else(|| "camjobd".into())
}

impl Settings {
    /// Resolves the `moonraker` section for a server bound to `bound` (port 0 resolved);
    /// `None` when it is not configured.
    pub fn resolve(config: &Config, bound: SocketAddr) -> Result<Option<Settings>, Error> {
        let Some(m) = &config.moonraker else { return Ok(None) };
        let target = MoonrakerUrl::parse(&m.url)
            .map_err(|message| Error::Config(ConfigError { path: "moonraker.url".into(), message }))?;
        let host = hostname();
        let base_url = crate::config::public_base_url(m.base_url.as_deref(), bound, &host);
        if m.base_url.is_none() && bound.ip().is_loopback() {
            log::warn!(
                "moonraker: registering {base_url} URLs, which only a browser on this machine opens (http.bind is loopback): set moonraker.base_url (\"/webcam\" behind Mainsail's or Fluidd's nginx) or bind http to 0.0.0.0"
            );
        }
        let wanted = config
            .cameras
            .iter()
            .filter(|c| !c.moonraker.skip)
            .map(|c| {
                let service = c.moonraker.service.clone().unwrap_or_else(|| m.service.clone());
                let api = format!("{base_url}/api/cameras/{}", c.name);
                // mjpegstreamer-adaptive reloads the snapshot at target_fps: /snapshot is the
                // newest frame (refreshed within Moonraker's 1 s), latest.jpg only the newest kept.
                let stream_url = if service == WEBRTC_SERVICE { api } else { format!("{api}/stream.mjpeg") };
                let (w, h) = c.source.size();
                let known_size = !matches!(c.source, crate::config::SourceConfig::Pipe(_));
                Wanted {
                    camera: c.name.clone(),
                    name: c.moonraker.name.clone().unwrap_or_else(|| c.name.clone()),
                    service,
                    stream_url,
                    snapshot_url: format!("{base_url}/snapshot?camera={}", c.name),
                    target_fps: c.source.fps(),
                    aspect_ratio: known_size.then(|| plan::aspect_ratio(w, h)).flatten(),
                }
            })
            .collect();
        Ok(Some(Settings {
            url: m.url.clone(),
            target,
            api_key: m.api_key.clone(),
            instance: m.instance.clone().unwrap_or(host),
            base_url,
            wanted,
        }))
    }

    /// Publishes the registration as `connecting` (before the thread starts, so that the
    /// first `/api/status` already shows it).
    pub fn publish(&self, reg: &Registration) {
        let webcams = self.wanted.iter().map(|w| (w.camera.clone(), w.name.clone())).collect();
        reg.configure(&self.url, &self.base_url, webcams);
    }
}

/// The `moonraker` thread: syncs until the stop token is triggered.
pub fn run(settings: Settings, reg: Arc<Registration>, stop: Stop) {
    // One blocking thread at most (a name in moonraker.url is looked up on it): the thread
    // count stays what `crate::budget` counts.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .thread_name("moonraker-dns")
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("moonraker: cannot start its runtime: {e}");
            reg.failed(format!("cannot start: {e}"), Duration::ZERO);
            stop.fail("moonraker", crate::shutdown::Broke::NotStarted);
            return;
        }
    };
    rt.block_on(async {
        tokio::select! {
            () = stop.cancelled() => {}
            () = sync_loop(&settings, &reg) => {}
        }
    });
    // A name lookup stuck in the resolver must not hold the shutdown.
    rt.shutdown_background();
}

/// Exponential backoff: 1 s, 2 s, 4 s ... 60 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_FIRST }
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// Rounds for ever (the caller drops it on stop).
async fn sync_loop(s: &Settings, reg: &Registration) {
    let mut backoff = Backoff::new();
    let mut conn: Option<Conn> = None;
    let mut failing = false;
    loop {
        let began = Instant::now();
        reg.update(|v| v.attempts += 1);
        match round(s, reg, &mut conn).await {
            Ok(()) => {
                if failing {
                    log::info!("moonraker: registered with {} again", s.url);
                }
                failing = false;
                backoff.reset();
                wait_for_change(&mut conn, began, reg).await;
            }
            Err(e) => {
                conn = None;
                let delay = backoff.next_delay();
                if !failing {
                    log::warn!("moonraker: {e}; retrying in {} s, then less often", delay.as_secs());
                }
                failing = true;
                reg.failed(e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// After a round that went through: until [`RECHECK`] is up, or Moonraker's connection ends
/// unannounced (it restarted, perhaps with its database lost), then at least [`MIN_GAP`] after
/// the round `began`.
async fn wait_for_change(conn: &mut Option<Conn>, began: Instant, reg: &Registration) {
    let until = began + RECHECK;
    let Some(c) = conn.as_mut().filter(|c| !c.closes_after_answer()) else {
        *conn = None;
        tokio::time::sleep_until(until.into()).await;
        return;
    };
    if tokio::time::timeout_at(until.into(), c.ended()).await.is_ok() {
        *conn = None;
        reg.update(|v| v.state = SyncState::Connecting);
        tokio::time::sleep_until((began + MIN_GAP).into()).await;
    }
}

/// One round: list, post, delete; publishes the outcome when it goes through.
async fn round(s: &Settings, reg: &Registration, conn: &mut Option<Conn>) -> Result<(), String> {
    if conn.as_ref().is_none_or(|c| !c.is_open()) {
        *conn = Some(Conn::open(&s.target, s.api_key.as_deref()).await?);
    }
    let c = conn.as_mut().expect("just opened");
    let list = c.call(Method::GET, "/server/webcams/list", None).await?;
    let listed: Vec<Listed> = list
        .get("webcams")
        .and_then(Value::as_array)
        .ok_or("GET /server/webcams/list: Moonraker's answer has no webcams list")?
        .iter()
        .filter_map(Listed::from_json)
        .collect();
    let plan = plan::plan(&s.wanted, &listed, &s.instance);
    let mut removed = 0;
    for step in &plan.steps {
        match step {
            Step::Post { wanted, body } => {
                c.call(Method::POST, "/server/webcams/item", Some(body)).await?;
                let w = &s.wanted[*wanted];
                log::info!("moonraker: webcam {:?} of camera {} registered ({})", w.name, w.camera, w.stream_url);
            }
            Step::Delete { name } => {
                let target = format!("/server/webcams/item?name={}", query_escape(name));
                c.call(Method::DELETE, &target, None).await?;
                removed += 1;
                log::info!("moonraker: webcam {name:?} removed (no camera registers it now)");
            }
        }
    }
    reg.update(|v| {
        v.state = SyncState::Synced;
        v.removed += removed;
        v.last_error = None;
        v.retry_at = None;
        for (cam, conflict) in v.webcams.iter_mut().zip(&plan.conflicts) {
            if conflict.is_some() && cam.reason.is_none() {
                log::warn!("moonraker: {}", conflict.as_deref().unwrap_or(""));
            }
            cam.registered = conflict.is_none();
            cam.conflict = conflict.is_some();
            cam.reason.clone_from(conflict);
        }
    });
    Ok(())
}

/// A query value, percent-encoded (webcam names may have spaces and any letter).
fn query_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str, bound: &str) -> Settings {
        let c = Config::from_json(json).unwrap();
        Settings::resolve(&c, bound.parse().unwrap()).unwrap().unwrap()
    }

    #[test]
    fn urls_are_absolute_on_the_bound_address_or_the_base_url() {
        let s = settings(r#"{"moonraker":{}}"#, "127.0.0.1:8080");
        assert_eq!(s.base_url, "http://127.0.0.1:8080");
        let w = &s.wanted[0];
        assert_eq!(w.stream_url, "http://127.0.0.1:8080/api/cameras/cam0/stream.mjpeg");
        assert_eq!(w.snapshot_url, "http://127.0.0.1:8080/snapshot?camera=cam0");
        assert_eq!((w.name.as_str(), w.service.as_str(), w.target_fps), ("cam0", "mjpegstreamer-adaptive", Some(10)));
        assert_eq!(w.aspect_ratio.as_deref(), Some("4:3"));
        let s = settings(r#"{"moonraker":{}}"#, "0.0.0.0:8080");
        assert_eq!(s.base_url, format!("http://{}.local:8080", hostname()));
        assert_eq!(s.instance, hostname());
        let s = settings(r#"{"moonraker":{}}"#, "[::1]:8080");
        assert_eq!(s.base_url, "http://[::1]:8080");
        let s = settings(r#"{"moonraker":{"base_url":"/webcam/","instance":"a"}}"#, "127.0.0.1:8080");
        assert_eq!(s.wanted[0].snapshot_url, "/webcam/snapshot?camera=cam0");
        assert_eq!(s.instance, "a");
    }

    #[test]
    fn cameras_choose_their_name_and_service_or_stay_out() {
        let s = settings(
            r#"{"moonraker":{"service":"mjpegstreamer"},"cameras":[
                {"name":"a","moonraker":false},
                {"name":"b","moonraker":{"name":"Bed cam","service":"webrtc-mediamtx"},"video":{}},
                {"name":"c","source":{"kind":"pipe","command":["cat"]}}]}"#,
            "192.168.1.5:8080",
        );
        let names: Vec<&str> = s.wanted.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["Bed cam", "c"]);
        assert_eq!(s.wanted[0].stream_url, "http://192.168.1.5:8080/api/cameras/b");
        assert_eq!(s.wanted[1].service, "mjpegstreamer");
        assert_eq!((s.wanted[1].target_fps, s.wanted[1].aspect_ratio.as_deref()), (None, None), "a pipe's are unknown");
        assert!(Settings::resolve(&Config::default(), "127.0.0.1:1".parse().unwrap()).unwrap().is_none());
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut b = Backoff::new();
        let secs: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_FIRST);
    }

    #[test]
    fn names_are_escaped_in_the_query() {
        assert_eq!(query_escape("Bed cam/2 ä"), "Bed%20cam%2F2%20%C3%A4");
        assert_eq!(query_escape("cam0"), "cam0");
    }
}
