//! H.264 beside the JPEGs: one encoder per camera with `video`, run only while an RTSP or
//! WebRTC client watches, writing access units into a fixed ring ([`ring`]) that every client
//! reads.
//!
//! - [`choose`] — which encoder (`video.encoder`), and why.
//! - [`m2m`] — the V4L2 memory-to-memory hardware encoder (Pi 0–4), and finding it.
//! - [`nal`] — Annex B byte streams (splitting, types, the SPS's profile).
//! - [`rtp`] — RTP packets (RFC 6184) and RTCP sender reports, into the caller's buffers.
//! - [`ring`] — the access units of one camera, in fixed memory.
//! - [`software`] — OpenH264.
//! - [`stage`] — a camera's encoder thread, and who watches.

pub mod choose;
pub mod m2m;
pub mod nal;
pub mod ring;
pub mod rtp;
pub mod software;
pub mod stage;

use std::path::{Path, PathBuf};

use crate::config::Profile;
use crate::jpeg::Yuv;

/// Looks for a V4L2 M2M H.264 encoder: `device` (`video.device`), or every `/dev/video*`.
/// Answers the device and what it is, or why there is none.
pub fn probe_m2m(device: Option<&Path>) -> Result<(PathBuf, String), String> {
    m2m::find(device).map(|f| (f.path.clone(), format!("{} ({})", f.card, f.driver))).map_err(|why| why.to_string())
}

/// What makes `backend`'s encoder for `settings` and pictures of `size`, on the encoder thread.
pub fn maker(backend: &choose::Backend, settings: &Settings, size: (usize, usize)) -> stage::Make {
    let s = settings.clone();
    match backend {
        choose::Backend::Software => Box::new(move || Ok(Box::new(software::Software::new(&s)?) as Box<dyn Encoder>)),
        choose::Backend::M2m(path) => {
            let path = path.clone();
            Box::new(move || m2m::open(&path, &s, size))
        }
    }
}

/// How a camera's encoder is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// A keyframe at least this often.
    pub keyframe_interval_s: u32,
    /// The profile announced.
    pub profile: Profile,
    /// The camera's frame rate (rate control and the keyframe period count in frames).
    pub fps: u32,
}

/// One encoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// An IDR picture (with SPS and PPS before it).
    pub keyframe: bool,
    /// Bytes written.
    pub bytes: usize,
}

/// Why an encoder failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// It could not be created.
    Start(String),
    /// A frame could not be encoded.
    Frame(String),
    /// The access unit is larger than the buffer it goes into (this many bytes).
    TooLarge(usize),
    /// The camera's frame could not be read (a JPEG that does not decode): the camera's
    /// fault, not the encoder's.
    Input(String),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::Start(m) => write!(f, "cannot start the H.264 encoder: {m}"),
            EncodeError::Frame(m) => write!(f, "cannot encode a frame: {m}"),
            EncodeError::TooLarge(n) => write!(f, "an encoded frame of {n} bytes is larger than its buffer"),
            EncodeError::Input(m) => write!(f, "cannot read the camera's frame: {m}"),
        }
    }
}

/// An H.264 encoder behind which backends differ (software, V4L2 M2M).
pub trait Encoder: Send {
    /// Encodes `img` captured at `mono_ms` into `out` (Annex B, cleared first, never grown);
    /// `force_idr` makes it a keyframe (a new client starts there).
    fn encode(&mut self, img: &Yuv, mono_ms: u64, force_idr: bool, out: &mut Vec<u8>) -> Result<Encoded, EncodeError>;
    /// What it is, for status and logs.
    fn name(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openh264_encodes_a_picture_with_keyframes_where_asked() {
        let settings = Settings { bitrate_kbps: 1000, keyframe_interval_s: 2, profile: Profile::Baseline, fps: 10 };
        let mut enc = software::Software::new(&settings).unwrap();
        let mut img = Yuv::new(320, 240);
        let mut out = Vec::with_capacity(256 << 10);
        let mut keyframes = Vec::new();
        for i in 0..35u64 {
            let (y, ..) = img.planes_mut();
            for (j, p) in y.iter_mut().enumerate() {
                *p = ((j as u64 + i * 7) % 220) as u8 + 16;
            }
            let e = Encoder::encode(&mut enc, &img, i * 100, i == 13, &mut out).unwrap();
            assert_eq!(e.bytes, out.len());
            assert!(e.bytes > 0, "frame {i} was skipped");
            let types: Vec<u8> = nal::units(&out).map(nal::nal_type).collect();
            if e.keyframe {
                keyframes.push(i);
                assert!(types.starts_with(&[nal::SPS, nal::PPS]), "frame {i}: {types:?}");
                assert!(types.contains(&nal::IDR));
                let sps = nal::units(&out).next().unwrap();
                assert_eq!(nal::profile_level_id(sps).as_deref().map(|p| &p[..2]), Some("42"), "baseline");
            }
        }
        // The first frame and the one asked for are keyframes, and none is ever more than
        // 20 frames (2 s at 10 fps) from the one before.
        assert_eq!(keyframes[..2], [0, 13], "keyframes at {keyframes:?}");
        assert!(keyframes.windows(2).all(|w| w[1] - w[0] <= 20), "keyframes at {keyframes:?}");
        assert!(34 - keyframes.last().unwrap() <= 20, "keyframes at {keyframes:?}");
        // A buffer too small is refused, not grown.
        let mut small = Vec::with_capacity(16);
        assert!(matches!(Encoder::encode(&mut enc, &img, 3600, true, &mut small), Err(EncodeError::TooLarge(_))));
        assert_eq!(small.capacity(), 16);
    }
}
