//! The job service: builds the published state, starts the fixed set of threads and stops
//! them. This is the top of the dependency graph below `main`:
//! `job → {http, export, store, mqtt, moonraker, led, watchdog, capture, encode} → {status, config, events,
//! ...} → leaves such as lifecycle and frame` (the crate root lists the order).
//!
//! - the state machine itself is [`crate::lifecycle`] (pure, a leaf).
//! - [`supervisor`]: the single writer of job state.
//! - [`capture`]: the per-camera capture loop.

pub mod capture;
pub mod supervisor;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel as channel;

use crate::config::Config;
use crate::error::Error;
use crate::events::EventKind;
use crate::http::routes::Api;
use crate::http::server::Server;
use crate::shutdown::{Joined, Stop, Worker};
use crate::status::{Shared, COMMAND_QUEUE};
use crate::store::StateFile;

/// A running service: its threads and the state they publish.
pub struct Service {
    /// The published state (for tests and the binary's start-up message).
    pub shared: Arc<Shared>,
    server: Server,
    threads: Vec<Worker>,
    stop: Stop,
}

impl Service {
    /// Starts everything: capture threads, supervisor, watchdog, HTTP. Returns once the
    /// socket is bound; jobs with `autostart` are started by the supervisor right away.
    pub fn start(config: Config, stop: Stop) -> Result<Service, Error> {
        // Before any thread: a bad CA file stops the start with nothing begun.
        let mqtt = config.mqtt.as_ref().map(|m| crate::mqtt::Settings::resolve(&config, m)).transpose()?;
        let (state_file, next_job_id) = StateFile::open(&config.storage.dir)?;
        let listener = bind(config.bind_addr())?;
        let (cmd_tx, cmd_rx) = channel::bounded(COMMAND_QUEUE);
        let shared = Arc::new(Shared::new(config, cmd_tx));
        // Before any capture: list what earlier runs stored, so seqs continue after them.
        // The store's jump detector starts looking before any frame is captured: a jump while
        // the rest starts up is still seen, and the frames taken before it dated anew.
        let clock = crate::clock::JumpDetector::default();
        let first_seqs = crate::store::recover(&shared);
        let (store_tx, store_rx) = channel::bounded(crate::store::queue_len(&shared.config));
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| spawn(name, &stop, f);
        let mut threads = Vec::new();
        let mut orders = Vec::new();
        for (i, cam) in shared.cameras.iter().enumerate() {
            let o = Arc::new(capture::Orders::default());
            orders.push(Arc::clone(&o));
            let opener = crate::capture::opener(&cam.config);
            let lp = capture::CaptureLoop::new(Arc::clone(&shared.events), Arc::clone(cam), o, opener, stop.clone())
                .with_store(store_tx.clone(), i, first_seqs[i]);
            threads.push(spawn(&format!("capture-{}", cam.name), Box::new(move || lp.run()))?);
        }
        let (past, torn) = crate::store::journal::read(&shared.config.storage.dir);
        if torn > 0 {
            log::info!("journal: skipped {torn} damaged line(s) (a torn write after a power cut)");
        }
        shared.startup.journal_lines_skipped.store(torn as u64, std::sync::atomic::Ordering::Relaxed);
        let sup = supervisor::Supervisor::new(Arc::clone(&shared), orders, state_file, next_job_id, &past);
        drop(past);
        let s = stop.clone();
        threads.push(spawn("supervisor", Box::new(move || sup.run(cmd_rx, s)))?);
        drop(store_tx);
        let cfg = &shared.config.storage;
        let journal = crate::store::journal::Journal::open(
            &cfg.dir,
            cfg.journal,
            cfg.fsync == crate::config::FsyncPolicy::Always,
        )
        .map_err(|e| Error::storage(&crate::store::journal::dir(&cfg.dir), "open the event journal", e))?;
        let (store, s) = (crate::store::Store::new(Arc::clone(&shared), store_rx, journal, clock), stop.clone());
        threads.push(spawn("store", Box::new(move || store.run(s)))?);
        let (wd, s) = (crate::watchdog::Inputs::from(&shared), stop.clone());
        threads.push(spawn("watchdog", Box::new(move || crate::watchdog::run(wd, s)))?);
        match crate::led::open(&shared.config.led) {
            Ok(Some(led)) => {
                let (cams, events, s) = (shared.cameras.clone(), Arc::clone(&shared.events), stop.clone());
                threads.push(spawn("led", Box::new(move || crate::led::run(&cams, &events, led, s)))?);
            }
            Ok(None) => {}
            Err(e) => crate::led::disable(&shared.events, &e),
        }
        if shared.cameras.iter().any(|c| c.config.raw_quality().is_some()) {
            if crate::jpeg::simd() {
                log::info!("JPEG encoding: libjpeg-turbo with SIMD");
            } else {
                log::warn!(
                    "JPEG encoding runs without SIMD (about 4.5x the CPU per frame): on x86, install nasm and rebuild (`cargo clean -p mozjpeg-sys`)"
                );
            }
        }
        let exports = Arc::new(crate::export::Exports::open(Arc::clone(&shared))?);
        for n in 0..shared.config.exports.max_concurrent {
            let (x, s) = (Arc::clone(&exports), stop.clone());
            threads.push(spawn(&format!("export-{n}"), Box::new(move || x.run_worker(n, s)))?);
        }
        let mqtt_stats = shared.config.mqtt.as_ref().map(|m| Arc::new(crate::mqtt::Stats::new(&m.url)));
        let mut api = Api::new(Arc::clone(&shared), exports, stop.clone());
        if let Some(stats) = &mqtt_stats {
            api = api.with_mqtt(Arc::clone(stats));
        }
        if let Some((t, handle)) = start_webrtc(&shared, &stop)? {
            threads.push(t);
            api = api.with_webrtc(handle);
        }
        let api = Arc::new(api);
        let server = Server::start(
            listener,
            &shared.config.http,
            Arc::clone(&api) as Arc<dyn crate::http::server::Handler>,
            api.http_stats(),
            stop.clone(),
        )
        .map_err(|e| Error::Fatal(format!("cannot start the HTTP server: {e}")))?;
        shared.events.push(
            EventKind::Info,
            "",
            None,
            None,
            format_args!("camjobd {} listening on http://{}/", env!("CARGO_PKG_VERSION"), server.local_addr()),
        );
        if let Some(t) = start_rtsp(&shared, &stop)? {
            threads.push(t);
        }
        if let (Some(m), Some(settings), Some(stats)) = (&shared.config.mqtt, mqtt, mqtt_stats) {
            // After the server: discovery links to the address it is bound to. A broker that
            // is down is not an error; the thread connects when it comes up.
            let settings = settings.bound_to(m, server.local_addr());
            let (inputs, s) = (crate::mqtt::Inputs::from(&shared), stop.clone());
            threads.push(spawn("mqtt", Box::new(move || crate::mqtt::run(inputs, settings, stats, s)))?);
        }
        // After the server too: the URLs it registers are on the address HTTP is bound to.
        if let Some(t) = start_moonraker(&shared, server.local_addr(), &stop)? {
            threads.push(t);
        }
        Ok(Service { shared, server, threads, stop })
    }

    /// The address the HTTP API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Why the service is not healthy, if it is not: a core thread that ended, or a core loop
    /// that has not gone round for `stale` (deadlocked, or stuck in a syscall). systemd's
    /// watchdog is pinged only while this is `None`.
    pub fn unhealthy(&self, stale: std::time::Duration) -> Option<String> {
        if let Some(t) = self.threads.iter().find(|t| t.is_finished()) {
            return Some(format!("thread {} ended", t.name()));
        }
        let stuck = self.shared.liveness.stuck(crate::clock::mono_ms(), stale.as_millis() as u64)?;
        Some(format!("the {stuck} thread has not gone round for {} s", stale.as_secs()))
    }

    /// A one-line status for `systemctl status`: each camera's state and frames.
    pub fn status_line(&self) -> String {
        let cams: Vec<String> = self
            .shared
            .cameras
            .iter()
            .map(|c| {
                let v = c.view();
                format!("{} {} ({} frames)", v.camera, v.job.state.as_str(), v.job.frames_captured)
            })
            .collect();
        format!("http://{}/ — {}", self.local_addr(), cams.join(", "))
    }

    /// The core thread or task that broke, if one did (the stop token is then triggered).
    pub fn failure(&self) -> Option<crate::shutdown::Failure> {
        self.stop.failure()
    }

    /// Triggers the stop token (if not yet) and joins every thread, giving up on threads
    /// still running at `deadline` (a capture thread stuck in a driver must not keep the
    /// process alive).
    pub fn shutdown(self, deadline: Instant) {
        self.stop.trigger();
        self.server.join(deadline);
        for t in self.threads {
            let name = t.name().to_string();
            // A panic was logged and recorded by the thread's guard.
            if t.join_by(deadline) == Joined::Late {
                log::error!("thread {name} did not stop in time; exiting without it");
            }
        }
    }
}

/// The RTSP server, when a camera has `video` and `rtsp.bind` is set.
fn start_rtsp(shared: &Arc<Shared>, stop: &Stop) -> Result<Option<Worker>, Error> {
    let cameras: Vec<crate::rtsp::Camera> = shared
        .cameras
        .iter()
        .filter_map(|c| c.video.as_ref().map(|v| crate::rtsp::Camera { name: c.name.clone(), video: Arc::clone(v) }))
        .collect();
    let rtsp = &shared.config.rtsp;
    let Some(addr) = rtsp.bind_addr().filter(|_| !cameras.is_empty()) else { return Ok(None) };
    let listener = TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            "; another program (MediaMTX, go2rtc, another camjobd) uses this port: stop it or change rtsp.bind"
        } else {
            ""
        };
        Error::Fatal(format!("cannot listen on rtsp.bind {addr}: {e}{hint}"))
    })?;
    let stats = Arc::clone(&shared.rtsp);
    let http = &shared.config.http;
    let token = http.token.clone().filter(|_| http.protect_reads);
    crate::rtsp::start(listener, cameras, rtsp.max_clients, token, rtsp.udp, stats, stop.clone())
        .map(Some)
        .map_err(|e| Error::Fatal(format!("cannot start thread rtsp: {e}")))
}

/// The `moonraker` thread, when `moonraker` is configured. A Moonraker that is down is not an
/// error; the thread registers when it comes up.
fn start_moonraker(shared: &Arc<Shared>, bound: SocketAddr, stop: &Stop) -> Result<Option<Worker>, Error> {
    let Some(settings) = crate::moonraker::Settings::resolve(&shared.config, bound)? else { return Ok(None) };
    settings.publish(&shared.moonraker);
    let (reg, s) = (Arc::clone(&shared.moonraker), stop.clone());
    spawn("moonraker", stop, Box::new(move || crate::moonraker::run(settings, reg, s))).map(Some)
}

/// The WebRTC thread, when `webrtc.enabled` and a camera has `video`: its UDP socket on the
/// HTTP API's address (WHEP offers come to HTTP).
fn start_webrtc(shared: &Arc<Shared>, stop: &Stop) -> Result<Option<(Worker, crate::webrtc::Handle)>, Error> {
    let cameras = shared.webrtc_cameras();
    let cfg = &shared.config.webrtc;
    if !cfg.enabled || cameras.is_empty() {
        return Ok(None);
    }
    let addr = SocketAddr::new(shared.config.bind_addr().ip(), cfg.udp_port);
    let socket = std::net::UdpSocket::bind(addr).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            "; another program (go2rtc, MediaMTX, another camjobd) uses this port: stop it or change webrtc.udp_port"
        } else {
            ""
        };
        Error::Fatal(format!("cannot bind webrtc.udp_port on {addr}: {e}{hint}"))
    })?;
    let liveness = Arc::clone(&shared.liveness);
    let settings = crate::webrtc::Settings {
        cameras,
        camera_count: shared.cameras.len(),
        socket,
        max_sessions: cfg.max_sessions,
        beat: Box::new(move || crate::status::Liveness::beat(&liveness.webrtc)),
    };
    crate::webrtc::start(settings, Arc::clone(&shared.webrtc), stop.clone())
        .map(Some)
        .map_err(|e| Error::Fatal(format!("cannot start thread webrtc: {e}")))
}

fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => {
                "; another program (or another camjobd) uses this port: stop it or change http.bind"
            }
            io::ErrorKind::PermissionDenied => "; ports below 1024 need CAP_NET_BIND_SERVICE: use a port >= 1024",
            io::ErrorKind::AddrNotAvailable => {
                "; this machine has no such address: use 127.0.0.1, 0.0.0.0 or one of its own IPs"
            }
            _ => "",
        };
        Error::Fatal(format!("cannot listen on http.bind {addr}: {e}{hint}"))
    })
}

/// Spawns a core thread that fails the service if it panics ([`Stop::guard`]).
fn spawn(name: &str, stop: &Stop, f: Box<dyn FnOnce() + Send>) -> Result<Worker, Error> {
    let guard = stop.guard(name);
    Worker::spawn(name, move || {
        let _guard = guard;
        f()
    })
    .map_err(|e| Error::Fatal(format!("cannot start thread {name}: {e}")))
}
