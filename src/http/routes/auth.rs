//! Who may do what: the same-origin rule for writes, the bearer token, HTTP Basic with the
//! token as the password and the dashboard's cookie (reads only), all compared in constant
//! time and decoded into fixed buffers.

use crate::http::server::Request;

/// The names a request's `Host` may carry besides IP addresses and `localhost`: the machine's
/// host name, `<hostname>.local`, the host of `mqtt.http_url` and `http.allowed_hosts`.
#[derive(Debug, Default)]
pub(super) struct OwnNames(Vec<String>);

impl OwnNames {
    pub(super) fn new(config: &crate::config::Config) -> OwnNames {
        let mut names: Vec<String> = config.http.allowed_hosts.clone();
        if let Some(h) = crate::sys::hostname() {
            names.push(format!("{h}.local"));
            names.push(h);
        }
        if let Some(url) = config.mqtt.as_ref().and_then(|m| m.http_url.as_deref()) {
            let authority = url.split_once("://").map_or(url, |(_, r)| r).split(['/', '?', '#']).next().unwrap_or("");
            names.push(strip_port(authority).to_string());
        }
        names.retain(|n| !n.is_empty());
        OwnNames(names)
    }

    /// The names, for the refusal's message.
    pub(super) fn list(&self) -> String {
        self.0.join(", ")
    }
}

/// `host[:port]` → host (an IPv6 literal keeps its brackets).
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// True when the request's `Host` names this service: an IP address (a page cannot rebind a
/// literal address: its origin is then camjobd's own), `localhost` (or a `.localhost` name),
/// or one of `own`. A request without `Host` (HTTP/1.0 scripts; browsers always send it) passes.
/// DNS rebinding makes a browser send an attacker's name here, so that name is refused.
pub(super) fn host_allowed(req: &Request<'_>, own: &OwnNames) -> bool {
    let Some(host) = req.header("Host") else { return true };
    let Ok(host) = std::str::from_utf8(host) else { return false };
    let name = strip_port(host.trim());
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let localhost = name.eq_ignore_ascii_case("localhost")
        || name.len() > 10 && name.as_bytes()[name.len() - 10..].eq_ignore_ascii_case(b".localhost");
    localhost || own.0.iter().any(|n| n.eq_ignore_ascii_case(name))
}

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
    credentials(req, "Bearer").is_some_and(|given| crate::config::is_token(given, token))
}

/// HTTP Basic with any user name and the token as the password (what Home Assistant's
/// `mjpeg` camera and OctoPrint's snapshot fetch send). Decoded into a fixed buffer.
pub(super) fn basic_authorized(req: &Request<'_>, token: &str) -> bool {
    credentials(req, "Basic").is_some_and(|encoded| crate::config::basic_has_token(encoded, token))
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
    crate::config::is_token(&buf[..n], token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn allowed(host: Option<&str>, own: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert("host", h.parse().unwrap());
        }
        let req = Request::new("POST", "/api/cameras/cam0/start", &headers, b"");
        host_allowed(&req, &OwnNames(own.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn hosts_that_name_us_and_hosts_that_rebind() {
        for ok in [
            None,
            Some("127.0.0.1:8080"),
            Some("192.168.1.20"),
            Some("[::1]:8080"),
            Some("localhost:8080"),
            Some("LOCALHOST"),
            Some("cam.localhost:8080"),
            Some("octopi.local:8080"),
            Some("OctoPi"),
            Some("octopi.local."),
        ] {
            assert!(allowed(ok, &["octopi", "octopi.local"]), "{ok:?}");
        }
        for bad in [
            Some("rebind.evil.example:8080"),
            Some("evil.example"),
            Some("octopi.evil.example"),
            Some("localhost.evil.example"),
            Some("[not-v6]:80"),
            Some("127.0.0.1.evil.example"),
        ] {
            assert!(!allowed(bad, &["octopi", "octopi.local"]), "{bad:?}");
        }
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.b:8080"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
