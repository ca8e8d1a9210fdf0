//! Who may do what, as three layers every request passes before its route ([`Guard::admit`]):
//! the `Host` names this service (DNS rebinding), a write comes from our own origin, and the
//! token rules — Bearer, HTTP Basic with the token as the password and the dashboard's
//! cookie (reads only), which paths are open. Tokens are compared in constant time
//! ([`crate::config::is_token`]) and decoded into fixed buffers.

use http::header::{HeaderValue, AUTHORIZATION, COOKIE, HOST, ORIGIN, WWW_AUTHENTICATE};
use http::HeaderMap;

use super::table::Route;
use crate::http::error::{ApiError, Code};
use crate::http::reply::{Request, Response, WithHeader};

/// What a request asks for, as the layers judge it.
pub(super) struct Target<'a> {
    /// GET or HEAD.
    pub read: bool,
    /// The path, without the query.
    pub path: &'a str,
    /// The route the path names, if any.
    pub route: Option<Route>,
    /// A stream or a snapshot, pasted or not: what other programs fetch.
    pub pasted: bool,
}

/// The layers' settings, taken from the config once.
pub(super) struct Guard {
    own_names: OwnNames,
    /// Reads check `Host` too: no token, and listening beyond loopback.
    reads_check_host: bool,
    token: Option<String>,
    protect_reads: bool,
}

impl Guard {
    pub(super) fn new(config: &crate::config::Config) -> Guard {
        let http = &config.http;
        Guard {
            own_names: OwnNames::new(config),
            reads_check_host: http.token.is_none() && !config.bind_addr().ip().is_loopback(),
            token: http.token.clone(),
            protect_reads: http.protect_reads,
        }
    }

    /// The layers in order; `Err` is the refusal to answer with (boxed: refusals are rare and
    /// a response is large).
    pub(super) fn admit(&self, req: &Request, t: &Target<'_>) -> Result<(), Box<Response>> {
        self.host(req.headers(), t)?;
        origin(req.headers(), t)?;
        self.token(req.headers(), t)
    }

    /// DNS rebinding: a page of another site, its name now pointing at this machine, sends its
    /// own name as Host. Our names are few and known. Writes are always checked; reads only
    /// without a token beyond loopback, and never the liveness probe (a monitor using a LAN
    /// name must not see a healthy service as down).
    fn host(&self, headers: &HeaderMap, t: &Target<'_>) -> Result<(), Box<Response>> {
        let checked = !t.read || (self.reads_check_host && t.route != Some(Route::Health));
        if !checked || host_allowed(headers, &self.own_names) {
            return Ok(());
        }
        let host = headers.get(HOST).map(|h| String::from_utf8_lossy(h.as_bytes())).unwrap_or_default();
        let msg = format!(
            "Host {host:?} is not a name of this camjobd (IP addresses, localhost, {}): a page of another site may be reaching it through DNS rebinding; if you use this name, add it to http.allowed_hosts",
            self.own_names.list()
        );
        Err(Box::new(ApiError::new(Code::Host, msg).into()))
    }

    /// The token rules (when `http.token` is set). Reads are open unless `protect_reads`; the
    /// page itself and the liveness check always are (the page asks for the token; systemd
    /// and load balancers probe). The cookie (set by the dashboard, so that <img> loads carry
    /// the token) and Basic (Home Assistant's and OctoPrint's fetches) count for reads only: a
    /// write must show the Bearer header, which no other site can make a browser send.
    fn token(&self, headers: &HeaderMap, t: &Target<'_>) -> Result<(), Box<Response>> {
        let Some(token) = &self.token else { return Ok(()) };
        let page = !t.pasted && matches!(t.route, Some(Route::Root | Route::Index | Route::Health));
        let open = t.read && (!self.protect_reads || page);
        let read_ok = t.read && (cookie_authorized(headers, token) || basic_authorized(headers, token));
        if open || authorized(headers, token) || read_ok {
            return Ok(());
        }
        let what = if t.read {
            "with http.protect_reads, reads need the header Authorization: Bearer <http.token> (or Basic with the token as the password)"
        } else {
            "this request needs the header Authorization: Bearer <http.token>"
        };
        // Streams and snapshots are what other programs fetch: offer Basic to them, first
        // (wget only reads a challenge that starts with it).
        let image = t.pasted || t.path.ends_with(".jpg") || t.path.ends_with(".mjpeg");
        let challenge = if image { "Basic realm=\"camjobd\", Bearer" } else { "Bearer" };
        Err(Box::new(
            Response::from(ApiError::new(Code::Unauthorized, what))
                .with(WWW_AUTHENTICATE, HeaderValue::from_static(challenge)),
        ))
    }
}

/// A page on another site posting here (a form, a text/plain fetch): browsers send its Origin,
/// which never names us. Scripts and curl send none. Reads pass.
fn origin(headers: &HeaderMap, t: &Target<'_>) -> Result<(), Box<Response>> {
    if t.read || same_origin(headers) {
        return Ok(());
    }
    let msg = "writes from pages of other origins are refused (the Origin header does not match Host)";
    Err(Box::new(ApiError::new(Code::CrossOrigin, msg).into()))
}

/// The names a request's `Host` may carry besides IP addresses and `localhost`: the machine's
/// host name, `<hostname>.local`, the host of `mqtt.http_url` and `http.allowed_hosts`.
#[derive(Debug, Default)]
struct OwnNames(Vec<String>);

impl OwnNames {
    fn new(config: &crate::config::Config) -> OwnNames {
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
    fn list(&self) -> String {
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
fn host_allowed(headers: &HeaderMap, own: &OwnNames) -> bool {
    let Some(host) = headers.get(HOST) else { return true };
    let Ok(host) = std::str::from_utf8(host.as_bytes()) else { return false };
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
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).map(HeaderValue::as_bytes) else { return true };
    let Some(host) = headers.get(HOST).map(HeaderValue::as_bytes) else { return false };
    let authority = origin.splitn(2, |&b| b == b':').nth(1).and_then(|rest| rest.strip_prefix(b"//"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The credentials of an `Authorization` header with `scheme` (case-insensitive, RFC 7235).
fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a [u8]> {
    let h = headers.get(AUTHORIZATION)?.as_bytes();
    let n = scheme.len();
    (h.len() > n && h[..n].eq_ignore_ascii_case(scheme.as_bytes()) && h[n] == b' ').then(|| h[n + 1..].trim_ascii())
}

/// Compares the bearer token in constant time (for equal lengths).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    credentials(headers, "Bearer").is_some_and(|given| crate::config::is_token(given, token))
}

/// HTTP Basic with any user name and the token as the password (what Home Assistant's
/// `mjpeg` camera and OctoPrint's snapshot fetch send). Decoded into a fixed buffer.
fn basic_authorized(headers: &HeaderMap, token: &str) -> bool {
    credentials(headers, "Basic").is_some_and(|encoded| crate::config::basic_has_token(encoded, token))
}

/// The `camjobd_token` cookie (percent-encoded by the dashboard), compared in constant time.
fn cookie_authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(h) = headers.get(COOKIE).map(HeaderValue::as_bytes) else { return false };
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

    fn allowed(host: Option<&str>, own: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert("host", h.parse().unwrap());
        }
        host_allowed(&headers, &OwnNames(own.iter().map(|s| s.to_string()).collect()))
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
