//! Video beside the JPEGs: each camera's `video` (an H.264 encoder run while somebody watches)
//! and the top-level `rtsp` server that serves it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Checker;

/// A camera's encoded video stream (`cameras[i].video`); `null`: none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// The codec: only `h264`.
    pub codec: Codec,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// A keyframe (IDR) at least this often; a new client also gets one at once.
    pub keyframe_interval_s: u32,
    /// The H.264 profile the stream announces.
    pub profile: Profile,
    /// Which encoder makes the stream.
    pub encoder: EncoderKind,
    /// The encoder device for `v4l2m2m` (`null`: found by what it can do).
    pub device: Option<PathBuf>,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            codec: Codec::H264,
            bitrate_kbps: 2000,
            keyframe_interval_s: 2,
            profile: Profile::Baseline,
            encoder: EncoderKind::Auto,
            device: None,
        }
    }
}

/// The video codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 (AVC), what every hub and NVR takes.
    H264,
}

/// The H.264 profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Constrained baseline: every decoder, the lowest latency.
    Baseline,
    /// Main.
    Main,
    /// High.
    High,
}

/// Which encoder makes a camera's H.264.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// The first that applies: `source`, then `v4l2m2m`, then `software`.
    Auto,
    /// OpenH264 in camjobd (x86, Pi 5).
    Software,
    /// The V4L2 memory-to-memory encoder (Pi 0–4).
    V4l2m2m,
    /// The camera's own H.264.
    Source,
}

impl VideoConfig {
    /// Range-checks the section (keys relative to `cameras[i].video`).
    pub(super) fn validate(&self, v: &mut Checker) {
        v.range("bitrate_kbps", self.bitrate_kbps, 100, 50_000);
        v.range("keyframe_interval_s", self.keyframe_interval_s, 1, 60);
        if let Some(d) = &self.device {
            v.check("device", d.is_absolute(), "must be an absolute path such as /dev/video11");
        }
    }
}

/// The RTSP server (`rtsp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtspConfig {
    /// `IP:PORT`; `null`: no RTSP. It listens only while some camera has `video`.
    pub bind: Option<String>,
    /// RTSP sessions at most, all cameras together; one more is answered 503.
    pub max_clients: usize,
    /// Offer RTP over UDP besides TCP.
    pub udp: bool,
}

impl Default for RtspConfig {
    fn default() -> Self {
        RtspConfig { bind: Some("127.0.0.1:8554".into()), max_clients: 16, udp: true }
    }
}

impl RtspConfig {
    /// The listen address, once validated (`None`: off).
    pub fn bind_addr(&self) -> Option<SocketAddr> {
        self.bind.as_deref().and_then(|b| b.parse().ok())
    }

    /// Range-checks the section. `guarded`: reads need the token (`http.token` with
    /// `protect_reads`); `open`: `http.allow_open`.
    pub(super) fn validate(&self, guarded: bool, open: bool, v: &mut Checker) {
        if let Some(b) = &self.bind {
            match b.parse::<SocketAddr>() {
                Err(_) => v.fail(
                    "rtsp.bind",
                    "must be IP:PORT (for example \"127.0.0.1:8554\" or \"0.0.0.0:8554\"), or null",
                ),
                Ok(addr) if !addr.ip().is_loopback() && !guarded && !open => v.fail(
                    "rtsp.bind",
                    format!(
                        "{addr} lets anyone on the network watch the cameras: set http.token with http.protect_reads: true (RTSP clients then give rtsp://user:TOKEN@host/...), or set http.allow_open: true to accept that"
                    ),
                ),
                Ok(_) => {}
            }
        }
        v.range("rtsp.max_clients", self.max_clients, 1, 256);
    }
}
