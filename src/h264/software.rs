//! The software H.264 encoder: OpenH264, built from source by the `openh264` crate (C++, with
//! `cc`; no cmake, nothing downloaded). What x86 boards and the Pi 5 (no hardware encoder) use,
//! and what the tests run.
//!
//! It takes camjobd's planar images as they are: a 4:2:0 image directly, and a 4:2:2 one read
//! every other chroma row, which is a stride of two rows (no copy, no conversion).

use openh264::encoder::{
    BitRate, Encoder as OpenH264, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile as OhProfile,
    RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::YUVSource;
use openh264::{OpenH264API, Timestamp};

use super::{EncodeError, Encoded, Settings};
use crate::config::Profile;
use crate::jpeg::Yuv;

/// OpenH264, one per camera.
pub struct Software {
    encoder: OpenH264,
    settings: Settings,
    /// What the stream's VUI says of the range (it follows the pictures).
    full_range: bool,
}

impl Software {
    /// An encoder for `settings` (the picture size is set by the first frame).
    pub fn new(settings: &Settings) -> Result<Software, EncodeError> {
        Ok(Software { encoder: Self::open(settings, false)?, settings: settings.clone(), full_range: false })
    }

    /// OpenH264 for `settings`; `full_range`: the stream says so (VUI), so that players do
    /// not stretch JPEG-range pictures a second time.
    fn open(settings: &Settings, full_range: bool) -> Result<OpenH264, EncodeError> {
        let fps = settings.fps.max(1);
        let mut config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            // Every frame in is a frame out: a skipped frame would be a gap for the clients.
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * settings.keyframe_interval_s.max(1)))
            .usage_type(UsageType::CameraVideoRealTime)
            // Keyframes where asked for and every keyframe_interval_s, not at every scene change
            // the encoder detects (17 frames apart on a moving test card instead of 60).
            .scene_change_detect(false)
            .profile(match settings.profile {
                Profile::Baseline => OhProfile::Baseline,
                Profile::Main => OhProfile::Main,
                Profile::High => OhProfile::High,
            })
            // One thread: the encoder stage's own (the thread count stays what budget counts).
            .num_threads(1);
        if full_range {
            // BT.601 matrix, full range: JPEG's YCbCr.
            config = config.vui(VuiConfig::bt601().full_range(true));
        }
        OpenH264::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| EncodeError::Start(format!("OpenH264: {e}")))
    }
}

/// An image seen as 4:2:0 ([`Yuv::chroma_stride_420`]).
struct As420<'a>(&'a Yuv);

impl YUVSource for As420<'_> {
    fn dimensions(&self) -> (usize, usize) {
        // H.264 codes whole chroma samples: even sizes.
        (self.0.width() & !1, self.0.height() & !1)
    }
    fn strides(&self) -> (usize, usize, usize) {
        let (_, _, _, ys, _) = self.0.planes();
        let cs = self.0.chroma_stride_420();
        (ys, cs, cs)
    }
    fn y(&self) -> &[u8] {
        self.0.planes().0
    }
    fn u(&self) -> &[u8] {
        self.0.planes().1
    }
    fn v(&self) -> &[u8] {
        self.0.planes().2
    }
}

impl super::Encoder for Software {
    fn encode(&mut self, img: &Yuv, mono_ms: u64, force_idr: bool, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
        if img.full_range() != self.full_range {
            // The camera's frames changed kind (a V4L2 `auto` camera opened as MJPG after
            // YUYV): a new stream whose headers say the new range; it starts on a keyframe.
            self.encoder = Self::open(&self.settings, img.full_range())?;
            self.full_range = img.full_range();
        }
        if force_idr {
            self.encoder.force_intra_frame();
        }
        let stream = self
            .encoder
            .encode_at(&As420(img), Timestamp::from_millis(mono_ms))
            .map_err(|e| EncodeError::Frame(format!("OpenH264: {e}")))?;
        out.clear();
        for l in 0..stream.num_layers() {
            let Some(layer) = stream.layer(l) else { continue };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n) else { continue };
                // Never grown: an access unit larger than the buffer is refused, not allocated.
                if out.len() + nal.len() > out.capacity() {
                    return Err(EncodeError::TooLarge(out.len() + nal.len()));
                }
                out.extend_from_slice(nal);
            }
        }
        Ok(Encoded { keyframe: matches!(stream.frame_type(), FrameType::IDR), bytes: out.len() })
    }

    fn name(&self) -> &'static str {
        "software (OpenH264)"
    }
}
