//! The hardware H.264 encoder of the Raspberry Pi 0–4: a V4L2 memory-to-memory stateful
//! encoder (the kernel's "Memory-to-Memory Stateful Video Encoder Interface";
//! `bcm2835-codec`, normally /dev/video11, multi-planar), or any other such device.
//!
//! - [`find`] picks the device by what it can do, not by its number: an M2M device whose
//!   CAPTURE side offers H.264 and whose OUTPUT side takes YUV420 or NV12.
//! - [`M2m`] is the [`Encoder`](super::Encoder): formats and controls set once, MMAP buffers
//!   on both queues, then per frame one OUTPUT buffer in and one H.264 buffer out, waited for
//!   at most [`DEADLINE`] (this runs on the `h264-<camera>` thread, never on capture's).
//! - The kernel is behind [`Device`]: the real one (`sys`, with the `v4l2` feature, the only
//!   `unsafe` here) and fakes in the tests.

mod encoder;
mod layout;
#[cfg(feature = "v4l2")]
mod sys;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use encoder::M2m;

use super::{EncodeError, Encoder, Settings};
pub use layout::{copy_420, Layout, Raw};

/// What one frame may take, from queueing the picture to its H.264 coming back.
pub const DEADLINE: Duration = Duration::from_secs(1);

/// `V4L2_PIX_FMT_H264`: H.264 with start codes (Annex B).
pub const H264: u32 = u32::from_le_bytes(*b"H264");
/// `V4L2_PIX_FMT_YUV420` (`YU12`, I420).
pub const YUV420: u32 = u32::from_le_bytes(*b"YU12");
/// `V4L2_PIX_FMT_NV12`.
pub const NV12: u32 = u32::from_le_bytes(*b"NV12");

/// Capability bits (`V4L2_CAP_*`) of QUERYCAP's device caps.
pub mod cap {
    /// A single-planar memory-to-memory device.
    pub const M2M: u32 = 0x0000_8000;
    /// A multi-planar memory-to-memory device (bcm2835-codec).
    pub const M2M_MPLANE: u32 = 0x0000_4000;
    /// Streaming I/O (QBUF/DQBUF).
    pub const STREAMING: u32 = 0x0400_0000;
}

/// Stateful codec controls (`V4L2_CID_MPEG_VIDEO_*`, from the kernel's v4l2-controls.h).
pub mod cid {
    const BASE: u32 = 0x0099_0900;
    /// Target bitrate, bit/s.
    pub const BITRATE: u32 = BASE + 207;
    /// SPS and PPS before every IDR, not only the first.
    pub const REPEAT_SEQ_HEADER: u32 = BASE + 226;
    /// The next frame is a keyframe (a button: the value is ignored).
    pub const FORCE_KEY_FRAME: u32 = BASE + 229;
    /// Frames from one intra picture to the next.
    pub const H264_I_PERIOD: u32 = BASE + 358;
    /// `V4L2_MPEG_VIDEO_H264_LEVEL_*`.
    pub const H264_LEVEL: u32 = BASE + 359;
    /// `V4L2_MPEG_VIDEO_H264_PROFILE_*`.
    pub const H264_PROFILE: u32 = BASE + 363;
}

/// `V4L2_BUF_FLAG_KEYFRAME`.
pub const FLAG_KEYFRAME: u32 = 0x08;
/// `V4L2_BUF_FLAG_ERROR`: the buffer's data is damaged.
pub const FLAG_ERROR: u32 = 0x40;

/// The two sides of an M2M device: pictures go OUTPUT (to the device), H.264 comes back on
/// CAPTURE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Raw pictures in.
    Output,
    /// H.264 out.
    Capture,
}

/// One queue of the device: its side, in the single- or multi-planar API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Which side.
    pub side: Side,
    /// The multi-planar API (`*_MPLANE` buffer types).
    pub mplane: bool,
}

impl Queue {
    /// `V4L2_BUF_TYPE_*`.
    pub const fn buf_type(self) -> u32 {
        match (self.side, self.mplane) {
            (Side::Capture, false) => 1,
            (Side::Output, false) => 2,
            (Side::Capture, true) => 9,
            (Side::Output, true) => 10,
        }
    }
}

/// What QUERYCAP says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// The driver (`bcm2835-codec`).
    pub driver: String,
    /// The device's name (`bcm2835-codec-encode`).
    pub card: String,
    /// The device caps (`V4L2_CAP_*`, [`cap`]).
    pub device_caps: u32,
}

/// A queue's format, the part camjobd sets and reads back (one plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Pixel format (fourcc).
    pub fourcc: u32,
    /// Pixels.
    pub width: u32,
    /// Pixels (rows in the buffer, for a raw format).
    pub height: u32,
    /// Bytes per row of the first plane (0 when asking: the driver chooses).
    pub bytesperline: u32,
    /// Bytes of a buffer (asked for on CAPTURE; the driver's on OUTPUT).
    pub sizeimage: u32,
    /// Planes the format has in the multi-planar API (1 in the single-planar one).
    pub planes: u8,
}

/// A buffer taken back from the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dequeued {
    /// Which buffer.
    pub index: usize,
    /// Where its data starts (a plane's `data_offset`).
    pub offset: usize,
    /// Where its data ends.
    pub bytesused: usize,
    /// `V4L2_BUF_FLAG_*`.
    pub flags: u32,
    /// The timestamp (µs): a CAPTURE buffer carries the one of the OUTPUT buffer it encodes.
    pub stamp_us: u64,
}

/// What camjobd asks of a V4L2 M2M device: the real one (`sys`) or a fake in the tests. Each
/// method is one ioctl (or mmap) and returns the kernel's error as is; what to make of it is
/// decided above.
pub trait Device {
    /// QUERYCAP.
    fn caps(&mut self) -> io::Result<Caps>;
    /// ENUM_FMT: the pixel formats a queue offers.
    fn formats(&mut self, q: Queue) -> io::Result<Vec<u32>>;
    /// S_FMT: asks for `want`, returns what the driver set.
    fn set_format(&mut self, q: Queue, want: &Format) -> io::Result<Format>;
    /// S_SELECTION (crop): the visible picture, when the driver padded the buffer's size.
    fn set_crop(&mut self, q: Queue, width: u32, height: u32) -> io::Result<()>;
    /// S_PARM: the frame rate.
    fn set_fps(&mut self, q: Queue, fps: u32) -> io::Result<()>;
    /// S_CTRL.
    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()>;
    /// REQBUFS (MMAP), then QUERYBUF and mmap each buffer: the lengths mapped. `count` 0
    /// unmaps and frees them.
    fn buffers(&mut self, q: Queue, count: u32) -> io::Result<Vec<usize>>;
    /// The mapped memory of a buffer (empty when there is no such buffer).
    fn memory(&mut self, q: Queue, index: usize) -> &mut [u8];
    /// QBUF: the first `bytesused` bytes (OUTPUT; 0 for CAPTURE), stamped `stamp_us`.
    fn queue(&mut self, q: Queue, index: usize, bytesused: usize, stamp_us: u64) -> io::Result<()>;
    /// DQBUF without waiting: `None` when none is ready.
    fn dequeue(&mut self, q: Queue) -> io::Result<Option<Dequeued>>;
    /// Waits until a CAPTURE buffer is ready, at most `timeout` (poll).
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
    /// STREAMON (`true`) or STREAMOFF.
    fn stream(&mut self, q: Queue, on: bool) -> io::Result<()>;
}

/// An encoder device found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its node.
    pub path: PathBuf,
    /// QUERYCAP's card (`bcm2835-codec-encode`).
    pub card: String,
    /// QUERYCAP's driver.
    pub driver: String,
    /// Multi-planar API.
    pub mplane: bool,
    /// The raw format it is fed (YUV420 where offered, else NV12).
    pub raw: Raw,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) at {}", self.card, self.driver, self.path.display())
    }
}

/// Why there is no hardware encoder to use, each with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// This camjobd was built without the `v4l2` feature.
    NotBuilt,
    /// No /dev/video* at all.
    NoDevices,
    /// `video.device` names a node that does not exist.
    Missing(PathBuf),
    /// Permission denied opening it.
    Denied(PathBuf),
    /// Another error opening or asking it.
    Io(PathBuf, String),
    /// Not a streaming memory-to-memory device (a camera, for instance).
    NotM2m {
        /// The node.
        path: PathBuf,
        /// QUERYCAP's card.
        card: String,
    },
    /// An M2M device without H.264 on its CAPTURE side (a decoder, a scaler, an ISP).
    NoH264 {
        /// The node.
        path: PathBuf,
        /// QUERYCAP's card.
        card: String,
    },
    /// An H.264 encoder that takes neither YUV420 nor NV12.
    NoRawInput {
        /// The node.
        path: PathBuf,
        /// QUERYCAP's card.
        card: String,
        /// The formats it takes, as text.
        offered: String,
    },
    /// Every /dev/video* was looked at; none is an encoder camjobd can use (each one's reason).
    NoneFits(Vec<Why>),
    /// The encoder refused what camjobd needs (`what`: the setting and what it did instead).
    Refused {
        /// QUERYCAP's card.
        card: String,
        /// The setting, and what the driver did instead or said.
        what: String,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PI: &str = "on a Raspberry Pi 0–4 the encoder is bcm2835-codec, normally /dev/video11: `v4l2-ctl --list-devices` lists it; if it is missing, load it (`sudo modprobe bcm2835-codec`) and check that config.txt does not turn the camera/codec firmware off; a Pi 5 has no H.264 encoder (use encoder \"software\")";
        match self {
            Why::NotBuilt => write!(f, "this camjobd was built without V4L2 (the `v4l2` cargo feature)"),
            Why::NoDevices => write!(f, "there is no /dev/video* device; {PI}"),
            Why::Missing(p) => write!(
                f,
                "{} does not exist; {PI}; or leave video.device null to find the encoder by what it can do",
                p.display()
            ),
            Why::Denied(p) => write!(
                f,
                "cannot open {}: permission denied; add the service user to the video group (`sudo usermod -aG video camjobd`; the package does) and restart camjobd",
                p.display()
            ),
            Why::Io(p, e) => write!(f, "cannot use {}: {e}", p.display()),
            Why::NotM2m { path, card } => {
                write!(f, "{} ({card}) is not a memory-to-memory codec (a camera or another device)", path.display())
            }
            Why::NoH264 { path, card } => {
                write!(f, "{} ({card}) is a memory-to-memory device that does not make H.264", path.display())
            }
            Why::NoRawInput { path, card, offered } => write!(
                f,
                "{} ({card}) makes H.264 but takes neither YUV420 nor NV12 (it takes {offered})",
                path.display()
            ),
            Why::NoneFits(all) => {
                write!(f, "no V4L2 H.264 encoder among the video devices ({PI})")?;
                // Cameras and ISPs only counted: a Pi has a dozen nodes.
                let others = all.iter().filter(|w| matches!(w, Why::NotM2m { .. })).count();
                for w in all.iter().filter(|w| !matches!(w, Why::NotM2m { .. })) {
                    write!(f, "; {w}")?;
                }
                match others {
                    0 => Ok(()),
                    1 => write!(f, "; 1 other is not a memory-to-memory codec"),
                    n => write!(f, "; {n} others are not memory-to-memory codecs"),
                }
            }
            Why::Refused { card, what } => write!(f, "the encoder {card} refused {what}"),
        }
    }
}

/// A fourcc as text (`H264`), for messages.
pub fn fourcc_name(fourcc: u32) -> String {
    fourcc.to_le_bytes().iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect()
}

/// Whether `dev` (at `path`) is an H.264 encoder camjobd can feed, and how.
pub fn check<D: Device>(dev: &mut D, path: &Path) -> Result<Found, Why> {
    let io = |e: io::Error| Why::Io(path.to_path_buf(), e.to_string());
    let caps = dev.caps().map_err(io)?;
    let c = caps.device_caps;
    let mplane = c & cap::M2M_MPLANE != 0;
    if c & cap::STREAMING == 0 || c & (cap::M2M | cap::M2M_MPLANE) == 0 {
        return Err(Why::NotM2m { path: path.to_path_buf(), card: caps.card });
    }
    let capture = dev.formats(Queue { side: Side::Capture, mplane }).map_err(io)?;
    if !capture.contains(&H264) {
        return Err(Why::NoH264 { path: path.to_path_buf(), card: caps.card });
    }
    let output = dev.formats(Queue { side: Side::Output, mplane }).map_err(io)?;
    let raw = [Raw::I420, Raw::Nv12].into_iter().find(|r| output.contains(&r.fourcc()));
    let Some(raw) = raw else {
        let offered = output.iter().map(|&f| fourcc_name(f)).collect::<Vec<_>>().join(", ");
        return Err(Why::NoRawInput { path: path.to_path_buf(), card: caps.card, offered });
    };
    Ok(Found { path: path.to_path_buf(), card: caps.card, driver: caps.driver, mplane, raw })
}

/// The encoder to use: `device` (`video.device`) when set, checked; else the first
/// /dev/video* (in number order) that is one.
pub fn find(device: Option<&Path>) -> Result<Found, Why> {
    #[cfg(feature = "v4l2")]
    {
        if let Some(p) = device {
            return sys::Sys::open(p).and_then(|mut d| check(&mut d, p));
        }
        let nodes = video_nodes(Path::new("/dev"));
        if nodes.is_empty() {
            return Err(Why::NoDevices);
        }
        let mut why = Vec::new();
        for p in nodes {
            match sys::Sys::open(&p).and_then(|mut d| check(&mut d, &p)) {
                Ok(found) => return Ok(found),
                Err(w) => why.push(w),
            }
        }
        Err(Why::NoneFits(why))
    }
    #[cfg(not(feature = "v4l2"))]
    {
        let _ = device;
        Err(Why::NotBuilt)
    }
}

/// The hardware encoder on `path` (checked again: the node may have changed since [`find`]),
/// set up for pictures of `size`: what the encoder thread's `make` calls.
pub fn open(path: &Path, settings: &Settings, size: (usize, usize)) -> Result<Box<dyn Encoder>, EncodeError> {
    #[cfg(feature = "v4l2")]
    {
        let start = |w: Why| EncodeError::Start(w.to_string());
        let mut dev = sys::Sys::open(path).map_err(start)?;
        let found = check(&mut dev, path).map_err(start)?;
        Ok(Box::new(M2m::with_device(dev, found, settings, size)?))
    }
    #[cfg(not(feature = "v4l2"))]
    {
        let _ = (path, settings, size);
        Err(EncodeError::Start(Why::NotBuilt.to_string()))
    }
}

/// The `videoN` nodes under `dev`, in number order (video2 before video10).
pub fn video_nodes(dev: &Path) -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dev)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// The lowest H.264 level (`V4L2_MPEG_VIDEO_H264_LEVEL_*`) for the picture, frame rate and
/// bitrate (Table A-1: macroblocks per frame and per second, Baseline/Main bitrate).
pub fn level_for(width: u32, height: u32, fps: u32, kbps: u32) -> u32 {
    // (V4L2 value, max macroblocks/s, max macroblocks/frame, max kbit/s)
    const LEVELS: [(u32, u64, u64, u32); 12] = [
        (5, 11_880, 396, 2_000),          // 2.0
        (6, 19_800, 792, 4_000),          // 2.1
        (7, 20_250, 1_620, 4_000),        // 2.2
        (8, 40_500, 1_620, 10_000),       // 3.0
        (9, 108_000, 3_600, 14_000),      // 3.1
        (10, 216_000, 5_120, 20_000),     // 3.2
        (11, 245_760, 8_192, 20_000),     // 4.0
        (12, 245_760, 8_192, 50_000),     // 4.1
        (13, 522_240, 8_704, 50_000),     // 4.2
        (14, 589_824, 22_080, 135_000),   // 5.0
        (15, 983_040, 36_864, 240_000),   // 5.1
        (16, 2_073_600, 36_864, 240_000), // 5.2
    ];
    let mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let per_s = mbs * u64::from(fps.max(1));
    LEVELS.iter().find(|l| mbs <= l.2 && per_s <= l.1 && kbps <= l.3).map_or(16, |l| l.0)
}

/// A level's name (`4.0`), for messages.
pub fn level_name(level: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "1.0", "1b", "1.1", "1.2", "1.3", "2.0", "2.1", "2.2", "3.0", "3.1", "3.2", "4.0", "4.1", "4.2", "5.0", "5.1",
        "5.2",
    ];
    NAMES.get(level as usize).copied().unwrap_or("?")
}
