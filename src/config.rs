//! The configuration: JSON, every key optional with a default, unknown keys rejected, every
//! value range-checked where it is parsed. An error names the key path
//! (`cameras[0].watchdog.stall_timeout_ms: must be >= 100`) and the binary exits 2.
//!
//! All sizes that fix memory at start-up (frame buffers, HTTP workers and queue) come from
//! here and are never changed afterwards.
//!
//! Each section lives in its own file with its types, defaults and checks (`http`, `storage`
//! with each camera's retention, `led`, `exports`, `log`, `cameras` with their sources,
//! `mqtt`, `moonraker`). This root parses the document, runs the sections' checks through one `Checker`
//! (what a config costs the board is [`crate::budget`]'s).

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

mod cameras;
mod exports;
mod http;
mod led;
mod log;
pub mod moonraker;
pub mod mqtt;
mod storage;
mod video;
mod webrtc;

pub use self::log::{LogConfig, LogLevel};
pub use cameras::{
    CameraConfig, FaultConfig, LibcameraConfig, PipeConfig, SourceConfig, SyntheticConfig, V4l2Config, V4l2Format,
    WatchdogConfig, LIBCAMERA_EXTRA_OPTIONS, MAX_CAMERAS, MAX_DURATION_S, MAX_FRAMES,
};
pub use exports::{ExportsConfig, TimelapseConfig};
pub use http::{basic_has_token, is_token, HttpConfig, MAX_TOKEN_BYTES};
pub use led::LedConfig;
pub use moonraker::{CameraMoonraker, MoonrakerConfig};
pub use mqtt::MqttConfig;
pub use storage::{FsyncPolicy, JournalConfig, KeepPolicy, StorageConfig, StoreConfig, RESERVED_NAMES};
pub use video::{Codec, EncoderKind, Profile, RtspConfig, VideoConfig};
pub use webrtc::WebrtcConfig;

/// The whole configuration of one camjobd process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP API: where it listens and how much it may take.
    pub http: HttpConfig,
    /// Where job ids (and, later, snapshots and journals) are kept.
    pub storage: StorageConfig,
    /// The status LED.
    pub led: LedConfig,
    /// Logging.
    pub log: LogConfig,
    /// The cameras; each gets its own capture thread and job.
    pub cameras: Vec<CameraConfig>,
    /// Background export jobs (archives and timelapses of stored snapshots).
    pub exports: ExportsConfig,
    /// The MQTT broker connection (Home Assistant, fleets); `null`: off.
    pub mqtt: Option<MqttConfig>,
    /// The RTSP server for the cameras' `video`.
    pub rtsp: RtspConfig,
    /// WHEP (WebRTC) playback of the cameras' `video`, on the HTTP API's port.
    pub webrtc: WebrtcConfig,
    /// Registration of the cameras with Moonraker (Mainsail, Fluidd, Obico); `null`: off.
    pub moonraker: Option<MoonrakerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            led: LedConfig::None,
            log: LogConfig::default(),
            // The built-in camera serves H.264 too, so that `cargo run --release` serves RTSP.
            cameras: vec![CameraConfig { video: Some(VideoConfig::default()), ..CameraConfig::default() }],
            exports: ExportsConfig::default(),
            mqtt: None,
            rtsp: RtspConfig::default(),
            webrtc: WebrtcConfig::default(),
            moonraker: None,
        }
    }
}

/// A configuration error: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `cameras[0].watchdog.stall_timeout_ms`, or empty for the document itself.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the secrets kept in files (`http.token_file`, `mqtt.password_file`,
    /// `moonraker.api_key_file`), after validation.
    pub fn load_secret_files(&mut self) -> Result<(), ConfigError> {
        self.load_token_file()?;
        if let Some(m) = &mut self.mqtt {
            m.load_password_file()?;
        }
        match &mut self.moonraker {
            Some(m) => m.load_api_key_file(),
            None => Ok(()),
        }
    }

    /// Reads `http.token_file` into `http.token` (after validation).
    pub fn load_token_file(&mut self) -> Result<(), ConfigError> {
        self.http.load_token_file()
    }

    /// Parses and validates a JSON document.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json appends "at line L column C"; keep it, it helps find the key.
            ConfigError { path: if path == "." { String::new() } else { path }, message: inner.to_string() }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The listen address, parsed.
    pub fn bind_addr(&self) -> SocketAddr {
        // validate() checked it parses.
        self.http.bind.parse().expect("http.bind validated")
    }

    /// Range-checks every value; the first error wins, so the sections run in a fixed order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut v = Checker::default();
        self.http.validate(&mut v);
        self.storage.validate(&mut v);
        self.led.validate(&mut v);
        self.exports.validate(&mut v);
        // `log` has nothing to check: serde refused a bad level while parsing.
        cameras::validate(&self.cameras, &mut v);
        if let Some(m) = &self.mqtt {
            m.validate(&mut v);
        }
        let http = &self.http;
        let guarded = (http.token.is_some() || http.token_file.is_some()) && http.protect_reads;
        self.rtsp.validate(guarded, http.allow_open, &mut v);
        self.webrtc.validate(&mut v);
        MoonrakerConfig::validate(self.moonraker.as_ref(), &self.cameras, &self.webrtc, &mut v);
        v.finish()
    }
}

/// An unsigned config value a range check takes; widening to `u64` loses nothing.
trait Unsigned: Copy {
    fn widen(self) -> u64;
}

impl Unsigned for u8 {
    fn widen(self) -> u64 {
        u64::from(self)
    }
}

impl Unsigned for u32 {
    fn widen(self) -> u64 {
        u64::from(self)
    }
}

impl Unsigned for u64 {
    fn widen(self) -> u64 {
        self
    }
}

impl Unsigned for usize {
    fn widen(self) -> u64 {
        // usize is at most 64 bits on every target camjobd builds for.
        self as u64
    }
}

/// Collects the first failed check. Each section states a key once, with its bounds; the
/// message is derived from them. Keys are relative to the current scope (`cameras[1]` while
/// a camera is checked, see [`Checker::within`]), and the full path is built only on failure.
#[derive(Default)]
struct Checker {
    first: Option<ConfigError>,
    /// The path the keys are relative to; empty at the top.
    scope: String,
}

impl Checker {
    /// Records `message` for `key` unless an earlier check failed.
    fn fail(&mut self, key: &str, message: impl Into<String>) {
        if self.first.is_none() {
            let path = if self.scope.is_empty() { key.to_string() } else { format!("{}.{key}", self.scope) };
            self.first = Some(ConfigError { path, message: message.into() });
        }
    }

    /// Fails `key` with `message` unless `ok`.
    fn check(&mut self, key: &str, ok: bool, message: &str) {
        if !ok {
            self.fail(key, message);
        }
    }

    /// `key` must lie in `min..=max`; the message names the bound crossed and the value.
    fn range(&mut self, key: &str, value: impl Unsigned, min: u64, max: u64) {
        let value = value.widen();
        if value < min {
            self.fail(key, format!("must be >= {min} (got {value})"));
        } else if value > max {
            self.fail(key, format!("must be <= {max} (got {value})"));
        }
    }

    /// [`Checker::range`] for an optional key: `null` (off, or the default) is not checked.
    fn range_some(&mut self, key: &str, value: Option<impl Unsigned>, min: u64, max: u64) {
        if let Some(value) = value {
            self.range(key, value, min, max);
        }
    }

    /// Runs `f` with keys relative to `scope` (itself relative to the current scope), so a
    /// camera's checks name `cameras[1].source.fps` while stating only `fps`.
    fn within(&mut self, scope: &str, f: impl FnOnce(&mut Checker)) {
        let outer = self.scope.len();
        if outer > 0 {
            self.scope.push('.');
        }
        self.scope.push_str(scope);
        f(self);
        self.scope.truncate(outer);
    }

    fn finish(self) -> Result<(), ConfigError> {
        self.first.map_or(Ok(()), Err)
    }
}

/// Board profiles embedded in the binary (`--board NAME`); the files live in `board/`.
pub const BOARDS: &[(&str, &str)] = &[
    ("host", include_str!("../board/host.json")),
    ("rpi3", include_str!("../board/rpi3.json")),
    ("rpi4", include_str!("../board/rpi4.json")),
    ("rpi5", include_str!("../board/rpi5.json")),
    ("rpi-zero2w", include_str!("../board/rpi-zero2w.json")),
];

/// Looks up and parses an embedded board profile.
pub fn board(name: &str) -> Result<Config, ConfigError> {
    let text = BOARDS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ConfigError {
        path: "--board".into(),
        message: format!(
            "unknown board {name:?}; built-in boards: {}",
            BOARDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
    })?;
    Config::from_json(text)
        .map_err(|e| ConfigError { path: e.path, message: format!("{} (in board profile {name})", e.message) })
}

/// `host[:port]` (`[v6]:port` for IPv6) from the part of `url` after its scheme, for
/// `mqtt.url` and `moonraker.url`: the host (without brackets) and the port, `default_port`
/// when none is given.
pub(crate) fn host_port(url: &str, rest: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: an IPv6 address needs a closing ]"))?;
        (h, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{url:?}: {p:?} is not a port (1-65535)"))?,
    };
    Ok((host.to_string(), port))
}

/// The base of the URLs other machines open to reach this service's HTTP API (no trailing
/// `/`): `explicit` when configured, else the address HTTP is bound to, with the host's mDNS
/// name when it listens on every address. MQTT's snapshot URLs and Moonraker's webcams use it.
pub fn public_base_url(explicit: Option<&str>, bound: SocketAddr, host: &str) -> String {
    if let Some(u) = explicit {
        return u.trim_end_matches('/').to_string();
    }
    match bound.ip() {
        ip if ip.is_unspecified() => format!("http://{host}.local:{}", bound.port()),
        std::net::IpAddr::V6(ip) => format!("http://[{ip}]:{}", bound.port()),
        ip => format!("http://{ip}:{}", bound.port()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_urls_from_the_bind_address_or_as_configured() {
        let url = |explicit: Option<&str>, bound: &str| super::public_base_url(explicit, bound.parse().unwrap(), "pi");
        assert_eq!(url(None, "0.0.0.0:8080"), "http://pi.local:8080");
        assert_eq!(url(None, "192.168.1.5:80"), "http://192.168.1.5:80");
        assert_eq!(url(None, "[fe80::1]:8080"), "http://[fe80::1]:8080");
        assert_eq!(url(Some("https://cams.example/"), "127.0.0.1:8080"), "https://cams.example");
    }

    use super::*;

    fn err(json: &str) -> String {
        Config::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn empty_object_is_the_default() {
        assert_eq!(Config::from_json("{}").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = err(r#"{"cameras":[{"watchdog":{"stall_timeout_ms":5}}]}"#);
        assert!(e.starts_with("cameras[0].watchdog.stall_timeout_ms: must be >= 100"), "{e}");
        let e = err(r#"{"http":{"bnd":"x"}}"#);
        assert!(e.starts_with("http.bnd: unknown field `bnd`"), "{e}");
        let e = err(r#"{"cameras":[{}, {"watchdog":{"max_recoveries":-1}}]}"#);
        assert!(e.starts_with("cameras[1].watchdog.max_recoveries: invalid value"), "{e}");
        let e = err(r#"{"http":{"bind":"localhost"}}"#);
        assert!(e.starts_with("http.bind: "), "{e}");
    }

    #[test]
    fn storage_dir_and_camera_names_cannot_be_camjobds_own_or_the_systems() {
        for dir in ["/", "/etc", "/usr/..", "/var/", "/tmp", "/var/tmp", "//"] {
            let e = err(&format!(r#"{{"storage":{{"dir":"{dir}"}}}}"#));
            assert!(e.starts_with("storage.dir: ") && e.contains("system or shared"), "{dir}: {e}");
        }
        for dir in ["/var/lib/camjobd", "camjobd-data", "/tmp/camjobd", "./x"] {
            assert!(Config::from_json(&format!(r#"{{"storage":{{"dir":"{dir}"}}}}"#)).is_ok(), "{dir}");
        }
        for name in ["exports", "journal"] {
            let e = err(&format!(r#"{{"cameras":[{{"name":"{name}"}}]}}"#));
            assert!(e.starts_with("cameras[0].name: ") && e.contains("for itself"), "{e}");
        }
    }

    #[test]
    fn encoders_need_buffers_and_yuyv_an_even_width() {
        let e = err(r#"{"cameras":[{"encoder_threads":0}]}"#);
        assert!(e.starts_with("cameras[0].encoder_threads: must be >= 1"), "{e}");
        let e = err(r#"{"cameras":[{"encoder_threads":3,"frame_buffers":4}]}"#);
        assert!(e.starts_with("cameras[0].frame_buffers: must be at least encoder_threads + 2 = 5"), "{e}");
        // A pipe camera has no encoders: its buffers are not counted against them.
        let ok = r#"{"cameras":[{"encoder_threads":3,"frame_buffers":2,"source":{"kind":"pipe","command":["cat"]}}]}"#;
        assert!(Config::from_json(ok).is_ok());
        let e = err(r#"{"cameras":[{"source":{"kind":"synthetic","width":641}}]}"#);
        assert!(e.starts_with("cameras[0].source.width: must be even"), "{e}");
    }

    #[test]
    fn source_kinds_and_their_keys() {
        let c = Config::from_json(r#"{"cameras":[{"source":{"kind":"pipe","command":["cat","x"]}}]}"#).unwrap();
        assert_eq!(c.cameras[0].source, SourceConfig::Pipe(PipeConfig { command: vec!["cat".into(), "x".into()] }));
        let e = err(r#"{"cameras":[{"source":{"kind":"synthetic","fps":0}}]}"#);
        assert!(e.starts_with("cameras[0].source.fps: must be >= 1"), "{e}");
        let e = err(r#"{"cameras":[{"source":{"kind":"synthetic","colour":1}}]}"#);
        assert!(e.starts_with("cameras[0].source") && e.contains("unknown field `colour`"), "{e}");
        let e = err(r#"{"cameras":[{"source":{"kind":"webcam"}}]}"#);
        assert!(e.starts_with("cameras[0].source") && e.contains("unknown variant `webcam`"), "{e}");
        let v4l2 =
            Config::from_json(r#"{"cameras":[{"source":{"kind":"v4l2","device":"/dev/video2","format":"YUYV"}}]}"#);
        if cfg!(feature = "v4l2") {
            let c = v4l2.unwrap();
            let SourceConfig::V4l2(v) = &c.cameras[0].source else { panic!("not v4l2") };
            assert_eq!(
                (v.device.to_str(), v.format, v.buffers, v.width),
                (Some("/dev/video2"), V4l2Format::Yuyv, 4, 640)
            );
        } else {
            let e = v4l2.unwrap_err().to_string();
            assert!(e.starts_with("cameras[0].source.kind: this camjobd was built without V4L2 support"), "{e}");
        }
        let e = err(r#"{"cameras":[{"source":{"kind":"v4l2","device":"video0","buffers":1}}]}"#);
        let want = if cfg!(feature = "v4l2") {
            "cameras[0].source.device: must be an absolute path"
        } else {
            "cameras[0].source.kind"
        };
        assert!(e.starts_with(want), "{e}");
        let e = err(r#"{"cameras":[{"source":{"kind":"v4l2","format":"H264"}}]}"#);
        assert!(e.starts_with("cameras[0].source") && e.contains("unknown variant `H264`"), "{e}");
        let e = err(r#"{"cameras":[{"source":{"kind":"pipe","command":[]}}]}"#);
        assert!(e.starts_with("cameras[0].source.command: must name a program"), "{e}");
    }

    #[test]
    fn duplicate_names_and_limits() {
        let e = err(r#"{"cameras":[{"name":"a"},{"name":"a"}]}"#);
        assert!(e.starts_with("cameras[1].name:"), "{e}");
        let e = err(r#"{"cameras":[{"name":"a/b"}]}"#);
        assert!(e.starts_with("cameras[0].name:"), "{e}");
        let e = err(r#"{"cameras":[]}"#);
        assert!(e.starts_with("cameras: at least one"), "{e}");
        let e = err(r#"{"cameras":[{"watchdog":{"backoff_initial_ms":1000,"backoff_max_ms":10}}]}"#);
        assert!(e.starts_with("cameras[0].watchdog.backoff_max_ms: must be >= 1000"), "{e}");
    }

    #[test]
    fn every_board_profile_parses() {
        for (name, _) in BOARDS {
            board(name).unwrap_or_else(|e| panic!("board {name}: {e}"));
        }
        assert!(board("pi9").unwrap_err().to_string().contains("built-in boards: host"));
        // The Pi profiles read a CSI camera through libcamera.
        for name in ["rpi3", "rpi4", "rpi5", "rpi-zero2w"] {
            assert!(matches!(board(name).unwrap().cameras[0].source, SourceConfig::Libcamera(_)), "{name}");
        }
        // The CSI camera example: two cameras, the second by index, and MQTT.
        let csi = Config::from_json(include_str!("../board/examples/csi-camera.json")).unwrap();
        assert!(matches!(&csi.cameras[1].source, SourceConfig::Libcamera(c) if c.camera == Some(1)));
        assert!(csi.mqtt.is_some());
        // The USB camera example in board/examples/ (a V4L2 source: needs the feature).
        let usb = Config::from_json(include_str!("../board/examples/usb-camera.json"));
        if cfg!(feature = "v4l2") {
            let c = usb.unwrap();
            assert_eq!(c.led, LedConfig::Gpio { pin: 17, active_low: false, chip: None });
        } else {
            assert!(usb.unwrap_err().to_string().contains("without V4L2 support"));
        }
    }

    #[test]
    fn log_level_is_one_of_five_names() {
        let c = Config::from_json(r#"{"log":{"level":"debug"}}"#).unwrap();
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(Config::default().log.level, LogLevel::Info);
        for bad in ["loud", "INFO", "off"] {
            let e = err(&format!(r#"{{"log":{{"level":"{bad}"}}}}"#));
            let want = format!(
                "log.level: unknown variant `{bad}`, expected one of `error`, `warn`, `info`, `debug`, `trace`"
            );
            assert!(e.starts_with(&want), "{e}");
        }
    }

    #[test]
    fn a_zero_stall_period_is_refused_without_overflow() {
        let e = err(r#"{"cameras":[{"source":{"kind":"synthetic","fault":{"stall_every_s":0}}}]}"#);
        assert!(e.starts_with("cameras[0].source.fault.stall_every_s: must be >= 1"), "{e}");
    }

    #[test]
    fn a_retired_key_from_older_check_config_output_is_accepted_and_not_printed() {
        for v in ["null", "5", r#"{"any": [1]}"#] {
            let c = Config::from_json(&format!(r#"{{"exports":{{"panic_at_file":{v}}}}}"#)).unwrap();
            let printed = serde_json::to_string(&c).unwrap();
            assert!(!printed.contains("panic_at_file"));
            assert_eq!(c, Config::default(), "nothing of it is kept");
            assert_eq!(Config::from_json(&printed).unwrap(), c);
        }
        let e = err(r#"{"exports":{"panic_at_files":5}}"#);
        assert!(e.starts_with("exports.panic_at_files: unknown field"), "{e}");
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::default();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(Config::from_json(&text).unwrap(), c);
    }
}
