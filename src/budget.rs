//! What a config costs the board, and whether the board has it: memory committed at start and
//! the most it can come to, and the tasks (threads and camera processes) it runs, compared with
//! the smallest of this machine's memory, its control group's limits (systemd's `MemoryMax=`
//! and `TasksMax=` when camjobd runs as the service) and, for `--check-config`, the limits the
//! installed unit file sets. A config over them is refused (exit 2) naming the keys to lower,
//! rather than started into an allocator failure or "cannot start thread" that systemd would
//! restart for ever.
//!
//! The figures are sums of what the code allocates, by construction (buffers are allocated
//! once, at their full size); the fixed part of the process and the camera programs are
//! allowances, checked against measured RSS by the tests.

use std::fmt;

use serde::Serialize;

use crate::config::{Config, ConfigError, SourceConfig};

/// The process without any camera: code, libraries, runtimes, logging, the event ring.
/// (Measured VmRSS of a camera-less start is about 5 MiB on x86_64; rounded up.)
const BASE: u64 = 8 << 20;
/// Per connection at most: hyper's read buffer (up to `max_header_bytes`), its write buffer
/// and the connection's state.
const PER_CONNECTION: u64 = 16 << 10;
/// Per export worker: a timelapse's frame and GIF encoder at `exports.timelapse.width`, an
/// archive's read buffer.
const PER_EXPORT_WORKER: u64 = 4 << 20;
/// libjpeg's working memory per encoder, beside the image (a few rows of coefficients).
const PER_ENCODER: u64 = 256 << 10;
/// A camera program (rpicam-vid) runs in the same control group: its memory counts against
/// `MemoryMax=` though not in camjobd's own. An allowance, not measured here: libcamera keeps
/// its frame buffers in CMA, outside the group's memory.
const CAMERA_PROGRAM: u64 = 64 << 20;
/// A plain pipe command (a shell and the program it runs: `cat`, a script): an allowance.
const PIPE_PROGRAM: u64 = 8 << 20;
/// The MQTT link at most: its read buffer (1 MiB: what rumqttc reads whole), the incoming
/// queue (64 messages plus 16 per camera, 64 KiB each at most) and the outbox's messages
/// (small, but a snapshot JPEG per camera when `snapshot_jpeg` is on).
const MQTT_READ: u64 = 1 << 20;
const MQTT_MESSAGE_IN: u64 = 64 << 10;
const MQTT_MESSAGE_OUT: u64 = 2 << 10;
/// The Moonraker link at most: one answer of Moonraker's (at most 256 KiB), parsed.
const MOONRAKER: u64 = 1 << 20;
/// Tasks of one camera program (rpicam-vid: libcamera's camera manager, pipeline and IPA
/// threads, the encoder, the output); a plain pipe command: a shell and its program.
const CAMERA_PROGRAM_TASKS: u64 = 16;
const PIPE_PROGRAM_TASKS: u64 = 4;
/// Share of a group's memory limit the estimate may take: the rest is the page cache of the
/// snapshots and room for what no estimate foresees.
const GROUP_SHARE_PERCENT: u64 = 90;

/// One line of the estimate: what it is, the key that sets it, its bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// What the memory is for, for people.
    pub what: String,
    /// The config key to lower to make it smaller.
    pub key: String,
    /// Bytes.
    pub bytes: u64,
}

/// What a config costs.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// Allocated (and touched) at start: pools, copies, images, the index, the base process.
    pub committed_bytes: u64,
    /// The most it can come to: committed plus what fills on demand up to its bound
    /// (connections, export workers).
    pub max_bytes: u64,
    /// Camera programs' memory that counts in the same control group (an allowance).
    pub programs_bytes: u64,
    /// Threads of camjobd itself, as it starts them (fixed for its life).
    pub threads: u64,
    /// Tasks in the control group: the threads plus the camera programs' (an allowance).
    pub tasks: u64,
    /// The lines of `max_bytes`, largest first.
    pub items: Vec<Item>,
}

/// Where limits come from and what they are; `None` where there is none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Limits {
    /// This machine's memory.
    pub physical_bytes: Option<u64>,
    /// The control group's memory limit.
    pub group_memory_bytes: Option<u64>,
    /// The control group's task limit.
    pub group_tasks: Option<u64>,
    /// The installed unit file's `MemoryMax=` (only `--check-config` reads it).
    pub unit_memory_bytes: Option<u64>,
    /// The installed unit file's `TasksMax=`.
    pub unit_tasks: Option<u64>,
}

impl Limits {
    /// The limits of this process: physical memory and its control group.
    pub fn here() -> Limits {
        let group = crate::sys::cgroup_limits();
        Limits {
            physical_bytes: crate::sys::physical_memory(),
            group_memory_bytes: group.memory,
            group_tasks: group.tasks,
            ..Limits::default()
        }
    }

    /// [`Limits::here`] plus what the installed `camjobd.service` sets (for `--check-config`,
    /// run from a shell but asking about the service).
    pub fn here_and_unit() -> Limits {
        let (memory, tasks) = unit_limits(crate::sys::physical_memory());
        Limits { unit_memory_bytes: memory, unit_tasks: tasks, ..Limits::here() }
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: Option<u64>| b.map_or("none".to_string(), |b| format!("{} MiB", b >> 20));
        let n = |t: Option<u64>| t.map_or("none".to_string(), |t| t.to_string());
        write!(
            f,
            "memory {} (half: {}), control group memory {} and tasks {}",
            mib(self.physical_bytes),
            mib(self.physical_bytes.map(|p| p / 2)),
            mib(self.group_memory_bytes),
            n(self.group_tasks)
        )?;
        if self.unit_memory_bytes.is_some() || self.unit_tasks.is_some() {
            write!(
                f,
                ", camjobd.service MemoryMax {} and TasksMax {}",
                mib(self.unit_memory_bytes),
                n(self.unit_tasks)
            )?;
        }
        Ok(())
    }
}

fn add(items: &mut Vec<Item>, what: String, key: String, bytes: u64) {
    if bytes > 0 {
        items.push(Item { what, key, bytes });
    }
}

/// A camera's H.264: its ring and JPEG copies (committed, into `items`); what its encoder takes
/// at work, and one RTSP client's buffers.
fn video(
    items: &mut Vec<Item>,
    i: usize,
    c: &crate::config::CameraConfig,
    v: &crate::config::VideoConfig,
) -> (u64, u64) {
    let at = |k: &str| format!("cameras[{i}].{k}");
    let ring = crate::h264::stage::ring_bytes(v) as u64;
    add(items, format!("camera {}'s H.264 ring", c.name), at("video.bitrate_kbps"), ring);
    if c.may_deliver_jpeg() {
        // The JPEGs handed to the encoder thread, which decodes them.
        let n = crate::h264::stage::JPEG_SLOTS as u64;
        add(
            items,
            format!("camera {}'s JPEG copies for H.264", c.name),
            at("max_frame_bytes"),
            n * c.max_frame_bytes as u64,
        );
    }
    let (w, h) = c.source.size();
    let image = crate::jpeg::Yuv::bytes_for(w as usize, h as usize) as u64;
    let au = crate::h264::stage::max_au_bytes(ring as usize);
    let encoder = u64::from(w) * u64::from(h) * crate::h264::stage::ENCODER_BYTES_PER_PIXEL;
    (image + au as u64 + encoder, crate::h264::stage::client_bytes(au) as u64)
}

/// The WebRTC thread's part for `config`, when it runs: its sessions, and one access unit per
/// camera with video (read once from the ring, shared by that camera's sessions).
fn webrtc(items: &mut Vec<Item>, config: &Config) -> u64 {
    let aus: Vec<usize> = config
        .cameras
        .iter()
        .filter_map(|c| c.video.as_ref())
        .map(|v| crate::h264::stage::max_au_bytes(crate::h264::stage::ring_bytes(v)))
        .collect();
    let Some(&largest) = aus.iter().max() else { return 0 };
    if !config.webrtc.enabled {
        return 0;
    }
    let n = config.webrtc.max_sessions as u64;
    let bytes = n * crate::webrtc::session_bytes(largest) + aus.iter().map(|&a| a as u64).sum::<u64>();
    add(items, format!("up to {n} WebRTC sessions"), "webrtc.max_sessions".into(), bytes);
    1
}

/// The `moonraker` thread when `moonraker` is configured, and a blocking thread of its runtime
/// for a host name in `moonraker.url` (an address needs no lookup); its memory: Moonraker's
/// answer (read up to 256 KiB) and its parsed form.
fn moonraker(items: &mut Vec<Item>, config: &Config) -> u64 {
    let Some(m) = &config.moonraker else { return 0 };
    add(items, "the Moonraker link's answers".into(), "moonraker".into(), MOONRAKER);
    let url = crate::config::moonraker::MoonrakerUrl::parse(&m.url);
    1 + u64::from(url.is_ok_and(|u| u.host.parse::<std::net::IpAddr>().is_err()))
}

impl Budget {
    /// The estimate for `config`.
    pub fn of(config: &Config) -> Budget {
        let mut items = Vec::new();
        let mut programs_bytes = 0;
        let mut threads = 0;
        let mut program_tasks = 0;
        // H.264: the encoders' working sets, and the largest client buffers (at SETUP).
        let (mut video_max, mut client_max) = (0, 0);
        for (i, c) in config.cameras.iter().enumerate() {
            let per = c.max_frame_bytes as u64;
            let at = |k: &str| format!("cameras[{i}].{k}");
            add(
                &mut items,
                format!("camera {}'s frame pool", c.name),
                at("frame_buffers"),
                c.frame_buffers as u64 * per,
            );
            add(
                &mut items,
                format!("camera {}'s frame copies for HTTP readers", c.name),
                "http.frame_copies".into(),
                config.http.frame_copies() as u64 * per,
            );
            let history = crate::status::history::RING_BYTES as u64;
            add(&mut items, format!("camera {}'s history (a day of minutes)", c.name), String::new(), history);
            threads += 1;
            if c.raw_quality().is_some() {
                let (w, h) = c.source.size();
                let image = crate::jpeg::Yuv::bytes_for(w as usize, h as usize) as u64;
                let n = c.encoder_threads as u64;
                add(
                    &mut items,
                    format!("camera {}'s encoders", c.name),
                    at("encoder_threads"),
                    n * (image + PER_ENCODER),
                );
                threads += n;
            }
            if let Some(v) = &c.video {
                let (most, client) = video(&mut items, i, c, v);
                video_max += most;
                client_max = client_max.max(client);
                threads += 1;
            }
            if c.store.enabled {
                let index = c.store.max_files as u64 * std::mem::size_of::<crate::index::StoredSnapshot>() as u64;
                add(&mut items, format!("camera {}'s snapshot index", c.name), at("store.max_files"), index);
            }
            match &c.source {
                SourceConfig::Pipe(_) | SourceConfig::Libcamera(_) => {
                    let (w, h) = c.source.size();
                    let staged = if c.libcamera_yuv420() {
                        crate::capture::i420::I420Frames::frame_bytes(w as usize, h as usize) as u64
                    } else {
                        per
                    };
                    add(&mut items, format!("camera {}'s pipe buffer", c.name), at("max_frame_bytes"), staged);
                    let camera = matches!(c.source, SourceConfig::Libcamera(_));
                    programs_bytes += if camera { CAMERA_PROGRAM } else { PIPE_PROGRAM };
                    program_tasks += if camera { CAMERA_PROGRAM_TASKS } else { PIPE_PROGRAM_TASKS };
                }
                SourceConfig::V4l2(v) => {
                    // The driver's buffers, mapped: at most a raw frame each.
                    let raw = u64::from(v.width) * u64::from(v.height) * 2;
                    add(
                        &mut items,
                        format!("camera {}'s V4L2 buffers", c.name),
                        at("source.buffers"),
                        u64::from(v.buffers) * raw,
                    );
                }
                SourceConfig::Synthetic(_) => {}
            }
        }
        let http = &config.http;
        let conns = http.max_connections as u64 * PER_CONNECTION.max(http.max_header_bytes as u64 + (8 << 10));
        let exports = config.exports.max_concurrent as u64 * PER_EXPORT_WORKER;
        add(&mut items, "the process itself".into(), String::new(), BASE);
        // Fixed threads: main, signals, log, supervisor, watchdog, store; the `http` thread and
        // its workers; the export workers; the LED and MQTT when configured.
        threads += 6 + 1 + if http.workers > 1 { http.workers as u64 } else { 0 };
        threads += config.exports.max_concurrent as u64;
        threads += u64::from(config.led != crate::config::LedConfig::None);
        if config.mqtt.is_some() {
            // The `mqtt` thread, and at most one blocking thread of its runtime (name lookups).
            threads += 2;
        }
        let committed_bytes: u64 = items.iter().map(|i| i.bytes).sum();
        add(&mut items, format!("up to {} connections", http.max_connections), "http.max_connections".into(), conns);
        add(&mut items, "export workers".into(), "exports.max_concurrent".into(), exports);
        add(&mut items, "the H.264 encoders at work".into(), "cameras[].video".into(), video_max);
        if client_max > 0 && config.rtsp.bind_addr().is_some() {
            // The `rtsp` thread, and its clients' buffers.
            threads += 1;
            let clients = config.rtsp.max_clients as u64;
            add(&mut items, format!("up to {clients} RTSP clients"), "rtsp.max_clients".into(), clients * client_max);
        }
        // The `webrtc` and `moonraker` threads.
        threads += webrtc(&mut items, config) + moonraker(&mut items, config);
        if let Some(m) = &config.mqtt {
            let cams = config.cameras.len() as u64;
            let jpegs = if m.snapshot_jpeg { config.cameras.iter().map(|c| c.max_frame_bytes as u64).sum() } else { 0 };
            let bytes = MQTT_READ + (64 + 16 * cams) * MQTT_MESSAGE_IN + m.outbox as u64 * MQTT_MESSAGE_OUT + jpegs;
            add(&mut items, "the MQTT link's queues".into(), "mqtt.outbox".into(), bytes);
        }
        items.sort_by_key(|i| std::cmp::Reverse(i.bytes));
        let max_bytes = items.iter().map(|i| i.bytes).sum();
        Budget { committed_bytes, max_bytes, programs_bytes, threads, tasks: threads + program_tasks, items }
    }

    /// Refuses what does not fit `limits`: memory beyond half of this machine's, or beyond
    /// 90 % of a control group's or the unit's limit (with the camera programs, which run in
    /// it), or more tasks than the group or the unit allows. The error names the key of the
    /// largest item and lists the next.
    pub fn check(&self, limits: &Limits) -> Result<(), ConfigError> {
        let mib = |b: u64| b >> 20;
        let group = [limits.group_memory_bytes, limits.unit_memory_bytes].into_iter().flatten().min();
        let over_physical = limits.physical_bytes.filter(|&p| self.max_bytes > p / 2);
        let over_group = group.filter(|&g| self.max_bytes + self.programs_bytes > g / 100 * GROUP_SHARE_PERCENT);
        if over_physical.is_some() || over_group.is_some() {
            let against = match (over_physical, over_group) {
                (Some(p), _) => format!("more than half of this machine's {} MiB", mib(p)),
                (None, Some(g)) => {
                    let programs = match mib(self.programs_bytes) {
                        0 => String::new(),
                        n => format!("with {n} MiB for camera programs, "),
                    };
                    format!(
                        "{programs}more than {GROUP_SHARE_PERCENT} % of the {} MiB the service may use (MemoryMax=)",
                        mib(g)
                    )
                }
                (None, None) => unreachable!("one of them is over"),
            };
            let largest: Vec<String> = self
                .items
                .iter()
                .filter(|i| !i.key.is_empty())
                .take(3)
                .map(|i| format!("{} {} MiB ({})", i.what, mib(i.bytes), i.key))
                .collect();
            let key = self.items.iter().find(|i| !i.key.is_empty()).map_or("cameras", |i| i.key.as_str());
            return Err(ConfigError {
                path: key.to_string(),
                message: format!(
                    "this config needs up to {} MiB ({} MiB at start), {against}; the largest: {}: lower those",
                    mib(self.max_bytes),
                    mib(self.committed_bytes),
                    largest.join(", ")
                ),
            });
        }
        let tasks = [limits.group_tasks, limits.unit_tasks].into_iter().flatten().min();
        if let Some(t) = tasks.filter(|&t| self.tasks > t) {
            return Err(ConfigError {
                path: "cameras[].encoder_threads".into(),
                message: format!(
                    "this config runs {} threads and about {} tasks with its camera programs, more than the {t} the service may have (TasksMax=): lower cameras[].encoder_threads, exports.max_concurrent or http.workers, or use fewer cameras",
                    self.threads, self.tasks
                ),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        write!(
            f,
            "{:.1} MiB at start, at most {:.1} MiB (camera programs beside it: {:.0} MiB); {} threads, about {} tasks",
            mib(self.committed_bytes),
            mib(self.max_bytes),
            mib(self.programs_bytes),
            self.threads,
            self.tasks
        )
    }
}

/// Frames the config lets be larger than `max_frame_bytes`, where the frame size can be
/// foreseen (an encoded raw camera at its size and quality): one warning per camera. A noisy
/// scene takes more bits per pixel than a quiet one; the figures are for a busy scene.
pub fn frame_size_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in config.cameras.iter().enumerate() {
        let Some(quality) = c.raw_quality() else { continue };
        let (w, h) = c.source.size();
        let bits_per_pixel = match quality {
            0..=50 => 2,
            51..=75 => 3,
            76..=85 => 4,
            86..=92 => 5,
            93..=97 => 7,
            _ => 9,
        };
        let expected = u64::from(w) * u64::from(h) * bits_per_pixel / 8;
        if expected > c.max_frame_bytes as u64 {
            out.push(format!(
                "cameras[{i}].max_frame_bytes: {w}x{h} at quality {quality} can take about {} KB a frame on a busy scene, more than max_frame_bytes {}: such frames are refused (and a camera that delivers only those fails with that reason); raise it to {expected} or lower the quality",
                expected.div_ceil(1000),
                c.max_frame_bytes
            ));
        }
    }
    out
}

/// `MemoryMax=` and `TasksMax=` of the installed `camjobd.service` (the last setting wins, drop-ins
/// after the unit, `/etc` before `/usr/lib`, as systemd reads them). Percentages are of
/// `physical` (memory) or of the kernel's thread limit, read as not set.
fn unit_limits(physical: Option<u64>) -> (Option<u64>, Option<u64>) {
    // Highest precedence first for the unit itself; a drop-in of a name in a higher directory
    // replaces the same name in a lower one, and all are applied in the order of their names.
    const DIRS: [&str; 6] = [
        "/etc/systemd/system.control",
        "/run/systemd/system.control",
        "/etc/systemd/system",
        "/run/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ];
    let mut text =
        DIRS.iter().find_map(|d| std::fs::read_to_string(format!("{d}/camjobd.service")).ok()).unwrap_or_default();
    let mut dropins: std::collections::BTreeMap<std::ffi::OsString, std::path::PathBuf> = Default::default();
    for dir in DIRS.iter().rev() {
        let Ok(entries) = std::fs::read_dir(format!("{dir}/camjobd.service.d")) else { continue };
        for p in entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")) {
            if let Some(name) = p.file_name() {
                dropins.insert(name.to_os_string(), p.clone());
            }
        }
    }
    for p in dropins.values() {
        text.push('\n');
        text.push_str(&std::fs::read_to_string(p).unwrap_or_default());
    }
    parse_unit_limits(&text, physical)
}

/// The last `MemoryMax=` and `TasksMax=` in a unit's text (and its drop-ins, appended).
fn parse_unit_limits(text: &str, physical: Option<u64>) -> (Option<u64>, Option<u64>) {
    let (mut memory, mut tasks) = (None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key.trim() {
            "MemoryMax" => memory = parse_size(value.trim(), physical),
            "TasksMax" => tasks = value.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    (memory, tasks)
}

/// systemd's sizes: `256M`, `1.5G`, `1048576`, `50%` (of `physical`); `infinity`, empty or
/// unreadable: none.
fn parse_size(v: &str, physical: Option<u64>) -> Option<u64> {
    if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p.trim().parse().ok()?;
        return Some((physical? as f64 * p / 100.0) as u64);
    }
    let (number, unit) = match v.chars().last()? {
        'K' => (&v[..v.len() - 1], 1u64 << 10),
        'M' => (&v[..v.len() - 1], 1 << 20),
        'G' => (&v[..v.len() - 1], 1 << 30),
        'T' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    let n: f64 = number.trim().parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    // `as` saturates: an absurd size reads as no limit that matters, never a wrapped small one.
    Some((n * unit as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Config {
        Config::from_json(json).unwrap()
    }

    /// The shipped unit's limits, and a board's memory.
    fn on_board(physical_mib: u64) -> Limits {
        Limits {
            physical_bytes: Some(physical_mib << 20),
            unit_memory_bytes: Some(256 << 20),
            unit_tasks: Some(64),
            ..Limits::default()
        }
    }

    #[test]
    fn the_board_profiles_fit_their_boards_under_the_shipped_unit() {
        let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/board/camjobd.service")).unwrap();
        assert_eq!(parse_unit_limits(&unit, None), (Some(256 << 20), Some(64)), "the unit's limits moved");
        // The smallest memory each board is sold with.
        for (name, mib) in [("rpi-zero2w", 512), ("rpi3", 1024), ("rpi4", 1024), ("rpi5", 1024), ("host", 1024)] {
            let c = crate::config::board(name).unwrap();
            let b = Budget::of(&c);
            assert!(b.check(&on_board(mib)).is_ok(), "{name}: {b} on {mib} MiB: {:?}", b.check(&on_board(mib)));
        }
        assert!(Budget::of(&Config::default()).check(&on_board(512)).is_ok());
    }

    #[test]
    fn the_issues_configs_are_refused_naming_the_keys() {
        // 8 cameras with a million-file index each: about 560 MB of index alone.
        let cams: Vec<String> =
            (0..8).map(|i| format!(r#"{{"name":"c{i}","store":{{"max_files":1000000}}}}"#)).collect();
        let big = cfg(&format!(r#"{{"cameras":[{}]}}"#, cams.join(",")));
        let b = Budget::of(&big);
        assert!(b.committed_bytes > 500 << 20, "{b}");
        let e = b.check(&on_board(8192)).unwrap_err();
        assert_eq!(e.path, "cameras[0].store.max_files", "{e}");
        assert!(e.message.contains("MemoryMax="), "{e}");
        assert!(b.check(&Limits { physical_bytes: Some(1 << 40), ..Limits::default() }).is_ok());
        // 8 cameras × 8 encoder threads under TasksMax=64.
        let cams: Vec<String> = (0..8)
            .map(|i| format!(r#"{{"name":"c{i}","encoder_threads":8,"frame_buffers":10,"max_frame_bytes":262144}}"#))
            .collect();
        let many = cfg(&format!(r#"{{"cameras":[{}]}}"#, cams.join(",")));
        let b = Budget::of(&many);
        assert_eq!(b.threads, 8 * 9 + 7 + 2 + 1, "{b}");
        let e = b.check(&on_board(8192)).unwrap_err();
        assert!(e.message.contains("TasksMax=") && e.message.contains(&format!("runs {} threads", b.threads)), "{e}");
    }

    #[test]
    fn moonraker_costs_its_thread_a_lookup_thread_and_an_answer() {
        let off = Budget::of(&Config::default());
        let on = Budget::of(&cfg(r#"{"moonraker":{}}"#));
        assert_eq!(on.threads, off.threads + 1, "an address needs no lookup");
        assert_eq!(on.max_bytes, off.max_bytes + MOONRAKER);
        let named = Budget::of(&cfg(r#"{"moonraker":{"url":"http://localhost:7125"}}"#));
        assert_eq!(named.threads, off.threads + 2);
    }

    #[test]
    fn unit_sizes_and_percentages() {
        assert_eq!(parse_size("256M", None), Some(256 << 20));
        assert_eq!(parse_size("1G", None), Some(1 << 30));
        assert_eq!(parse_size("4096", None), Some(4096));
        assert_eq!(parse_size("50%", Some(1000)), Some(500));
        assert_eq!(parse_size("infinity", None), None);
        assert_eq!(parse_size("", None), None);
        assert_eq!(parse_size("1.5G", None), Some(3 << 29));
        assert_eq!(parse_size("99999999999T", None), Some(u64::MAX), "saturates, never wraps");
        assert_eq!(parse_unit_limits("MemoryMax = 512M\nTasksMax = 32\n", None), (Some(512 << 20), Some(32)));
        let text = "[Service]\nMemoryMax=256M\nTasksMax=64\n\n[Service]\nMemoryMax=1G\nTasksMax=infinity\n";
        assert_eq!(parse_unit_limits(text, None), (Some(1 << 30), None));
    }

    #[test]
    fn frame_sizes_that_cannot_fit_are_foreseen() {
        let c = cfg(
            r#"{"cameras":[{"source":{"kind":"synthetic","width":1920,"height":1080,"quality":100},"max_frame_bytes":65536}]}"#,
        );
        let w = frame_size_warnings(&c);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("cameras[0].max_frame_bytes: 1920x1080 at quality 100"), "{}", w[0]);
        assert!(frame_size_warnings(&Config::default()).is_empty(), "the default camera fits");
    }
}
