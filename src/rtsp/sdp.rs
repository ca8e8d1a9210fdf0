//! The session description of a camera's H.264 (RFC 4566, RFC 6184 8.2): one video track,
//! packetization mode 1, the profile and parameter sets taken from the stream itself.

use base64::Engine as _;

use crate::h264::{nal, rtp};

/// The SDP for `camera`, as served from `server` (its address), with the stream's SPS and PPS
/// (empty: not known yet, left out).
pub fn describe(camera: &str, server: std::net::IpAddr, session_id: u64, sps: &[u8], pps: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ip = match server {
        std::net::IpAddr::V4(ip) => format!("IP4 {ip}"),
        std::net::IpAddr::V6(ip) => format!("IP6 {ip}"),
    };
    let mut fmtp = "packetization-mode=1".to_string();
    if let Some(p) = nal::profile_level_id(sps) {
        fmtp.push_str(&format!(";profile-level-id={p}"));
        if !pps.is_empty() {
            fmtp.push_str(&format!(";sprop-parameter-sets={},{}", b64.encode(sps), b64.encode(pps)));
        }
    }
    let pt = rtp::PAYLOAD_TYPE;
    format!(
        "v=0\r\n\
         o=- {session_id} 1 IN {ip}\r\n\
         s=camjobd {camera}\r\n\
         c=IN {ip}\r\n\
         t=0 0\r\n\
         a=control:*\r\n\
         a=range:npt=now-\r\n\
         m=video 0 RTP/AVP {pt}\r\n\
         a=rtpmap:{pt} H264/90000\r\n\
         a=fmtp:{pt} {fmtp}\r\n\
         a=control:trackID=0\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_the_stream_and_parses() {
        let sps = [0x67, 0x42, 0xC0, 0x1E, 0xDA];
        let pps = [0x68, 0xCE, 0x3C, 0x80];
        let s = describe("cam0", "127.0.0.1".parse().unwrap(), 42, &sps, &pps);
        assert!(s.contains("m=video 0 RTP/AVP 96\r\n"));
        assert!(s.contains("a=rtpmap:96 H264/90000\r\n"));
        assert!(
            s.contains(
                "a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets=Z0LAHto=,aM48gA==\r\n"
            ),
            "{s}"
        );
        assert!(s.lines().all(|l| l.len() > 2 && &l[1..2] == "="), "{s}");
        // Before the first keyframe: no parameters, still a description.
        assert!(describe("cam0", "::1".parse().unwrap(), 1, &[], &[]).contains("a=fmtp:96 packetization-mode=1\r\n"));
    }
}
