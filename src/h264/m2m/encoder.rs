//! The encoder over a [`Device`]: negotiation (formats, controls, buffers) and the per-frame
//! exchange. Pure logic: every kernel call goes through the trait, so the fakes in the tests
//! drive all of it.

use std::time::{Duration, Instant};

use super::{cid, copy_420, level_for, level_name, Device, Format, Found, Layout, Queue, Side, Why, H264};
use super::{FLAG_ERROR, FLAG_KEYFRAME};
use crate::config::Profile;
use crate::h264::{nal, EncodeError, Encoded, Encoder, Settings};
use crate::jpeg::Yuv;

/// Pictures the driver may hold at once: one being encoded, one queued behind it.
const OUTPUT_BUFFERS: u32 = 2;
/// H.264 buffers: one being filled, one with us, and spares so the driver never waits.
const CAPTURE_BUFFERS: u32 = 4;
/// SPS and PPS kept from a header-only buffer: tens of bytes in practice.
const HEADER_BYTES: usize = 1024;

/// The hardware encoder of one camera.
pub struct M2m<D: Device> {
    dev: D,
    found: Found,
    settings: Settings,
    /// Negotiated for the current picture size (`None`: not yet, or torn down).
    session: Option<Session>,
    /// How long a frame may take (a field so the tests can shorten it).
    pub(super) deadline: Duration,
    /// SPS and PPS from the last header-only buffer, put before an IDR that lacks them.
    header: Vec<u8>,
    /// Frames since the last IDR: one is forced at the keyframe period even where the driver
    /// has no I_PERIOD, or makes non-IDR intra pictures there.
    since_idr: u32,
    /// Settings the driver refused (logged once each; the tests read it).
    pub(super) refused: Vec<&'static str>,
    /// The driver's keyframe flag disagreed with the NAL types (logged once).
    flag_mismatch: bool,
    /// Full-range pictures are squeezed into the limited range as they are copied in.
    squeeze: super::layout::Squeeze,
}

/// What was negotiated for one picture size.
struct Session {
    layout: Layout,
    output: Queue,
    capture: Queue,
    /// OUTPUT buffers ours to fill (not queued).
    free: Vec<bool>,
}

impl<D: Device> M2m<D> {
    /// An encoder on `dev` (what `found` describes), set up for `size` pictures now, so that a
    /// refusal shows at start; a frame of another size sets it up again.
    pub fn with_device(dev: D, found: Found, settings: &Settings, size: (usize, usize)) -> Result<Self, EncodeError> {
        let mut m = M2m {
            dev,
            found,
            settings: settings.clone(),
            session: None,
            deadline: super::DEADLINE,
            header: Vec::with_capacity(HEADER_BYTES),
            since_idr: 0,
            refused: Vec::new(),
            flag_mismatch: false,
            squeeze: super::layout::Squeeze::new(),
        };
        m.start(size.0 & !1, size.1 & !1).map_err(|w| EncodeError::Start(w.to_string()))?;
        Ok(m)
    }

    /// What it runs on.
    pub fn found(&self) -> &Found {
        &self.found
    }

    /// The device, for the tests to look at.
    #[cfg(test)]
    pub(super) fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    fn refused(&self, what: String) -> Why {
        Why::Refused { card: self.found.card.clone(), what }
    }

    /// The stateful encoder's initialisation: CAPTURE format, OUTPUT format, frame rate,
    /// controls, buffers, STREAMON.
    fn start(&mut self, width: usize, height: usize) -> Result<(), Why> {
        let mplane = self.found.mplane;
        let output = Queue { side: Side::Output, mplane };
        let capture = Queue { side: Side::Capture, mplane };
        let (w, h) = (width as u32, height as u32);
        // CAPTURE first: the coded format decides what OUTPUT may take.
        let coded =
            Format { fourcc: H264, width: w, height: h, bytesperline: 0, sizeimage: coded_bytes(w, h), planes: 1 };
        let got = self.dev.set_format(capture, &coded).map_err(|e| self.refused(format!("H.264 at {w}x{h}: {e}")))?;
        if got.fourcc != H264 {
            return Err(self.refused(format!("H.264 output: it set {}", super::fourcc_name(got.fourcc))));
        }
        let raw = self.found.raw;
        let want = Format { fourcc: raw.fourcc(), width: w, height: h, bytesperline: 0, sizeimage: 0, planes: 1 };
        let what = || format!("{w}x{h} {}", raw.name());
        let got = self.dev.set_format(output, &want).map_err(|e| self.refused(format!("{}: {e}", what())))?;
        let layout = Layout::new(raw, &got, width, height).map_err(|e| self.refused(format!("{}: {e}", what())))?;
        if got.width != w || got.height != h {
            // The driver padded the buffer (bcm2835-codec: rows to 16): code only the picture.
            let r = self.dev.set_crop(output, w, h);
            self.optional("the visible size (S_SELECTION crop)", r);
        }
        let r = self.dev.set_fps(output, self.settings.fps.max(1));
        self.optional("the frame rate (S_PARM)", r);
        self.controls(w, h);
        let session = self.buffers(layout, output, capture).inspect_err(|_| self.release([output, capture]))?;
        self.session = Some(session);
        // A new stream starts with a keyframe: asked for, in case the driver would not. An
        // SPS kept from a stream of another size is not this one's.
        self.since_idr = u32::MAX;
        self.header.clear();
        log::info!(
            "H.264 encoder {}: {w}x{h} {}, rows of {} bytes, {} buffer rows, {} bytes a picture",
            self.found,
            raw.name(),
            layout.stride,
            layout.rows,
            layout.bytes
        );
        Ok(())
    }

    /// The rate, keyframe period, profile, level and repeated headers: each optional (the
    /// stream works without; a refusal is logged).
    fn controls(&mut self, w: u32, h: u32) {
        let s = self.settings.clone();
        let r = self.dev.set_control(cid::BITRATE, s.bitrate_kbps.saturating_mul(1000).min(i32::MAX as u32) as i32);
        self.optional("the bitrate (V4L2_CID_MPEG_VIDEO_BITRATE)", r);
        let period = s.fps.max(1).saturating_mul(s.keyframe_interval_s.max(1)).min(i32::MAX as u32) as i32;
        let r = self.dev.set_control(cid::H264_I_PERIOD, period);
        self.optional("the keyframe period (V4L2_CID_MPEG_VIDEO_H264_I_PERIOD)", r);
        // V4L2_MPEG_VIDEO_H264_PROFILE_*: constrained baseline (1), or plain baseline (0)
        // where a driver does not list the constrained one.
        let r = match s.profile {
            Profile::Baseline => {
                self.dev.set_control(cid::H264_PROFILE, 1).or_else(|_| self.dev.set_control(cid::H264_PROFILE, 0))
            }
            Profile::Main => self.dev.set_control(cid::H264_PROFILE, 2),
            Profile::High => self.dev.set_control(cid::H264_PROFILE, 4),
        };
        self.optional("the profile (V4L2_CID_MPEG_VIDEO_H264_PROFILE)", r);
        let level = level_for(w, h, s.fps, s.bitrate_kbps);
        let r = self.dev.set_control(cid::H264_LEVEL, level as i32);
        if r.is_ok() {
            log::debug!("H.264 encoder {}: level {} for {w}x{h} at {} fps", self.found, level_name(level), s.fps);
        }
        self.optional("the level (V4L2_CID_MPEG_VIDEO_H264_LEVEL)", r);
        let r = self.dev.set_control(cid::REPEAT_SEQ_HEADER, 1);
        self.optional(
            "SPS/PPS before every keyframe (V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER; camjobd repeats them itself)",
            r,
        );
    }

    /// Logs a refused optional setting, once per name.
    fn optional(&mut self, what: &'static str, r: std::io::Result<()>) {
        if let Err(e) = r {
            if !self.refused.contains(&what) {
                log::warn!("H.264 encoder {} refused {what}: {e}; going on without it", self.found);
                self.refused.push(what);
            }
        }
    }

    /// REQBUFS and mmap on both queues, every CAPTURE buffer queued, both streaming.
    fn buffers(&mut self, layout: Layout, output: Queue, capture: Queue) -> Result<Session, Why> {
        let lens =
            self.dev.buffers(output, OUTPUT_BUFFERS).map_err(|e| self.refused(format!("picture buffers: {e}")))?;
        if lens.is_empty() || lens.iter().any(|&l| l < layout.needed()) {
            return Err(self.refused(format!("picture buffers of {} bytes: it gave {lens:?}", layout.needed())));
        }
        let caps =
            self.dev.buffers(capture, CAPTURE_BUFFERS).map_err(|e| self.refused(format!("H.264 buffers: {e}")))?;
        if caps.is_empty() {
            return Err(self.refused("H.264 buffers: it gave none".into()));
        }
        for i in 0..caps.len() {
            self.dev.queue(capture, i, 0, 0).map_err(|e| self.refused(format!("H.264 buffer {i} (QBUF): {e}")))?;
        }
        self.dev.stream(output, true).map_err(|e| self.refused(format!("to start its input (STREAMON): {e}")))?;
        self.dev.stream(capture, true).map_err(|e| self.refused(format!("to start its output (STREAMON): {e}")))?;
        Ok(Session { layout, output, capture, free: vec![true; lens.len()] })
    }

    /// STREAMOFF, unmap, REQBUFS 0 on both queues.
    fn stop(&mut self) {
        if let Some(s) = self.session.take() {
            self.release([s.output, s.capture]);
        }
    }

    /// STREAMOFF, unmap, REQBUFS 0 (errors only logged: this is the way out, also of a
    /// set-up that failed half-way, which would leave the formats locked).
    fn release(&mut self, queues: [Queue; 2]) {
        for q in queues {
            if let Err(e) = self.dev.stream(q, false) {
                log::warn!("H.264 encoder {}: STREAMOFF: {e}", self.found);
            }
            if let Err(e) = self.dev.buffers(q, 0) {
                log::warn!("H.264 encoder {}: freeing buffers: {e}", self.found);
            }
        }
    }

    /// An OUTPUT buffer to fill: one never queued, or one the driver has given back.
    fn free_output(&mut self) -> Result<usize, EncodeError> {
        let Some(s) = self.session.as_mut() else { return Err(EncodeError::Frame("not set up".into())) };
        while let Some(d) = self.dev.dequeue(s.output).map_err(|e| frame_error("DQBUF (input)", &e))? {
            if let Some(f) = s.free.get_mut(d.index) {
                *f = true;
            }
        }
        let i = s.free.iter().position(|&f| f);
        i.ok_or_else(|| EncodeError::Frame("the encoder still holds every input picture (it stalled)".into()))
    }

    /// Waits for the H.264 of the frame stamped `stamp_us`, within the deadline; header-only
    /// buffers are kept and waited past, and the late H.264 of a frame that missed its
    /// deadline is dropped (else every later frame would come one behind).
    fn collect(&mut self, out: &mut Vec<u8>, stamp_us: u64) -> Result<Encoded, EncodeError> {
        let capture =
            self.session.as_ref().map(|s| s.capture).ok_or_else(|| EncodeError::Frame("not set up".into()))?;
        let end = Instant::now() + self.deadline;
        loop {
            let Some(d) = self.dev.dequeue(capture).map_err(|e| frame_error("DQBUF (H.264)", &e))? else {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(EncodeError::Frame(format!(
                        "the encoder {} gave no H.264 within {} ms",
                        self.found.card,
                        self.deadline.as_millis()
                    )));
                }
                self.dev.wait(left).map_err(|e| frame_error("poll", &e))?;
                continue;
            };
            let mem = self.dev.memory(capture, d.index);
            let data = mem.get(d.offset..d.bytesused.min(mem.len())).unwrap_or(&[]);
            let taken = if d.stamp_us < stamp_us {
                Ok(Taken::Nothing)
            } else if d.flags & FLAG_ERROR != 0 {
                Err(EncodeError::Frame("the encoder marked its H.264 buffer as damaged".into()))
            } else {
                take(data, d.flags, &mut self.header, &mut self.flag_mismatch, out)
            };
            // Back to the driver whatever became of it: a lost buffer would starve the queue.
            self.dev.queue(capture, d.index, 0, 0).map_err(|e| frame_error("QBUF (H.264)", &e))?;
            match taken? {
                Taken::Nothing => continue,
                Taken::Frame(e) => return Ok(e),
            }
        }
    }
}

/// What one CAPTURE buffer held.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// No picture: SPS/PPS alone (kept), or empty.
    Nothing,
    /// A frame, now in `out`.
    Frame(Encoded),
}

/// Puts one CAPTURE buffer's H.264 into `out` (never grown), with the kept SPS/PPS before an
/// IDR that has none of its own. A buffer without a slice keeps its SPS/PPS in `header`.
pub(super) fn take(
    data: &[u8],
    flags: u32,
    header: &mut Vec<u8>,
    mismatch: &mut bool,
    out: &mut Vec<u8>,
) -> Result<Taken, EncodeError> {
    out.clear();
    let (mut slice, mut idr, mut sps) = (false, false, false);
    for t in nal::units(data).map(nal::nal_type) {
        slice |= (1..=5).contains(&t);
        idr |= t == nal::IDR;
        sps |= t == nal::SPS;
    }
    if !slice {
        if sps && data.len() <= header.capacity() {
            header.clear();
            header.extend_from_slice(data);
        }
        return Ok(Taken::Nothing);
    }
    if (flags & FLAG_KEYFRAME != 0) != idr && !*mismatch {
        *mismatch = true;
        log::warn!(
            "H.264 encoder: the keyframe flag says {} but the NAL units say {idr}; going by the NAL units",
            !idr
        );
    }
    let prepend = idr && !sps && !header.is_empty();
    let need = data.len() + if prepend { header.len() } else { 0 };
    if need > out.capacity() {
        return Err(EncodeError::TooLarge(need));
    }
    if prepend {
        out.extend_from_slice(header);
    }
    out.extend_from_slice(data);
    Ok(Taken::Frame(Encoded { keyframe: idr, bytes: out.len() }))
}

fn frame_error(what: &str, e: &std::io::Error) -> EncodeError {
    EncodeError::Frame(format!("{what}: {e}"))
}

/// H.264 buffer size asked for: half a byte per pixel (a busy keyframe at a high rate fits),
/// 256 KiB to 4 MiB. The driver may choose another; its buffers' lengths are what counts.
fn coded_bytes(w: u32, h: u32) -> u32 {
    (w.saturating_mul(h) / 2).clamp(256 << 10, 4 << 20)
}

impl<D: Device + Send> Encoder for M2m<D> {
    fn encode(&mut self, img: &Yuv, mono_ms: u64, force_idr: bool, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
        out.clear();
        let (w, h) = (img.width() & !1, img.height() & !1);
        if self.session.as_ref().is_none_or(|s| (s.layout.width, s.layout.height) != (w, h)) {
            // A new size is a new stream: the stateful interface wants a full re-initialisation.
            self.stop();
            self.start(w, h).map_err(|why| EncodeError::Start(why.to_string()))?;
        }
        let period = self.settings.fps.max(1).saturating_mul(self.settings.keyframe_interval_s.max(1));
        if force_idr || self.since_idr.saturating_add(1) >= period {
            let r = self.dev.set_control(cid::FORCE_KEY_FRAME, 1);
            self.optional("a keyframe on demand (V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME)", r);
        }
        let index = self.free_output()?;
        let Some(s) = self.session.as_mut() else { return Err(EncodeError::Frame("not set up".into())) };
        let (layout, output) = (s.layout, s.output);
        let squeeze = img.full_range().then_some(&self.squeeze);
        copy_420(img, &layout, self.dev.memory(output, index), squeeze);
        self.dev
            .queue(output, index, layout.bytes, mono_ms.saturating_mul(1000))
            .map_err(|e| frame_error("QBUF (input)", &e))?;
        s.free[index] = false;
        let e = self.collect(out, mono_ms.saturating_mul(1000))?;
        self.since_idr = if e.keyframe { 0 } else { self.since_idr.saturating_add(1) };
        Ok(e)
    }

    fn name(&self) -> &'static str {
        "V4L2 M2M (hardware)"
    }
}

impl<D: Device> Drop for M2m<D> {
    fn drop(&mut self) {
        self.stop();
    }
}
