//! The V4L2 source (with the `v4l2` feature): a USB/UVC camera, or the kernel's vivid driver in
//! the VM test, through the `v4l` crate with mmap streaming.
//!
//! - Format: `auto` takes MJPG when offered (frames are JPEGs already: trimmed to `bytesused`,
//!   checked for SOI/EOI and copied into the pool buffer untouched), else YUYV, which is
//!   deinterleaved ([`super::yuyv`]) into an idle encoder's image only for frames somebody
//!   wants (kept or watched live). Size and
//!   frame rate are set on the device and read back; what the driver granted is reported.
//! - Every dequeue waits at most the capture loop's `wait` (poll with a timeout), so a dead
//!   camera is a timeout the watchdog sees, never a hang. ENODEV/EIO (unplugged) are fatal
//!   and lead to a reopen with backoff; a frame with the error flag, no bytes, or no JPEG
//!   markers is dropped and counted.
//! - v4l's stream panics in its `Drop` when STREAMOFF fails with anything but ENODEV; that
//!   panic is caught here, so a camera that dies badly costs a warning, not the process.

use std::io;
use std::path::Path;
use std::time::Duration;

use v4l::buffer::{Flags, Type};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use crate::capture::{Applied, Delivers, Dest, DropCause, Opener, Read, Source, SourceError};
use crate::config::{V4l2Config, V4l2Format};
use crate::controls::{Control, Kind, MenuItem};

const MJPG: FourCC = FourCC { repr: *b"MJPG" };
const YUYV: FourCC = FourCC { repr: *b"YUYV" };

/// Opens V4L2 cameras.
pub struct V4l2Opener {
    config: V4l2Config,
    /// Frames larger than this are refused, wanted or not (so that a camera whose every frame
    /// is too large is seen as such, not as one whose unwanted frames are fine).
    max_frame_bytes: usize,
    /// The last "granted" line reported, so a reopen that gets the same is not reported again.
    reported: String,
}

impl V4l2Opener {
    /// An opener for this config.
    pub fn new(config: V4l2Config, max_frame_bytes: usize) -> Self {
        V4l2Opener { config, max_frame_bytes, reported: String::new() }
    }
}

/// What the driver granted.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Granted {
    width: u32,
    height: u32,
    fourcc: FourCC,
    fps: f64,
}

impl Opener for V4l2Opener {
    fn open(&mut self, _job_id: u64, _saved: &crate::controls::Saved) -> Result<Box<dyn Source>, SourceError> {
        let c = &self.config;
        let dev = Device::with_path(&c.device).map_err(|e| open_error(&c.device, &e))?;
        let caps = dev.query_caps().map_err(|e| open_error(&c.device, &e))?;
        let flags = caps.capabilities;
        if !flags.contains(v4l::capability::Flags::VIDEO_CAPTURE) || !flags.contains(v4l::capability::Flags::STREAMING)
        {
            return Err(SourceError::fatal(format!(
                "{} ({}) is not a streaming capture device; on a Pi the camera module is not V4L2-capturable directly: use the pipe source with rpicam-vid",
                c.device.display(),
                caps.card
            )));
        }
        let offered: Vec<FourCC> = dev
            .enum_formats()
            .map_err(|e| SourceError::fatal(format!("cannot list the formats of {}: {e}", c.device.display())))?
            .into_iter()
            .map(|f| f.fourcc)
            .collect();
        let fourcc = match c.format {
            V4l2Format::Auto if offered.contains(&MJPG) => MJPG,
            V4l2Format::Auto | V4l2Format::Yuyv if offered.contains(&YUYV) => YUYV,
            V4l2Format::Mjpg if offered.contains(&MJPG) => MJPG,
            _ => {
                let list: Vec<String> = offered.iter().map(|f| f.to_string()).collect();
                return Err(SourceError::fatal(format!(
                    "{} offers neither MJPG nor YUYV as asked (format {:?}); it offers {}",
                    c.device.display(),
                    c.format,
                    list.join(", ")
                )));
            }
        };
        let mut fmt = dev.format().map_err(|e| SourceError::fatal(format!("cannot read the format: {e}")))?;
        fmt.width = c.width;
        fmt.height = c.height;
        fmt.fourcc = fourcc;
        let fmt = dev.set_format(&fmt).map_err(|e| {
            SourceError::fatal(format!("cannot set {}x{} {fourcc} on {}: {e}", c.width, c.height, c.device.display()))
        })?;
        if fmt.fourcc != fourcc {
            return Err(SourceError::fatal(format!(
                "{} would not switch to {fourcc} (it kept {})",
                c.device.display(),
                fmt.fourcc
            )));
        }
        if fourcc == YUYV && fmt.width % 2 != 0 {
            return Err(SourceError::fatal(format!(
                "{} granted an odd width {} for YUYV, which pairs pixels; ask for an even width",
                c.device.display(),
                fmt.width
            )));
        }
        // Some drivers refuse frame-rate changes; the granted rate is reported either way.
        let params = dev.set_params(&v4l::video::capture::Parameters::with_fps(c.fps)).or_else(|_| dev.params());
        let fps = params
            .map(|p| {
                if p.interval.numerator == 0 {
                    0.0
                } else {
                    f64::from(p.interval.denominator) / f64::from(p.interval.numerator)
                }
            })
            .unwrap_or(0.0);
        let granted = Granted { width: fmt.width, height: fmt.height, fourcc: fmt.fourcc, fps };
        let line = format!(
            "{}: {} granted {}x{} {} at {:.1} fps (asked {}x{} {:?} at {} fps)",
            caps.card.trim(),
            c.device.display(),
            granted.width,
            granted.height,
            granted.fourcc,
            granted.fps,
            c.width,
            c.height,
            c.format,
            c.fps
        );
        if line != self.reported {
            log::info!("{line}");
            self.reported = line;
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, c.buffers)
            .map_err(|e| SourceError::fatal(format!("cannot map {} capture buffers: {e}", c.buffers)))?;
        stream.set_timeout(Duration::from_millis(100));
        Ok(Box::new(V4l2 {
            max_frame_bytes: self.max_frame_bytes,
            handle: stream.handle(),
            stream: Some(stream),
            dev,
            granted,
            timeout_ms: 100,
            queue: Queue::NotStarted,
        }))
    }
}

fn open_error(device: &Path, e: &io::Error) -> SourceError {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            "; is the camera plugged in? `ls /dev/video*` lists the devices (a USB camera often has two: use the first)"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "; add the service user to the video group (the package adds the camjobd user to it)"
        }
        Some(libc::EBUSY) => "; another program is using the camera (`fuser /dev/video0` names it)",
        _ => "",
    };
    SourceError::fatal(format!("cannot open {}: {e}{hint}", device.display()))
}

/// Who owns the buffer v4l's stream will queue back at its next `next()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    /// Nothing queued or streaming yet: the first `next()` queues every buffer and starts.
    NotStarted,
    /// We hold the last dequeued buffer; `next()` gives it back, then dequeues a ready one.
    Ours,
    /// A dequeue timed out inside `next()` after the buffer was given back: the driver has it,
    /// and `next()` would queue it twice (EINVAL). The next ready buffer is dequeued on its
    /// own (its frame is skipped) to get back to `Ours`.
    Driver,
}

struct V4l2 {
    max_frame_bytes: usize,
    /// `Option` so that `Drop` can take it and catch v4l's panic on a failed STREAMOFF.
    stream: Option<Stream<'static>>,
    /// The device's file handle, for polling before a dequeue.
    handle: std::sync::Arc<v4l::device::Handle>,
    dev: Device,
    granted: Granted,
    /// The dequeue timeout currently set on the stream.
    timeout_ms: u64,
    queue: Queue,
}

fn stream_error(e: io::Error) -> SourceError {
    if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO)) {
        return SourceError::fatal(format!("the camera went away ({e}); check the cable, reopening"));
    }
    // Anything else leaves the buffer queue in an unknown state: reopen to resynchronise.
    SourceError::fatal(format!("V4L2 streaming failed ({e}); reopening the camera"))
}

impl Source for V4l2 {
    fn delivers(&self) -> Delivers {
        if self.granted.fourcc == MJPG {
            Delivers::Jpeg
        } else {
            Delivers::Yuv
        }
    }

    fn read(&mut self, dst: Dest<'_>, wait: Duration) -> Result<Read, SourceError> {
        let stream = self.stream.as_mut().expect("present until drop");
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as u64;
        if ms != self.timeout_ms {
            stream.set_timeout(Duration::from_millis(ms));
            self.timeout_ms = ms;
        }
        if self.queue != Queue::NotStarted {
            // Wait for a filled buffer here, so that `next()` never times out half way.
            match self.handle.poll(libc::POLLIN, ms as i32) {
                Ok(0) => return Ok(Read::Timeout),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(Read::Timeout),
                Err(e) => return Err(stream_error(e)),
            }
            if self.queue == Queue::Driver {
                CaptureStream::dequeue(stream).map_err(stream_error)?;
                self.queue = Queue::Ours;
                return Ok(Read::Consumed);
            }
        }
        let first = self.queue == Queue::NotStarted;
        let (buf, meta) = match CaptureStream::next(stream) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.queue = Queue::Driver;
                return Ok(Read::Timeout);
            }
            Err(e) if first => return Err(SourceError::fatal(format!("cannot start streaming: {e}"))),
            Err(e) => return Err(stream_error(e)),
        };
        self.queue = Queue::Ours;
        let used = (meta.bytesused as usize).min(buf.len());
        if meta.flags.contains(Flags::ERROR) || used == 0 {
            return Ok(Read::Dropped(DropCause::Garbage));
        }
        let data = &buf[..used];
        let Granted { width, height, fourcc, .. } = self.granted;
        if fourcc == MJPG {
            let Some(jpeg) = trim_jpeg(data) else { return Ok(Read::Dropped(DropCause::Garbage)) };
            if jpeg.len() > self.max_frame_bytes {
                return Ok(Read::Dropped(DropCause::Oversize));
            }
            let Dest::Jpeg(dst) = dst else { return Ok(Read::Consumed) };
            if jpeg.len() > dst.len() {
                return Ok(Read::Dropped(DropCause::Oversize));
            }
            dst[..jpeg.len()].copy_from_slice(jpeg);
            return Ok(Read::Frame { len: jpeg.len(), width, height });
        }
        // YUYV: a short frame is torn.
        let need = width as usize * height as usize * 2;
        if data.len() < need {
            return Ok(Read::Dropped(DropCause::Garbage));
        }
        let Some(img) = (match dst {
            Dest::Yuv(target) => target.image(),
            _ => None,
        }) else {
            return Ok(Read::Consumed);
        };
        super::yuyv::deinterleave(data, width as usize, height as usize, img);
        Ok(Read::Raw)
    }

    fn controls(&mut self) -> Vec<Control> {
        self.query()
    }

    fn set_controls(&mut self, changes: &[(u32, i64)]) -> Result<Applied, String> {
        use v4l::control::{Control as Set, Value};
        // One at a time, in the order given (modes before the values they govern): a UVC
        // camera refuses a manual focus or exposure while its automatic mode is still on.
        for &(id, v) in changes {
            self.dev
                .set_control(Set { id, value: Value::Integer(v) })
                .map_err(|e| format!("control {id:#010x}: {}", control_error(&e)))?;
        }
        Ok(Applied::Live)
    }
}

/// What a driver control becomes: int, bool, menu and button controls the user may set;
/// classes, strings, arrays, integer menus, read-only and disabled controls are left out.
fn describe(dev: &Device, d: v4l::control::Description) -> Option<Control> {
    use v4l::control::{Flags, Type, Value};
    if d.flags.intersects(Flags::DISABLED | Flags::READ_ONLY) {
        return None;
    }
    let kind = match d.typ {
        Type::Integer | Type::Integer64 => Kind::Int,
        Type::Boolean => Kind::Bool,
        Type::Menu => Kind::Menu,
        Type::Button => Kind::Button,
        _ => return None,
    };
    let value = match kind {
        Kind::Button => None,
        _ => match dev.control(d.id).map(|c| c.value) {
            Ok(Value::Integer(v)) => Some(v),
            Ok(Value::Boolean(b)) => Some(i64::from(b)),
            _ => None,
        },
    };
    let menu = d.items.unwrap_or_default().into_iter();
    Some(Control {
        id: d.id,
        name: crate::controls::snake(&d.name),
        label: d.name.trim().to_string(),
        kind,
        min: d.minimum,
        max: d.maximum,
        step: i64::try_from(d.step).unwrap_or(1).max(1),
        default: d.default,
        value,
        menu: menu.map(|(i, item)| MenuItem { value: i64::from(i), name: item.to_string() }).collect(),
        inactive: d.flags.contains(Flags::INACTIVE),
        unit: None,
    })
}

/// A driver's refusal of a control value, in words that say what to try.
fn control_error(e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::EBUSY) => ": the driver holds it now (an automatic mode may own it: turn that off first)",
        Some(libc::EACCES) => ": it is read-only or inactive now",
        Some(libc::ERANGE) => ": out of the range the driver gave",
        _ => "",
    };
    format!("the camera refused the value ({e}){hint}")
}

impl V4l2 {
    /// The device's controls, or none when the driver cannot list them. v4l panics on a
    /// control type it does not know (a newer kernel's): that costs the list, not the thread.
    fn query(&self) -> Vec<Control> {
        let dev = &self.dev;
        let listed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dev.query_controls()));
        match listed {
            Ok(Ok(all)) => {
                let mut list: Vec<Control> = all.into_iter().filter_map(|d| describe(dev, d)).collect();
                crate::controls::unique_names(&mut list);
                list
            }
            Ok(Err(e)) => {
                log::warn!("cannot list the camera's controls: {e}");
                Vec::new()
            }
            Err(_) => {
                log::warn!("cannot list the camera's controls: the driver reported a control type v4l does not know");
                Vec::new()
            }
        }
    }
}

impl Drop for V4l2 {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            // v4l panics if STREAMOFF fails with anything but ENODEV; the buffers are still
            // unmapped while that panic unwinds, and catching it keeps the capture thread.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(stream))).is_err() {
                log::warn!("the camera did not stop streaming cleanly; it is closed anyway");
            }
        }
    }
}

/// The JPEG inside an MJPG buffer: starts with SOI; ends at the last EOI (UVC cameras pad
/// `bytesused` with zeros on some firmware). `None` when the markers are missing.
pub fn trim_jpeg(data: &[u8]) -> Option<&[u8]> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let end = data.windows(2).rposition(|w| w == [0xFF, 0xD9])?;
    Some(&data[..end + 2])
}

#[cfg(test)]
mod tests {
    use super::trim_jpeg;

    #[test]
    fn mjpg_buffers_are_checked_and_trimmed() {
        assert_eq!(trim_jpeg(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9, 0, 0, 0]), Some(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9][..]));
        assert_eq!(trim_jpeg(&[0, 0xFF, 0xD8, 0xFF, 0xD9]), None, "no SOI at the start");
        assert_eq!(trim_jpeg(&[0xFF, 0xD8, 1, 2, 3]), None, "no EOI: torn");
        assert_eq!(trim_jpeg(&[]), None);
    }
}
