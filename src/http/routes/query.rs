//! Query strings: the strict parameter lists of the API and the lenient reading of the URLs
//! people paste (unknown parameters and bare cache-busters ignored).

use crate::http::error::{ApiError, Code};

/// The value of `key` in a query, ignoring every other parameter (and bare cache-busters such
/// as `?1700000000000`), as the pasted URLs must.
pub(super) fn lenient<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `?fps=N` of the API's stream route: 1 to 120, a bad value is a 400. Other parameters and
/// bare cache-busters are ignored, as on every route a viewer pastes (the contract says so:
/// players append `?t=<time>` to defeat caches).
pub(super) fn stream_fps(query: &str) -> Result<Option<u32>, ApiError> {
    let mut fps = None;
    for (_, v) in query.split('&').filter_map(|p| p.split_once('=')).filter(|(k, _)| *k == "fps") {
        match v.parse::<u32>() {
            Ok(n @ 1..=120) => fps = Some(n),
            _ => return Err(ApiError::new(Code::BadQuery, format!("fps={v:?} must be a whole number from 1 to 120"))),
        }
    }
    Ok(fps)
}

/// The `key=value` pairs of a query string, each key one of `allowed` (else a 400 naming it).
/// Values are not percent-decoded: every parameter here is a number or a camera name.
pub(super) fn params<'a>(query: &'a str, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, ApiError> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&k) {
            let msg = format!("unknown query parameter {k:?}; use {}", allowed.join(" and "));
            return Err(ApiError::new(Code::BadQuery, msg));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// A sequence number parameter (`after`, `before`).
pub(super) fn seq_param(key: &str, v: &str) -> Result<u64, ApiError> {
    v.parse().map_err(|_| {
        ApiError::new(Code::BadQuery, format!("{key}={v:?} is not a sequence number (a whole number >= 0)"))
    })
}

/// A `limit` from 1 to `max`; larger values (even beyond u64) are capped, not refused.
pub(super) fn limit_param(v: &str, max: usize) -> Result<usize, ApiError> {
    let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n.min(max as u64) as usize),
        Err(_) if digits => Ok(max),
        _ => Err(ApiError::new(Code::BadQuery, format!("limit={v:?} must be a whole number from 1 to {max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_route_reads_fps_and_ignores_everything_else() {
        let fps = |q: &str| stream_fps(q).map_err(|e| e.code.status().as_u16());
        assert_eq!(fps(""), Ok(None));
        assert_eq!(fps("1700000000000"), Ok(None), "a bare cache-buster");
        assert_eq!(fps("&&"), Ok(None));
        assert_eq!(fps("speed=2"), Ok(None));
        assert_eq!(fps("fps"), Ok(None), "no value: not a parameter");
        assert_eq!(fps("t=1&fps=5"), Ok(Some(5)));
        assert_eq!(fps("fps=120&x=y"), Ok(Some(120)));
        for bad in ["fps=0", "fps=121", "fps=abc", "fps=", "fps=5&fps=abc"] {
            assert_eq!(fps(bad), Err(400), "{bad}");
        }
    }

    #[test]
    fn pasted_urls_take_their_key_and_nothing_else() {
        assert_eq!(lenient("1700000000000&camera=cam1&x=1", "camera"), Some("cam1"));
        assert_eq!(lenient("action=stream", "camera"), None);
    }
}
