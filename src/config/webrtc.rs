//! WebRTC (`webrtc`): WHEP playback of the cameras' `video` for browsers, Mainsail, go2rtc and
//! MediaMTX, from the same H.264 the RTSP server sends.

use serde::{Deserialize, Serialize};

use super::Checker;

/// The WebRTC server (`webrtc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Serve WHEP for every camera with `video`.
    pub enabled: bool,
    /// The one UDP port every session's media uses (ICE tells sessions apart); 0: a free one,
    /// shown in `/api/status`.
    pub udp_port: u16,
    /// Sessions at most, all cameras together; one more offer is answered 503.
    pub max_sessions: usize,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig { enabled: true, udp_port: 8555, max_sessions: 8 }
    }
}

impl WebrtcConfig {
    /// Range-checks the section.
    pub(super) fn validate(&self, v: &mut Checker) {
        v.range("webrtc.max_sessions", self.max_sessions, 1, 64);
    }
}
