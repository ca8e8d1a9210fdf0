//! The cameras: each camera's job settings, its watchdog thresholds and its frame source
//! (synthetic, V4L2, pipe, libcamera), with the rules that tie them together: the `extra_args`
//! allowlist for rpicam-vid and the smallest frame buffer a libcamera frame size needs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{CameraMoonraker, Checker, StoreConfig, VideoConfig, RESERVED_NAMES};

/// The largest `max_frames` a job takes (config, HTTP, MQTT): 2^53 − 1, the largest integer a
/// JavaScript client (the dashboard, Home Assistant's templates) reads exactly.
pub const MAX_FRAMES: u64 = (1 << 53) - 1;
/// The largest `max_duration_s` a job takes: ten years.
pub const MAX_DURATION_S: u64 = 10 * 365 * 86_400;

/// Most cameras one process runs; each costs a thread and a frame pool.
pub const MAX_CAMERAS: usize = 8;

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
    /// H.264 for RTSP clients (`null`: none).
    pub video: Option<VideoConfig>,
    /// Its webcam in Moonraker, with a top-level `moonraker`: `false` (none), or the `name`
    /// and `service` to register it under (default: the camera's name, `moonraker.service`).
    #[serde(skip_serializing_if = "CameraMoonraker::is_default")]
    pub moonraker: CameraMoonraker,
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
            video: None,
            moonraker: CameraMoonraker::default(),
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

    /// Whether its frames may come as JPEGs (MJPG V4L2, `auto` on a camera that offers MJPG,
    /// pipe, libcamera): H.264 then decodes them.
    pub fn may_deliver_jpeg(&self) -> bool {
        match self {
            SourceConfig::Synthetic(_) => false,
            SourceConfig::V4l2(c) => c.format != V4l2Format::Yuyv,
            SourceConfig::Pipe(_) | SourceConfig::Libcamera(_) => true,
        }
    }

    /// The frame rate asked for (a pipe's is unknown).
    pub fn fps(&self) -> Option<u32> {
        match self {
            SourceConfig::Synthetic(c) => Some(c.fps),
            SourceConfig::V4l2(c) => Some(c.fps),
            SourceConfig::Libcamera(c) => Some(c.fps),
            SourceConfig::Pipe(_) => None,
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

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Synthetic(SyntheticConfig::default())
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

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { width: 640, height: 480, fps: 10, quality: 80, fault: None }
    }
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
/// run with `-t 0 --codec mjpeg --nopreview -o -` (JPEGs passed through) or `--codec yuv420`
/// (raw frames camjobd encodes) and these settings. Raspberry Pi OS Bookworm: `sudo apt install rpicam-apps` (usually there already).
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
    /// What rpicam-vid writes for camjobd (`--codec`).
    pub codec: LibcameraCodec,
}

/// What rpicam-vid writes on stdout (`cameras[i].source.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LibcameraCodec {
    /// `yuv420` when the camera has `video` (encoder not `source`) and a width that is a
    /// multiple of 128, else `mjpeg`.
    Auto,
    /// JPEGs from the Pi's JPEG encoder, passed through.
    Mjpeg,
    /// Raw I420 frames, encoded by camjobd (JPEG when due, H.264 while somebody watches).
    Yuv420,
}

impl Default for LibcameraConfig {
    fn default() -> Self {
        LibcameraConfig {
            width: 1280,
            height: 720,
            fps: 15,
            quality: 80,
            camera: None,
            extra_args: Vec::new(),
            codec: LibcameraCodec::Auto,
        }
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

/// Checks the camera list and each camera (keys relative to `cameras[i]`).
pub(super) fn validate(cameras: &[CameraConfig], v: &mut Checker) {
    const CAMERAS: &str = "cameras";
    v.check(CAMERAS, !cameras.is_empty(), "at least one camera is needed");
    v.check(CAMERAS, cameras.len() <= MAX_CAMERAS, &format!("at most {MAX_CAMERAS} cameras"));
    for (i, c) in cameras.iter().enumerate() {
        v.within(&format!("cameras[{i}]"), |v| c.validate(&cameras[..i], v));
    }
}

impl CameraConfig {
    /// Whether this camera is a libcamera one read as YUV 4:2:0 (`rpicam-vid --codec yuv420`):
    /// with `video` on and an encoder other than `source`, camjobd makes both the JPEGs and the
    /// H.264 from one raw picture instead of decoding rpicam-vid's JPEGs for H.264. Only for
    /// widths that are a multiple of 128, so that no alignment of rpicam-vid's rows can pad
    /// them (other widths keep the JPEG path; `docs/rtsp.md`).
    pub fn libcamera_yuv420(&self) -> bool {
        let SourceConfig::Libcamera(s) = &self.source else { return false };
        match s.codec {
            LibcameraCodec::Mjpeg => false,
            LibcameraCodec::Yuv420 => true,
            LibcameraCodec::Auto => {
                raw_width_ok(s.width, s.height)
                    && self.video.as_ref().is_some_and(|v| v.encoder != super::EncoderKind::Source)
                    // Raw frames need camjobd's JPEG encoders, and they a buffer each: a config
                    // with too few keeps the JPEG path rather than be refused.
                    && self.frame_buffers >= self.encoder_threads + 2
            }
        }
    }

    /// The JPEG quality when camjobd encodes this camera's JPEGs from raw frames.
    pub fn raw_quality(&self) -> Option<u8> {
        match &self.source {
            SourceConfig::Libcamera(s) if self.libcamera_yuv420() => Some(s.quality),
            source => source.raw_quality(),
        }
    }

    /// Whether its frames may come as JPEGs, which H.264 then decodes.
    pub fn may_deliver_jpeg(&self) -> bool {
        self.source.may_deliver_jpeg() && !self.libcamera_yuv420()
    }

    /// Checks one camera; `earlier` are the cameras before it (names must be unique).
    fn validate(&self, earlier: &[CameraConfig], v: &mut Checker) {
        const NAME: &str = "name";
        const FRAME_BUFFERS: &str = "frame_buffers";
        const MAX_FRAME_BYTES: &str = "max_frame_bytes";
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        v.check(NAME, name_ok, "must be 1 to 32 of A-Z a-z 0-9 _ -");
        // The camera's snapshots go into storage.dir/<name>, beside camjobd's own directories.
        if RESERVED_NAMES.contains(&self.name.as_str()) {
            v.fail(
                NAME,
                format!("{:?} is a directory camjobd keeps in storage.dir for itself (exports, journal): choose another name", self.name),
            );
        }
        if earlier.iter().any(|o| o.name == self.name) {
            v.fail(NAME, format!("{:?} is used by an earlier camera; names must be unique", self.name));
        }
        v.range("snapshot_interval_ms", self.snapshot_interval_ms, 0, 86_400_000);
        v.range_some("max_frames", self.max_frames, 1, MAX_FRAMES);
        v.range_some("max_duration_s", self.max_duration_s, 1, MAX_DURATION_S);
        v.range(FRAME_BUFFERS, self.frame_buffers, 2, 64);
        v.range("encoder_threads", self.encoder_threads, 1, 8);
        if self.raw_quality().is_some() && self.frame_buffers < self.encoder_threads + 2 {
            v.fail(
                FRAME_BUFFERS,
                format!(
                    "must be at least encoder_threads + 2 = {} (each encoder holds a buffer while it works, and readers hold the newest)",
                    self.encoder_threads + 2
                ),
            );
        }
        v.range(MAX_FRAME_BYTES, self.max_frame_bytes, 4096, 64 << 20);
        v.within("store", |v| self.store.validate(v));
        if let Some(video) = &self.video {
            v.within("video", |v| video.validate(v));
            if video.encoder == super::EncoderKind::Source {
                v.fail(
                    "video.encoder",
                    "\"source\" (the camera's own H.264) is not built in this version; use \"auto\", \"software\" or \"v4l2m2m\"",
                );
            }
        }
        v.within("watchdog", |v| self.watchdog.validate(v));
        v.within("source", |v| self.source.validate(v));
        // Checked after the source, so that a bad size is reported as the source's own error.
        if let SourceConfig::Libcamera(s) = &self.source {
            // A JPEG of about 3 bits per pixel is a detailed scene at high quality;
            // frames over max_frame_bytes would all be dropped as oversize.
            let needed = u64::from(s.width) * u64::from(s.height) * 3 / 8;
            if (self.max_frame_bytes as u64) < needed {
                v.fail(
                    MAX_FRAME_BYTES,
                    format!(
                        "{} bytes is too small for {}x{} JPEG frames (allow {needed} or more)",
                        self.max_frame_bytes, s.width, s.height
                    ),
                );
            }
        }
    }
}

impl WatchdogConfig {
    /// Range-checks the thresholds (keys relative to `cameras[i].watchdog`).
    fn validate(&self, v: &mut Checker) {
        v.range("stall_timeout_ms", self.stall_timeout_ms, 100, 3_600_000);
        v.range("max_consecutive_errors", self.max_consecutive_errors, 1, 1_000_000);
        v.range("max_recoveries", self.max_recoveries, 0, 1_000_000);
        v.range("backoff_initial_ms", self.backoff_initial_ms, 0, 600_000);
        v.range("backoff_max_ms", self.backoff_max_ms, self.backoff_initial_ms, 3_600_000);
    }
}

impl SourceConfig {
    /// Checks the source of its kind (keys relative to `cameras[i].source`).
    fn validate(&self, v: &mut Checker) {
        match self {
            SourceConfig::Synthetic(s) => s.validate(v),
            SourceConfig::V4l2(s) => s.validate(v),
            SourceConfig::Libcamera(s) => s.validate(v),
            SourceConfig::Pipe(s) => s.validate(v),
        }
    }
}

impl SyntheticConfig {
    fn validate(&self, v: &mut Checker) {
        const WIDTH: &str = "width";
        v.range(WIDTH, self.width, 16, 4096);
        v.check(WIDTH, self.width % 2 == 0, "must be even (YUYV pairs two pixels)");
        v.range("height", self.height, 16, 4096);
        v.range("fps", self.fps, 1, 10_000);
        v.range("quality", self.quality, 1, 100);
        if let Some(f) = &self.fault {
            v.within("fault", |v| f.validate(v));
        }
    }
}

impl FaultConfig {
    fn validate(&self, v: &mut Checker) {
        v.range_some("error_every", self.error_every, 1, u64::MAX);
        if let Some(every) = self.stall_every_s {
            v.range("stall_every_s", every, 1, 86_400);
            // A stall shorter than its period; saturating, as `every` may be the 0 just refused.
            v.range("stall_for_ms", self.stall_for_ms, 1, every.saturating_mul(1000).saturating_sub(1));
        }
        if self.recover_after_reopens.is_some() {
            v.check(
                "recover_after_reopens",
                self.stall_after_frames.is_some(),
                "only makes sense with stall_after_frames",
            );
        }
    }
}

impl V4l2Config {
    fn validate(&self, v: &mut Checker) {
        if !cfg!(feature = "v4l2") {
            v.fail(
                "kind",
                "this camjobd was built without V4L2 support: build it with `cargo build --release --features v4l2` (needs libclang; scripts/cross-build.sh does this for the Pi), or use {\"kind\": \"pipe\", \"command\": [\"ffmpeg\", \"-f\", \"v4l2\", \"-input_format\", \"mjpeg\", \"-i\", \"/dev/video0\", \"-c\", \"copy\", \"-f\", \"mjpeg\", \"-\"]}",
            );
        }
        v.check("device", self.device.is_absolute(), "must be an absolute path like /dev/video0");
        v.range("width", self.width, 16, 8192);
        v.range("height", self.height, 16, 8192);
        v.range("fps", self.fps, 1, 240);
        v.range("buffers", self.buffers, 2, 32);
        v.range("quality", self.quality, 1, 100);
    }
}

/// Whether rpicam-vid's raw rows can be read as `width` bytes: a width that is a multiple of
/// 128 cannot be padded by any alignment libcamera uses (the Pi 5's aligns chroma rows to 64
/// bytes, so luma rows to 128).
fn raw_width_ok(width: u32, height: u32) -> bool {
    width % 128 == 0 && height % 2 == 0
}

impl LibcameraConfig {
    fn validate(&self, v: &mut Checker) {
        v.range("width", self.width, 32, 9152);
        v.range("height", self.height, 32, 6944);
        v.range("fps", self.fps, 1, 240);
        v.range("quality", self.quality, 1, 100);
        v.range_some("camera", self.camera, 0, 15);
        if self.codec == LibcameraCodec::Yuv420 {
            // rpicam-vid may pad rows to its alignment: only widths it cannot pad are read raw.
            if !raw_width_ok(self.width, self.height) {
                v.fail(
                    "codec",
                    format!(
                        "\"yuv420\" needs a width that is a multiple of 128 and an even height (got {}x{}); use 640, 1280, 1920, ... or \"mjpeg\"",
                        self.width, self.height
                    ),
                );
            }
        }
        v.check("extra_args", self.extra_args.len() <= 32, "at most 32 arguments");
        for (j, a) in self.extra_args.iter().enumerate() {
            if let Some(problem) = libcamera_extra_arg_problem(a) {
                v.fail(&format!("extra_args[{j}]"), problem);
            }
        }
    }
}

impl PipeConfig {
    fn validate(&self, v: &mut Checker) {
        const COMMAND: &str = "command";
        v.check(
            COMMAND,
            !self.command.is_empty() && !self.command[0].is_empty(),
            "must name a program, e.g. [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"-o\", \"-\"]",
        );
        v.check(COMMAND, self.command.len() <= 64, "at most 64 arguments");
        v.check(COMMAND, self.command.iter().all(|a| !a.contains('\0')), "arguments must not contain NUL");
    }
}
