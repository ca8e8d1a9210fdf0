//! Who may do what: the same-origin rule for writes, the bearer token, HTTP Basic with the
//! token as the password and the dashboard's cookie (reads only), all compared in constant
//! time and decoded into fixed buffers.

use base64::Engine as _;

use crate::http::server::Request;

/// True unless the request carries an `Origin` other than its own `Host` (`scheme://host[:port]`
/// against `Host`, case-insensitive; `Origin: null` is another origin).
pub(super) fn same_origin(req: &Request<'_>) -> bool {
    let Some(origin) = req.header("Origin") else { return true };
    let Some(host) = req.header("Host") else { return false };
    let authority = origin.splitn(2, |&b| b == b':').nth(1).and_then(|rest| rest.strip_prefix(b"//"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The credentials of an `Authorization` header with `scheme` (case-insensitive, RFC 7235).
fn credentials<'a>(req: &Request<'a>, scheme: &str) -> Option<&'a [u8]> {
    let h = req.header("Authorization")?;
    let n = scheme.len();
    (h.len() > n && h[..n].eq_ignore_ascii_case(scheme.as_bytes()) && h[n] == b' ').then(|| h[n + 1..].trim_ascii())
}

/// Compares the bearer token in constant time (for equal lengths).
pub(super) fn authorized(req: &Request<'_>, token: &str) -> bool {
    credentials(req, "Bearer").is_some_and(|given| same(given, token.as_bytes()))
}

/// HTTP Basic with any user name and the token as the password (what Home Assistant's
/// `mjpeg` camera and OctoPrint's snapshot fetch send). Decoded into a fixed buffer.
pub(super) fn basic_authorized(req: &Request<'_>, token: &str) -> bool {
    let Some(encoded) = credentials(req, "Basic") else { return false };
    // user:token: the token is at most MAX_TOKEN_BYTES (256), the rest is room for a user name.
    let mut buf = [0u8; 1024];
    let Ok(n) = base64::engine::general_purpose::STANDARD.decode_slice(encoded, &mut buf) else { return false };
    let Some(colon) = buf[..n].iter().position(|&b| b == b':') else { return false };
    same(&buf[colon + 1..n], token.as_bytes())
}

/// The `camjobd_token` cookie (percent-encoded by the dashboard), compared in constant time.
pub(super) fn cookie_authorized(req: &Request<'_>, token: &str) -> bool {
    let Some(h) = req.header("Cookie") else { return false };
    let Some(value) = h.split(|&b| b == b';').find_map(|c| c.trim_ascii().strip_prefix(b"camjobd_token=")) else {
        return false;
    };
    // A token is at most MAX_TOKEN_BYTES (the config's token rule); decode into a fixed buffer.
    let mut buf = [0u8; crate::config::MAX_TOKEN_BYTES];
    let mut n = 0;
    let mut i = 0;
    while i < value.len() {
        let b = match value[i] {
            b'%' if i + 2 < value.len() => {
                let hex = std::str::from_utf8(&value[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        i += 2;
                        b
                    }
                    None => return false,
                }
            }
            b'%' => return false,
            b => b,
        };
        if n == buf.len() {
            return false;
        }
        buf[n] = b;
        n += 1;
        i += 1;
    }
    same(&buf[..n], token.as_bytes())
}

/// Constant time for equal lengths.
fn same(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
