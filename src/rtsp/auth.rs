//! RTSP credentials: with `http.token` and `http.protect_reads`, a client proves it knows the
//! token by HTTP Digest (RFC 2617 MD5, with or without `qop=auth`: go2rtc sends RFC 2069's
//! form) or Basic, any user name, the token as the password: `rtsp://user:TOKEN@host/cam0`, as
//! ffmpeg, Frigate, go2rtc, MediaMTX and retina send it.

use md5::{Digest as _, Md5};

/// The realm both challenges name.
pub const REALM: &str = "camjobd";

/// The challenges of a 401: Digest first (go2rtc reads only the first), then Basic.
pub fn challenges(nonce: &str) -> [String; 2] {
    [format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5"), format!("Basic realm=\"{REALM}\"")]
}

/// Why credentials were refused (logged at debug: a client's first request has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization` header.
    Missing,
    /// A scheme other than Basic or Digest, or one that does not parse.
    Malformed,
    /// The Digest was made for another nonce or realm than this connection's.
    StaleNonce,
    /// The `uri` of the Digest names another camera than the request.
    OtherUri,
    /// The password (Basic) or the response (Digest) is wrong.
    Wrong,
}

/// Checks `authorization` (the header's value, if any) for a request of `method` on the camera
/// `camera` against `token`, on a connection whose Digest nonce is `nonce`.
pub fn check(authorization: Option<&str>, method: &str, camera: &str, token: &str, nonce: &str) -> Result<(), Refused> {
    let h = authorization.ok_or(Refused::Missing)?.trim();
    let (scheme, rest) = h.split_once(' ').ok_or(Refused::Malformed)?;
    if scheme.eq_ignore_ascii_case("Basic") {
        return if crate::config::basic_has_token(rest.trim().as_bytes(), token) {
            Ok(())
        } else {
            Err(Refused::Wrong)
        };
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(Refused::Malformed);
    }
    let p = DigestParams::parse(rest).ok_or(Refused::Malformed)?;
    if p.nonce != nonce || p.realm != REALM {
        return Err(Refused::StaleNonce);
    }
    // The `uri` may be absolute and differ from the request line (go2rtc, ffmpeg): it must at
    // least name the same camera, so that a response cannot be replayed for another one.
    if camera_of(p.uri) != camera {
        return Err(Refused::OtherUri);
    }
    let ha1 = md5_hex(&[p.username, REALM, token]);
    let ha2 = md5_hex(&[method, p.uri]);
    let want = match p.qop {
        Some(qop) => md5_hex(&[&ha1, nonce, p.nc.unwrap_or(""), p.cnonce.unwrap_or(""), qop, &ha2]),
        None => md5_hex(&[&ha1, nonce, &ha2]),
    };
    if crate::config::is_token(p.response.to_ascii_lowercase().as_bytes(), &want) {
        Ok(())
    } else {
        Err(Refused::Wrong)
    }
}

/// The camera a request path or URL names: its first path segment.
pub fn camera_of(uri: &str) -> &str {
    let path = match uri.find("://") {
        Some(i) => uri[i + 3..].find('/').map_or("", |j| &uri[i + 3 + j..]),
        None => uri,
    };
    path.trim_start_matches('/').split(['/', '?']).next().unwrap_or("")
}

/// The fields of a Digest `Authorization` that matter.
#[derive(Debug, Default)]
struct DigestParams<'a> {
    username: &'a str,
    realm: &'a str,
    nonce: &'a str,
    uri: &'a str,
    response: &'a str,
    qop: Option<&'a str>,
    nc: Option<&'a str>,
    cnonce: Option<&'a str>,
}

impl<'a> DigestParams<'a> {
    /// `k=v, k="v", ...` (values quoted or not; a quoted value holds no quote).
    fn parse(mut s: &'a str) -> Option<DigestParams<'a>> {
        let mut p = DigestParams::default();
        let mut seen = 0;
        loop {
            s = s.trim_start_matches([' ', ',', '\t']);
            if s.is_empty() {
                break;
            }
            let eq = s.find('=')?;
            let key = s[..eq].trim();
            s = s[eq + 1..].trim_start();
            let value;
            if let Some(quoted) = s.strip_prefix('"') {
                let end = quoted.find('"')?;
                value = &quoted[..end];
                s = &quoted[end + 1..];
            } else {
                let end = s.find(',').unwrap_or(s.len());
                value = s[..end].trim();
                s = &s[end..];
            }
            let field = match key.to_ascii_lowercase().as_str() {
                "username" => &mut p.username,
                "realm" => &mut p.realm,
                "nonce" => &mut p.nonce,
                "uri" => &mut p.uri,
                "response" => &mut p.response,
                "qop" => {
                    p.qop = Some(value);
                    continue;
                }
                "nc" => {
                    p.nc = Some(value);
                    continue;
                }
                "cnonce" => {
                    p.cnonce = Some(value);
                    continue;
                }
                _ => continue,
            };
            *field = value;
            seen += 1;
        }
        (seen >= 5).then_some(p)
    }
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_takes_any_user_and_the_token() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = format!("Basic {}", b64("frigate:s3cret"));
        assert_eq!(check(Some(&ok), "DESCRIBE", "cam0", "s3cret", "n"), Ok(()));
        let wrong = format!("Basic {}", b64("s3cret:nope"));
        assert_eq!(check(Some(&wrong), "DESCRIBE", "cam0", "s3cret", "n"), Err(Refused::Wrong));
        assert_eq!(check(None, "DESCRIBE", "cam0", "s3cret", "n"), Err(Refused::Missing));
        assert_eq!(check(Some("Bearer s3cret"), "DESCRIBE", "cam0", "s3cret", "n"), Err(Refused::Malformed));
        assert_eq!(check(Some("Basic !!!"), "DESCRIBE", "cam0", "s3cret", "n"), Err(Refused::Wrong));
    }

    #[test]
    fn digest_with_and_without_qop_and_only_for_its_camera() {
        // RFC 2069 form, as go2rtc computes it, with an absolute uri.
        let uri = "rtsp://127.0.0.1:8554/cam0/";
        let ha1 = md5_hex(&["u", REALM, "tok"]);
        let resp = md5_hex(&[&ha1, "abc", &md5_hex(&["DESCRIBE", uri])]);
        let h = format!("Digest username=\"u\", realm=\"camjobd\", nonce=\"abc\", uri=\"{uri}\", response=\"{resp}\"");
        assert_eq!(check(Some(&h), "DESCRIBE", "cam0", "tok", "abc"), Ok(()));
        assert_eq!(check(Some(&h), "DESCRIBE", "cam0", "other", "abc"), Err(Refused::Wrong));
        assert_eq!(check(Some(&h), "DESCRIBE", "cam0", "tok", "new"), Err(Refused::StaleNonce));
        assert_eq!(check(Some(&h), "DESCRIBE", "cam1", "tok", "abc"), Err(Refused::OtherUri));
        assert_eq!(check(Some(&h), "SETUP", "cam0", "tok", "abc"), Err(Refused::Wrong), "the method is signed");
        // RFC 2617 with qop=auth, unquoted qop and nc, as ffmpeg and retina send it.
        let ha2 = md5_hex(&["PLAY", "/cam0"]);
        let resp = md5_hex(&[&ha1, "abc", "00000001", "xyz", "auth", &ha2]);
        let h = format!(
            "Digest username=\"u\", realm=\"camjobd\", nonce=\"abc\", uri=\"/cam0\", response=\"{resp}\", qop=auth, nc=00000001, cnonce=\"xyz\""
        );
        assert_eq!(check(Some(&h), "PLAY", "cam0", "tok", "abc"), Ok(()));
        assert_eq!(check(Some("Digest username=\"u\""), "PLAY", "cam0", "tok", "abc"), Err(Refused::Malformed));
    }

    #[test]
    fn the_camera_of_a_path_or_url() {
        assert_eq!(camera_of("rtsp://h:1/cam0/trackID=0"), "cam0");
        assert_eq!(camera_of("/cam0"), "cam0");
        assert_eq!(camera_of("rtsp://h:1"), "");
        assert_eq!(camera_of("*"), "*");
    }
}
