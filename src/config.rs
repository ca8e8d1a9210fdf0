//! The configuration: JSON, every key optional with a default, unknown keys rejected, every
//! value range-checked where it is parsed. An error names the key path
//! (`cameras[0].watchdog.stall_timeout_ms: must be >= 100`) and the binary exits 2.
//!
//! All sizes that fix memory at start-up (frame buffers, HTTP workers and queue) come from
//! here and are never changed afterwards.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod mqtt;

pub use mqtt::MqttConfig;

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
}

/// Export jobs: `storage.dir/exports/`, a bounded queue, fixed workers, their own budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportsConfig {
    /// Worker threads (`export-N`); each runs one export at a time, at low CPU and I/O priority.
    pub max_concurrent: usize,
    /// Exports waiting for a worker; one more is refused with 503.
    pub max_queued: usize,
    /// Finished exports listed (and, when they succeeded, kept on disk); the oldest goes first.
    pub history: usize,
    /// Budget for all export files together; the oldest finished ones are deleted to stay under
    /// it, and an export that alone would exceed it fails.
    pub max_bytes: u64,
    /// Failed and cancelled exports are forgotten after this long (finished files stay until
    /// `history` or `max_bytes` needs room).
    pub forget_after_s: u64,
    /// Most snapshot files an export reads per second; null is as fast as the low priority
    /// allows. A limit keeps a slow SD card free for the store while a long export runs.
    pub max_files_per_s: Option<u32>,
    /// Timelapse defaults and caps.
    pub timelapse: TimelapseConfig,
    /// Fault injection for tests: the export panics when it reaches this file (1-based).
    pub panic_at_file: Option<u64>,
}

/// Timelapse output: an animated GIF, which every browser plays in an `<img>`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimelapseConfig {
    /// Frames are scaled down to at most this width (aspect ratio kept).
    pub width: u32,
    /// Most frames in one timelapse; longer ranges are sampled evenly.
    pub max_frames: u32,
    /// Default playback rate (a request may ask for another, 1 to 50).
    pub fps: u32,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            max_concurrent: 1,
            max_queued: 4,
            history: 20,
            max_bytes: 512 << 20,
            forget_after_s: 3_600,
            max_files_per_s: None,
            timelapse: TimelapseConfig::default(),
            panic_at_file: None,
        }
    }
}

impl Default for TimelapseConfig {
    fn default() -> Self {
        TimelapseConfig { width: 480, max_frames: 600, fps: 10 }
    }
}

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
    /// Open connections at most; one more is answered 503 and closed.
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

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The data directory; created if missing.
    pub dir: PathBuf,
    /// When snapshot files (and the event journal) are fsynced: `always` (the default: file
    /// and directory fsynced before a snapshot is listed, so a listed snapshot survives a
    /// power cut) or `never` (the kernel writes back within ~30 s; a power cut loses every
    /// snapshot of those seconds, listed or not; fewer bytes written to the card). Measured
    /// by `scripts/power-cut-test.sh`: see the README.
    pub fsync: FsyncPolicy,
    /// Budget for all cameras' snapshots together, in bytes.
    pub max_bytes: u64,
    /// Below this much free space on the filesystem, the oldest snapshots are deleted.
    pub min_free_bytes: u64,
    /// The event journal.
    pub journal: JournalConfig,
}

/// The event journal (`storage.dir/journal/`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Pending events are written at least this often.
    pub batch_ms: u64,
    /// ... or as soon as this many are pending.
    pub batch_events: usize,
    /// A journal file is rotated at this size.
    pub max_file_bytes: u64,
    /// Most journal files kept; the oldest is deleted on rotation.
    pub max_files: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { batch_ms: 5_000, batch_events: 64, max_file_bytes: 1 << 20, max_files: 8 }
    }
}

/// See [`StorageConfig::fsync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Never fsync snapshots.
    Never,
    /// Fsync every snapshot and its directory.
    Always,
}

/// Per-camera snapshot storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Write kept snapshots to `storage.dir/<camera>/<yyyy-mm-dd>/<seq>.jpg`.
    pub enabled: bool,
    /// This camera's budget in bytes.
    pub max_bytes: u64,
    /// Most snapshot files kept for this camera (also the size of its in-memory index).
    pub max_files: usize,
    /// Snapshots older than this are deleted; null keeps them until the budget needs room.
    pub max_age_s: Option<u64>,
    /// `all` writes every kept snapshot; `changed` only those whose change score reaches
    /// `change_threshold`, plus one every `keepalive_s` (a static scene costs few writes).
    pub keep: KeepPolicy,
    /// Change score (0–100, % of full scale on a 32x24 grayscale thumbnail) that counts as a
    /// change: emits a `change` event and passes the `changed` policy.
    pub change_threshold: f32,
    /// With `keep: changed`, a snapshot is written at least this often anyway.
    pub keepalive_s: u64,
}

/// See [`StoreConfig::keep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepPolicy {
    /// Write every kept snapshot.
    All,
    /// Write changed snapshots and keepalives only.
    Changed,
}

/// The status LED backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum LedConfig {
    /// No LED.
    #[default]
    None,
    /// An LED on a GPIO pin (BCM numbering), driven through rppal (`/dev/gpiomem`; the user
    /// needs the `gpio` group).
    Gpio {
        /// BCM pin number (0–27 on the 40-pin header).
        pin: u8,
        /// The LED lights when the pin is low (wired to 3.3 V through the LED).
        #[serde(default)]
        active_low: bool,
    },
    /// A kernel LED: `/sys/class/leds/<name>/brightness` (the Pi's `ACT` LED, say), or any
    /// brightness file given as `path`. Its trigger is set to `none` while camjobd runs and
    /// put back at exit.
    Sysfs {
        /// The LED's name under `/sys/class/leds`.
        #[serde(default)]
        name: Option<String>,
        /// A brightness file, instead of `name`.
        #[serde(default)]
        path: Option<PathBuf>,
    },
}

impl LedConfig {
    /// The brightness file of a `sysfs` LED.
    pub fn sysfs_path(&self) -> Option<PathBuf> {
        match self {
            LedConfig::Sysfs { path: Some(p), .. } => Some(p.clone()),
            LedConfig::Sysfs { name: Some(n), .. } => Some(PathBuf::from("/sys/class/leds").join(n).join("brightness")),
            _ => None,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

/// One camera and its job settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Used in URLs and thread names: 1 to 32 of `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// Where frames come from.
    pub source: SourceConfig,
    /// Start a job when the process starts.
    pub autostart: bool,
    /// How often a captured frame is kept as a snapshot; 0 keeps every frame.
    pub snapshot_interval_ms: u64,
    /// The job completes after this many captured frames.
    pub max_frames: Option<u64>,
    /// The job completes after this many seconds.
    pub max_duration_s: Option<u64>,
    /// Preallocated frame buffers (the pool); never grows.
    pub frame_buffers: usize,
    /// Size of each frame buffer; a bigger frame is dropped and counted.
    pub max_frame_bytes: usize,
    /// JPEG encoder threads for a source that delivers raw frames (synthetic, V4L2 YUYV).
    pub encoder_threads: usize,
    /// Stall and error thresholds.
    pub watchdog: WatchdogConfig,
    /// Where and how much of this camera's snapshots are kept on disk.
    pub store: StoreConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            max_bytes: 256 << 20,
            max_files: 10_000,
            max_age_s: Some(7 * 86_400),
            keep: KeepPolicy::All,
            change_threshold: 2.0,
            keepalive_s: 60,
        }
    }
}

/// When a job is moved to `RECOVERING` and when it is given up as `FAILED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// No frame for this long is a stall.
    pub stall_timeout_ms: u64,
    /// This many read errors in a row start a recovery.
    pub max_consecutive_errors: u32,
    /// Recoveries in a row without a good frame before the job fails.
    pub max_recoveries: u32,
    /// Wait before the first reopen; doubled on each further attempt.
    pub backoff_initial_ms: u64,
    /// Upper bound of the reopen wait.
    pub backoff_max_ms: u64,
}

/// A frame source, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// The built-in moving test pattern.
    Synthetic(SyntheticConfig),
    /// A child process writing MJPEG to stdout.
    Pipe(PipeConfig),
    /// A V4L2 device (a USB/UVC camera, vivid). Needs a build with `--features v4l2`.
    V4l2(V4l2Config),
    /// A Raspberry Pi CSI camera through libcamera: `rpicam-vid` (or `libcamera-vid`).
    Libcamera(LibcameraConfig),
}

impl SourceConfig {
    /// The `kind` as the config writes it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            SourceConfig::Synthetic(_) => "synthetic",
            SourceConfig::Pipe(_) => "pipe",
            SourceConfig::V4l2(_) => "v4l2",
            SourceConfig::Libcamera(_) => "libcamera",
        }
    }

    /// The JPEG quality raw frames are encoded at, for a source that can deliver raw frames
    /// (the synthetic camera; V4L2 unless `mjpg` is asked for); `None` for JPEG-only sources.
    pub fn raw_quality(&self) -> Option<u8> {
        match self {
            SourceConfig::Synthetic(c) => Some(c.quality),
            SourceConfig::V4l2(c) if c.format != V4l2Format::Mjpg => Some(c.quality),
            SourceConfig::V4l2(_) | SourceConfig::Pipe(_) | SourceConfig::Libcamera(_) => None,
        }
    }

    /// The frame size asked for (a pipe's is unknown: 640x480 is assumed), for placeholders.
    pub fn size(&self) -> (u32, u32) {
        match self {
            SourceConfig::Synthetic(c) => (c.width, c.height),
            SourceConfig::V4l2(c) => (c.width, c.height),
            SourceConfig::Pipe(_) => (640, 480),
            SourceConfig::Libcamera(c) => (c.width, c.height),
        }
    }
}

/// A V4L2 capture device, mmap streaming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct V4l2Config {
    /// The device node.
    pub device: PathBuf,
    /// Requested width; the driver may grant another (reported in an event).
    pub width: u32,
    /// Requested height.
    pub height: u32,
    /// Requested frame rate.
    pub fps: u32,
    /// `auto` (MJPG if offered, else YUYV), `MJPG` or `YUYV`.
    pub format: V4l2Format,
    /// Driver buffers for mmap streaming.
    pub buffers: u32,
    /// JPEG quality for YUYV frames (encoded only when kept).
    pub quality: u8,
}

/// See [`V4l2Config::format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum V4l2Format {
    /// MJPG when the camera offers it (passed through untouched), else YUYV.
    #[serde(rename = "auto")]
    Auto,
    /// Motion JPEG: frames are already JPEGs.
    #[serde(rename = "MJPG")]
    Mjpg,
    /// Packed 4:2:2 YUV: converted and encoded only for kept snapshots.
    #[serde(rename = "YUYV")]
    Yuyv,
}

impl Default for V4l2Config {
    fn default() -> Self {
        V4l2Config {
            device: PathBuf::from("/dev/video0"),
            width: 640,
            height: 480,
            fps: 15,
            format: V4l2Format::Auto,
            buffers: 4,
            quality: 80,
        }
    }
}

/// The synthetic camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    /// Faults to inject, so that failure paths can be driven from outside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultConfig>,
}

/// Synthetic faults. All counts are per job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// After this many frames in a job the camera delivers nothing more (reopening does not
    /// help unless `recover_after_reopens` says so).
    pub stall_after_frames: Option<u64>,
    /// Every Nth read fails with a transient error.
    pub error_every: Option<u64>,
    /// The camera cannot be opened.
    pub fail_open: bool,
    /// With `stall_after_frames`: the camera delivers again from the Nth reopen on.
    pub recover_after_reopens: Option<u32>,
    /// With `stall_for_ms`: the camera goes silent once every this many seconds (soak tests).
    pub stall_every_s: Option<u64>,
    /// How long each periodic stall lasts.
    pub stall_for_ms: u64,
}

/// A Raspberry Pi camera (Camera Module 1–3, HQ, GS; CSI) through libcamera's `rpicam-vid`,
/// run with `-t 0 --codec mjpeg --nopreview -o -` and these settings; frames are passed
/// through. Raspberry Pi OS Bookworm: `sudo apt install rpicam-apps` (usually there already).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibcameraConfig {
    /// Frame width (`--width`).
    pub width: u32,
    /// Frame height (`--height`).
    pub height: u32,
    /// Frames per second (`--framerate`).
    pub fps: u32,
    /// JPEG quality 1–100 (`--quality`).
    pub quality: u8,
    /// Which camera (`--camera`, 0 = the first `rpicam-hello --list-cameras` shows); `null`:
    /// rpicam-vid's default, the first.
    pub camera: Option<u32>,
    /// More arguments for rpicam-vid (`["--hflip", "--vflip"]`, `["--autofocus-mode",
    /// "continuous"]`), after camjobd's own.
    pub extra_args: Vec<String>,
}

impl Default for LibcameraConfig {
    fn default() -> Self {
        LibcameraConfig { width: 1280, height: 720, fps: 15, quality: 80, camera: None, extra_args: Vec::new() }
    }
}

/// The rpicam-vid options `extra_args` may use: image and camera tuning only. Anything else
/// could take the MJPEG stream on stdout away or end it (`-o`, `--codec`, `--frames`,
/// `--metadata -`, `--help`), repeat one of camjobd's own (rpicam then exits), or be an
/// abbreviation rpicam's option parser would expand (`--out`), so it is refused.
pub const LIBCAMERA_EXTRA_OPTIONS: [&str; 27] = [
    "--hflip",
    "--vflip",
    "--rotation",
    "--roi",
    "--shutter",
    "--gain",
    "--analoggain",
    "--metering",
    "--exposure",
    "--ev",
    "--awb",
    "--awbgains",
    "--brightness",
    "--contrast",
    "--saturation",
    "--sharpness",
    "--denoise",
    "--tuning-file",
    "--mode",
    "--autofocus-mode",
    "--autofocus-range",
    "--autofocus-speed",
    "--autofocus-window",
    "--lens-position",
    "--hdr",
    "--flicker-period",
    "--buffer-count",
];

/// Why an `extra_args` entry is refused, if it is: options must be whole names from
/// [`LIBCAMERA_EXTRA_OPTIONS`] (`--name` or `--name=value`); anything not starting with `-`
/// is a value, as is a negative number (`--ev -0.5`).
fn libcamera_extra_arg_problem(arg: &str) -> Option<String> {
    if arg.is_empty() || arg.len() > 256 || arg.contains('\0') {
        return Some("must be 1 to 256 bytes, no NUL".into());
    }
    let negative_number =
        arg.strip_prefix('-').is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit() || c == '.'));
    if !arg.starts_with('-') || negative_number {
        return None;
    }
    let name = arg.split('=').next().unwrap_or(arg);
    if LIBCAMERA_EXTRA_OPTIONS.contains(&name) {
        return None;
    }
    Some(format!(
        "{name:?} is not an option camjobd passes on: extra_args takes rpicam-vid's tuning options by their full name ({}); size, rate, quality and camera have their own keys, and the output is camjobd's to set",
        LIBCAMERA_EXTRA_OPTIONS.join(" ")
    ))
}

/// A child process whose stdout is an MJPEG byte stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeConfig {
    /// argv: program and arguments; no shell is involved unless you name one.
    pub command: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            led: LedConfig::None,
            log: LogConfig::default(),
            cameras: vec![CameraConfig::default()],
            exports: ExportsConfig::default(),
            mqtt: None,
        }
    }
}

impl HttpConfig {
    /// Frame copies per camera: the configured number, or one per stream client plus two
    /// for snapshot readers.
    pub fn frame_copies(&self) -> usize {
        self.frame_copies.unwrap_or(self.max_stream_clients + 2)
    }
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
            read_timeout_ms: 5_000,
            write_timeout_ms: 5_000,
            idle_timeout_ms: 5_000,
            max_header_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 16 * 1024,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("camjobd-data"),
            fsync: FsyncPolicy::Always,
            max_bytes: 1 << 30,
            min_free_bytes: 64 << 20,
            journal: JournalConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            name: "cam0".into(),
            source: SourceConfig::Synthetic(SyntheticConfig::default()),
            autostart: true,
            snapshot_interval_ms: 1_000,
            max_frames: None,
            max_duration_s: None,
            frame_buffers: 4,
            encoder_threads: 1,
            max_frame_bytes: 1024 * 1024,
            watchdog: WatchdogConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            stall_timeout_ms: 5_000,
            max_consecutive_errors: 10,
            max_recoveries: 5,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Synthetic(SyntheticConfig::default())
    }
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { width: 640, height: 480, fps: 10, quality: 80, fault: None }
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

/// Directories camjobd keeps in `storage.dir` for itself; a camera's snapshots go into a
/// directory named after the camera, so these names are not camera names.
pub const RESERVED_NAMES: [&str; 2] = ["exports", "journal"];

/// Directories that must not be `storage.dir` (camjobd writes its state, journal and exports
/// there and deletes old files in it): the root, system directories, and shared scratch space
/// anyone can plant links in.
const SYSTEM_DIRS: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys", "/tmp",
    "/usr", "/var",
];

/// `dir` with `.` and `..` resolved by name (no file system access), so `/usr/..` is `/`.
fn lexical(dir: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in dir.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Most cameras one process runs; each costs a thread and a frame pool.
pub const MAX_CAMERAS: usize = 8;

/// `--check-config` must not print the secret.
fn redact<S: serde::Serializer>(token: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match token {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

impl Config {
    /// Reads the secrets kept in files (`http.token_file`, `mqtt.password_file`), after
    /// validation.
    pub fn load_secret_files(&mut self) -> Result<(), ConfigError> {
        self.load_token_file()?;
        match &mut self.mqtt {
            Some(m) => m.load_password_file(),
            None => Ok(()),
        }
    }

    /// Reads `http.token_file` into `http.token` (after validation).
    pub fn load_token_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.http.token_file else { return Ok(()) };
        let fail = |message: String| ConfigError { path: "http.token_file".into(), message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!("cannot read {}: {e}; the service user needs read access to it", path.display()))
        })?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(format!(
                "{}: the first line must be 1 to 256 printable ASCII characters",
                path.display()
            )));
        }
        self.http.token = Some(token);
        Ok(())
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

    /// Bytes of frame memory camera `i` commits at start: its pool, its HTTP copies and, for a
    /// raw source, its encoders' images.
    pub fn frame_memory(&self, i: usize) -> u64 {
        let c = &self.cameras[i];
        let per = c.max_frame_bytes as u64;
        let pool = c.frame_buffers as u64 * per;
        let copies = self.http.frame_copies() as u64 * per;
        let encoders = match c.source.raw_quality() {
            Some(_) => {
                let (w, h) = c.source.size();
                c.encoder_threads as u64 * crate::jpeg::Yuv422::bytes_for(w as usize, h as usize) as u64
            }
            None => 0,
        };
        pool + copies + encoders
    }

    /// Refuses frame memory beyond half of `physical` bytes (this machine's memory): start-up
    /// commits it all at once, and would otherwise die in the allocator, naming nothing. The
    /// error names the camera that takes the most.
    pub fn check_memory(&self, physical: u64) -> Result<(), ConfigError> {
        let total: u64 = (0..self.cameras.len()).map(|i| self.frame_memory(i)).sum();
        if total <= physical / 2 {
            return Ok(());
        }
        // The first of equals (`max_by_key` keeps the last).
        let biggest = (0..self.cameras.len()).rev().max_by_key(|&i| self.frame_memory(i)).unwrap_or(0);
        let mib = |b: u64| b >> 20;
        Err(ConfigError {
            path: format!("cameras[{biggest}].max_frame_bytes"),
            message: format!(
                "the cameras' frame memory (frame_buffers × max_frame_bytes, plus http.frame_copies × max_frame_bytes and the encoders' images, per camera) is {} MiB, more than half of this machine's {} MiB (cameras[{biggest}] takes {} MiB): lower cameras[].frame_buffers, cameras[].max_frame_bytes or http.frame_copies",
                mib(total),
                mib(physical),
                mib(self.frame_memory(biggest))
            ),
        })
    }

    /// The listen address, parsed.
    pub fn bind_addr(&self) -> SocketAddr {
        // validate() checked it parses.
        self.http.bind.parse().expect("http.bind validated")
    }

    /// Range-checks every value; the first error wins.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut v = Checker::default();
        let h = &self.http;
        if h.bind.parse::<SocketAddr>().is_err() {
            v.fail(
                "http.bind",
                format!("{:?} is not IP:PORT (for example \"127.0.0.1:8080\" or \"[::]:8080\")", h.bind),
            );
        }
        v.check(
            "http.token_file",
            !(h.token.is_some() && h.token_file.is_some()),
            "give http.token or http.token_file, not both",
        );
        if let Ok(addr) = h.bind.parse::<SocketAddr>() {
            let open = !addr.ip().is_loopback() && h.token.is_none() && h.token_file.is_none();
            if open && !h.allow_open {
                v.fail(
                    "http.bind",
                    format!(
                        "{addr} lets anyone on the network start and stop jobs: set http.token or http.token_file, or set http.allow_open: true to accept that"
                    ),
                );
            }
        }
        v.check(
            "http.protect_reads",
            !h.protect_reads || h.token.is_some() || h.token_file.is_some(),
            "needs http.token or http.token_file (the token that reads must carry)",
        );
        if let Some(t) = &h.token {
            v.check(
                "http.token",
                !t.is_empty() && t.len() <= 256 && t.bytes().all(|b| b.is_ascii_graphic()),
                "must be 1 to 256 printable ASCII characters without spaces",
            );
        }
        v.range("http.workers", h.workers as u64, 1, 64);
        v.range("http.queue", h.queue as u64, 1, 4096);
        v.range("http.max_connections", h.max_connections as u64, 8, 65_536);
        v.range("http.max_stream_clients", h.max_stream_clients as u64, 1, 1024);
        if let Some(n) = h.frame_copies {
            v.range("http.frame_copies", n as u64, 1, 1026);
        }
        if let Some(o) = &h.cors_origin {
            v.check(
                "http.cors_origin",
                !o.is_empty() && o.len() <= 256 && o.bytes().all(|b| b.is_ascii_graphic()),
                "must be \"*\", an origin such as \"http://mainsail.local\", or null",
            );
        }
        v.range("http.read_timeout_ms", h.read_timeout_ms, 100, 600_000);
        v.range("http.write_timeout_ms", h.write_timeout_ms, 100, 600_000);
        v.range("http.idle_timeout_ms", h.idle_timeout_ms, 100, 600_000);
        v.range("http.max_header_bytes", h.max_header_bytes as u64, 1024, 1 << 20);
        v.range("http.max_headers", h.max_headers as u64, 4, 256);
        v.range("http.max_body_bytes", h.max_body_bytes as u64, 0, 1 << 20);
        v.check("storage.dir", !self.storage.dir.as_os_str().is_empty(), "must not be empty");
        let dir = lexical(&self.storage.dir);
        if SYSTEM_DIRS.iter().any(|d| dir == std::path::Path::new(d)) || dir == std::path::Path::new("/var/tmp") {
            v.fail(
                "storage.dir",
                format!(
                    "{} is a system or shared directory; camjobd writes and deletes files there: use a directory of its own, e.g. /var/lib/camjobd",
                    self.storage.dir.display()
                ),
            );
        }
        v.range("storage.max_bytes", self.storage.max_bytes, 1 << 20, u64::MAX);
        v.range("storage.min_free_bytes", self.storage.min_free_bytes, 0, u64::MAX);
        let j = &self.storage.journal;
        v.range("storage.journal.batch_ms", j.batch_ms, 100, 3_600_000);
        v.range("storage.journal.batch_events", j.batch_events as u64, 1, crate::events::EVENT_CAPACITY as u64 / 2);
        v.range("storage.journal.max_file_bytes", j.max_file_bytes, 4096, 1 << 30);
        v.range("storage.journal.max_files", j.max_files as u64, 2, 1000);
        match &self.led {
            LedConfig::Gpio { pin, .. } => v.range("led.pin", u64::from(*pin), 0, 53),
            LedConfig::Sysfs { name, path } => {
                v.check(
                    "led",
                    name.is_some() != path.is_some(),
                    "a sysfs LED needs name (under /sys/class/leds) or path, not both",
                );
                if let Some(n) = name {
                    let ok = !n.is_empty() && !n.contains('/') && n != "." && n != "..";
                    v.check("led.name", ok, "must be an LED name like \"ACT\" (ls /sys/class/leds)");
                }
            }
            LedConfig::None => {}
        }
        let x = &self.exports;
        v.range("exports.max_concurrent", x.max_concurrent as u64, 1, 4);
        v.range("exports.max_queued", x.max_queued as u64, 1, 64);
        v.range("exports.history", x.history as u64, 1, 1000);
        v.range("exports.max_bytes", x.max_bytes, 1 << 20, u64::MAX);
        v.range("exports.forget_after_s", x.forget_after_s, 1, 30 * 86_400);
        v.range("exports.timelapse.width", x.timelapse.width as u64, 16, 1920);
        v.range("exports.timelapse.max_frames", x.timelapse.max_frames as u64, 2, 10_000);
        v.range("exports.timelapse.fps", x.timelapse.fps as u64, 1, 50);
        if let Some(n) = x.max_files_per_s {
            v.range("exports.max_files_per_s", u64::from(n), 1, 100_000);
        }
        if let Some(n) = x.panic_at_file {
            v.range("exports.panic_at_file", n, 1, u64::MAX);
        }
        v.check(
            "log.level",
            matches!(self.log.level.as_str(), "error" | "warn" | "info" | "debug" | "trace"),
            "must be one of error, warn, info, debug, trace",
        );
        v.check("cameras", !self.cameras.is_empty(), "at least one camera is needed");
        v.check("cameras", self.cameras.len() <= MAX_CAMERAS, &format!("at most {MAX_CAMERAS} cameras"));
        for (i, c) in self.cameras.iter().enumerate() {
            let p = |k: &str| format!("cameras[{i}].{k}");
            let name_ok = !c.name.is_empty()
                && c.name.len() <= 32
                && c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            v.check(&p("name"), name_ok, "must be 1 to 32 of A-Z a-z 0-9 _ -");
            if RESERVED_NAMES.contains(&c.name.as_str()) {
                v.fail(
                    &p("name"),
                    format!("{:?} is a directory camjobd keeps in storage.dir for itself (exports, journal): choose another name", c.name),
                );
            }
            if self.cameras[..i].iter().any(|o| o.name == c.name) {
                v.fail(&p("name"), format!("{:?} is used by an earlier camera; names must be unique", c.name));
            }
            v.range(&p("snapshot_interval_ms"), c.snapshot_interval_ms, 0, 86_400_000);
            if let Some(n) = c.max_frames {
                v.range(&p("max_frames"), n, 1, u64::MAX);
            }
            if let Some(n) = c.max_duration_s {
                v.range(&p("max_duration_s"), n, 1, 10 * 365 * 86_400);
            }
            v.range(&p("frame_buffers"), c.frame_buffers as u64, 2, 64);
            v.range(&p("encoder_threads"), c.encoder_threads as u64, 1, 8);
            if c.source.raw_quality().is_some() && c.frame_buffers < c.encoder_threads + 2 {
                v.fail(
                    &p("frame_buffers"),
                    format!(
                        "must be at least encoder_threads + 2 = {} (each encoder holds a buffer while it works, and readers hold the newest)",
                        c.encoder_threads + 2
                    ),
                );
            }
            v.range(&p("max_frame_bytes"), c.max_frame_bytes as u64, 4096, 64 << 20);
            v.range(&p("store.max_bytes"), c.store.max_bytes, 64 << 10, u64::MAX);
            v.range(&p("store.max_files"), c.store.max_files as u64, 1, 1_000_000);
            let t = c.store.change_threshold;
            v.check(&p("store.change_threshold"), t > 0.0 && t <= 100.0, "must be > 0 and <= 100 (percent)");
            v.range(&p("store.keepalive_s"), c.store.keepalive_s, 1, 86_400);
            if let Some(n) = c.store.max_age_s {
                v.range(&p("store.max_age_s"), n, 1, u64::MAX);
            }
            let w = &c.watchdog;
            v.range(&p("watchdog.stall_timeout_ms"), w.stall_timeout_ms, 100, 3_600_000);
            v.range(&p("watchdog.max_consecutive_errors"), w.max_consecutive_errors as u64, 1, 1_000_000);
            v.range(&p("watchdog.max_recoveries"), w.max_recoveries as u64, 0, 1_000_000);
            v.range(&p("watchdog.backoff_initial_ms"), w.backoff_initial_ms, 0, 600_000);
            v.range(&p("watchdog.backoff_max_ms"), w.backoff_max_ms, w.backoff_initial_ms, 3_600_000);
            match &c.source {
                SourceConfig::Synthetic(s) => {
                    v.range(&p("source.width"), s.width as u64, 16, 4096);
                    v.check(&p("source.width"), s.width % 2 == 0, "must be even (YUYV pairs two pixels)");
                    v.range(&p("source.height"), s.height as u64, 16, 4096);
                    v.range(&p("source.fps"), s.fps as u64, 1, 10_000);
                    v.range(&p("source.quality"), s.quality as u64, 1, 100);
                    if let Some(f) = &s.fault {
                        if let Some(n) = f.error_every {
                            v.range(&p("source.fault.error_every"), n, 1, u64::MAX);
                        }
                        if let Some(every) = f.stall_every_s {
                            v.range(&p("source.fault.stall_every_s"), every, 1, 86_400);
                            v.range(&p("source.fault.stall_for_ms"), f.stall_for_ms, 1, every.saturating_mul(1000) - 1);
                        }
                        if f.recover_after_reopens.is_some() {
                            v.check(
                                &p("source.fault.recover_after_reopens"),
                                f.stall_after_frames.is_some(),
                                "only makes sense with stall_after_frames",
                            );
                        }
                    }
                }
                SourceConfig::V4l2(s) => {
                    if !cfg!(feature = "v4l2") {
                        v.fail(
                            &p("source.kind"),
                            "this camjobd was built without V4L2 support: build it with `cargo build --release --features v4l2` (needs libclang; scripts/cross-build.sh does this for the Pi), or use {\"kind\": \"pipe\", \"command\": [\"ffmpeg\", \"-f\", \"v4l2\", \"-input_format\", \"mjpeg\", \"-i\", \"/dev/video0\", \"-c\", \"copy\", \"-f\", \"mjpeg\", \"-\"]}",
                        );
                    }
                    v.check(&p("source.device"), s.device.is_absolute(), "must be an absolute path like /dev/video0");
                    v.range(&p("source.width"), u64::from(s.width), 16, 8192);
                    v.range(&p("source.height"), u64::from(s.height), 16, 8192);
                    v.range(&p("source.fps"), u64::from(s.fps), 1, 240);
                    v.range(&p("source.buffers"), u64::from(s.buffers), 2, 32);
                    v.range(&p("source.quality"), u64::from(s.quality), 1, 100);
                }
                SourceConfig::Libcamera(s) => {
                    v.range(&p("source.width"), u64::from(s.width), 32, 9152);
                    v.range(&p("source.height"), u64::from(s.height), 32, 6944);
                    v.range(&p("source.fps"), u64::from(s.fps), 1, 240);
                    v.range(&p("source.quality"), u64::from(s.quality), 1, 100);
                    if let Some(n) = s.camera {
                        v.range(&p("source.camera"), u64::from(n), 0, 15);
                    }
                    v.check(&p("source.extra_args"), s.extra_args.len() <= 32, "at most 32 arguments");
                    for (j, a) in s.extra_args.iter().enumerate() {
                        if let Some(problem) = libcamera_extra_arg_problem(a) {
                            v.fail(&p(&format!("source.extra_args[{j}]")), problem);
                        }
                    }
                    // A JPEG of about 3 bits per pixel is a detailed scene at high quality;
                    // frames over max_frame_bytes would all be dropped as oversize.
                    let needed = u64::from(s.width) * u64::from(s.height) * 3 / 8;
                    if (c.max_frame_bytes as u64) < needed {
                        v.fail(
                            &p("max_frame_bytes"),
                            format!(
                                "{} bytes is too small for {}x{} JPEG frames (allow {needed} or more)",
                                c.max_frame_bytes, s.width, s.height
                            ),
                        );
                    }
                }
                SourceConfig::Pipe(s) => {
                    v.check(&p("source.command"), !s.command.is_empty() && !s.command[0].is_empty(), "must name a program, e.g. [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"-o\", \"-\"]");
                    v.check(&p("source.command"), s.command.len() <= 64, "at most 64 arguments");
                    v.check(
                        &p("source.command"),
                        s.command.iter().all(|a| !a.contains('\0')),
                        "arguments must not contain NUL",
                    );
                }
            }
        }
        if let Some(m) = &self.mqtt {
            m.validate(&mut v);
        }
        v.finish()
    }
}

/// Collects the first failed check.
#[derive(Default)]
struct Checker {
    first: Option<ConfigError>,
}

impl Checker {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        if self.first.is_none() {
            self.first = Some(ConfigError { path: path.to_string(), message: message.into() });
        }
    }
    fn check(&mut self, path: &str, ok: bool, message: &str) {
        if !ok {
            self.fail(path, message);
        }
    }
    fn range(&mut self, path: &str, value: u64, min: u64, max: u64) {
        if value < min {
            self.fail(path, format!("must be >= {min} (got {value})"));
        } else if value > max {
            self.fail(path, format!("must be <= {max} (got {value})"));
        }
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

#[cfg(test)]
mod tests {
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
    fn frame_memory_beyond_half_the_machine_is_refused_naming_the_camera() {
        let big = r#"{"name":"big","frame_buffers":64,"max_frame_bytes":67108864}"#;
        let json = format!(r#"{{"cameras":[{{"name":"small"}},{big}]}}"#);
        let c = Config::from_json(&json).unwrap();
        // 64 × 64 MiB + 10 copies × 64 MiB + one 640x480 encoder image.
        assert_eq!(c.frame_memory(1) >> 20, 74 * 64);
        let e = c.check_memory(8 << 30).unwrap_err();
        assert_eq!(e.path, "cameras[1].max_frame_bytes");
        assert!(e.message.contains("more than half of this machine's 8192 MiB"), "{}", e.message);
        assert!(c.check_memory(16 << 30).is_ok());
        assert!(Config::default().check_memory(512 << 20).is_ok(), "the default fits a Pi Zero 2 W");
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
            assert_eq!(c.led, LedConfig::Gpio { pin: 17, active_low: false });
        } else {
            assert!(usb.unwrap_err().to_string().contains("without V4L2 support"));
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::default();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(Config::from_json(&text).unwrap(), c);
    }
}
