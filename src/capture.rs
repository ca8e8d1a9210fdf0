//! Frame sources: the one trait every camera backend implements.
//!
//! A source is owned by exactly one capture thread. It is opened, read until it breaks or the
//! job ends, and dropped (which closes the device or kills the child). Reads are bounded in
//! time: `read` waits at most `wait` and answers [`Read::Timeout`] when no frame came, so the
//! capture thread can always look at its orders and the stop token between reads. A backend
//! that can block for longer breaks the watchdog contract.
//!
//! Sources deliver either JPEG (written into a frame buffer as is) or raw YUYV, deinterleaved
//! ([`yuyv`]) into the planar image of an idle encoder ([`crate::encode`]); which one is fixed
//! per open ([`Source::delivers`]). Raw pixels are only copied for frames somebody wants.
//!
//! Backends:
//! - [`synthetic`]: a moving test pattern rendered as YUYV, like a camera, with fault
//!   injection for tests.
//! - [`pipe`]: a child process whose stdout is an MJPEG byte stream, split by [`mjpeg`].
//! - [`libcamera`]: a Raspberry Pi CSI camera through `rpicam-vid`, run as a pipe source with
//!   its arguments built from the config and its failures explained: MJPEG, or raw I420
//!   ([`i420`]) when the camera also has H.264.
//! - `v4l2` (with the `v4l2` feature): a V4L2 device, mmap streaming; MJPG passed through,
//!   YUYV handed to the encoders.

pub mod i420;
pub mod libcamera;
pub mod mjpeg;
pub mod pipe;
pub mod synthetic;
#[cfg(feature = "v4l2")]
pub mod v4l2;
pub mod yuyv;

use std::fmt;
use std::time::Duration;

use crate::config::SourceConfig;
use crate::controls::{Control, Saved};
use crate::jpeg::Yuv;

/// What a source's frames are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivers {
    /// Finished JPEGs: read into a frame buffer ([`Dest::Jpeg`]).
    Jpeg,
    /// Raw pixels: read into an encoder's image ([`Dest::Yuv`]).
    Yuv,
}

/// Where [`Source::read`] puts a frame.
pub enum Dest<'a> {
    /// Nowhere: nobody wants this frame's pixels. It still counts as captured.
    Discard,
    /// JPEG bytes, written to the start of the buffer.
    Jpeg(&'a mut [u8]),
    /// Planar YUV 4:2:2 pixels, for an encoder: the source asks for the image once the frame
    /// is there (an encoder busy with the previous frame may be free by then).
    Yuv(&'a mut dyn YuvTarget),
}

/// Hands a source the image to deinterleave a raw frame into.
pub trait YuvTarget {
    /// The image, or `None` when there is nowhere to put the frame now (it is then only
    /// counted as captured). Call once the frame has arrived.
    fn image(&mut self) -> Option<&mut Yuv>;
}

/// What one call to [`Source::read`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A JPEG was captured and written to the start of the [`Dest::Jpeg`] buffer.
    Frame {
        /// Bytes of JPEG written to `dst`.
        len: usize,
        /// Width of the image in pixels.
        width: u32,
        /// Height of the image in pixels.
        height: u32,
    },
    /// Raw pixels were captured into the [`Dest::Yuv`] image (its size is theirs).
    Raw,
    /// A frame was captured but not written anywhere ([`Dest::Discard`], or a destination of
    /// the other kind). It still counts as captured: the camera is alive.
    Consumed,
    /// A frame arrived but was unusable (oversize, garbage, torn); the source resynchronised.
    /// Counted as dropped by the caller.
    Dropped(DropCause),
    /// Nothing arrived within `wait`.
    Timeout,
}

/// Why a frame was dropped by the source itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// The frame was larger than `max_frame_bytes` (or the destination buffer).
    Oversize,
    /// Bytes that were not a well-formed JPEG frame were skipped.
    Garbage,
}

impl DropCause {
    /// A short word for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropCause::Oversize => "oversize",
            DropCause::Garbage => "garbage",
        }
    }
}

/// A source failure. `fatal` means the source is unusable until it is reopened (the device
/// vanished, the child exited); a non-fatal error is counted and reading goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// True when reading again without a reopen cannot succeed.
    pub fatal: bool,
    /// A sentence for the job's `reason`: what failed and, where known, how to fix it.
    pub message: String,
}

impl SourceError {
    /// An error after which the source must be reopened.
    pub fn fatal(message: impl Into<String>) -> Self {
        SourceError { fatal: true, message: message.into() }
    }
    /// An error that is counted; the next read may succeed.
    pub fn transient(message: impl Into<String>) -> Self {
        SourceError { fatal: false, message: message.into() }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}

/// A camera, open and streaming.
pub trait Source: Send {
    /// What this source's frames are; fixed while it is open.
    fn delivers(&self) -> Delivers {
        Delivers::Jpeg
    }
    /// Waits at most `wait` for the next frame and puts it in `dst` (a JPEG longer than its
    /// buffer is [`Read::Dropped`] as oversize). [`Dest::Discard`] reads and discards, which
    /// lets a source skip work for frames nobody wants.
    fn read(&mut self, dst: Dest<'_>, wait: Duration) -> Result<Read, SourceError>;
    /// The camera's controls with their current values (none by default).
    fn controls(&mut self) -> Vec<Control> {
        Vec::new()
    }
    /// Sets controls, `(id, value)`, checked against [`Source::controls`]. The error is the
    /// driver's, in words.
    fn set_controls(&mut self, _changes: &[(u32, i64)]) -> Result<Applied, String> {
        Err("this camera has no controls".into())
    }
    /// After [`Applied::Restarted`]: why the restarted camera failed with the new values, once,
    /// if it did and the source went back to the previous ones.
    fn take_reverted(&mut self) -> Option<String> {
        None
    }
}

/// How a source applied new control values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Taken while streaming.
    Live,
    /// The camera was restarted to take them (rpicam-vid takes options only at start): a gap
    /// in the frames that is not a failure.
    Restarted,
}

/// Opens sources for one camera. Kept by the capture thread for the whole process, so it can
/// carry state across reopens (the synthetic source's fault counters live here).
pub trait Opener: Send {
    /// Opens the camera. Called at job start and on every recovery attempt; `job_id` lets an
    /// opener reset per-job state. `saved` are the control values the user chose: a source
    /// that takes them only at start (libcamera) starts with them; the capture thread sets
    /// them on the others once open.
    fn open(&mut self, job_id: u64, saved: &Saved) -> Result<Box<dyn Source>, SourceError>;
}

/// Builds the opener for a configured camera's source.
pub fn opener(camera: &crate::config::CameraConfig) -> Box<dyn Opener> {
    let max_frame_bytes = camera.max_frame_bytes;
    match &camera.source {
        SourceConfig::Synthetic(c) => Box::new(synthetic::SyntheticOpener::new(c.clone())),
        SourceConfig::Pipe(c) => Box::new(pipe::PipeOpener::new(c.clone(), max_frame_bytes)),
        SourceConfig::Libcamera(c) => {
            let output = if camera.libcamera_yuv420() { libcamera::Output::Yuv420 } else { libcamera::Output::Mjpeg };
            Box::new(libcamera::LibcameraOpener::new(c.clone(), max_frame_bytes, output))
        }
        #[cfg(feature = "v4l2")]
        SourceConfig::V4l2(c) => Box::new(v4l2::V4l2Opener::new(c.clone(), max_frame_bytes)),
        #[cfg(not(feature = "v4l2"))]
        SourceConfig::V4l2(_) => Box::new(Unavailable("this camjobd was built without V4L2 support (--features v4l2)")),
    }
}

/// An opener for a source kind this build does not have (config validation rejects it; this
/// keeps an unvalidated config from panicking).
#[cfg_attr(feature = "v4l2", allow(dead_code))]
struct Unavailable(&'static str);

impl Opener for Unavailable {
    fn open(&mut self, _job_id: u64, _saved: &Saved) -> Result<Box<dyn Source>, SourceError> {
        Err(SourceError::fatal(self.0))
    }
}
