//! Query strings: the strict parameter lists of the API and the lenient reading of the URLs
//! people paste (unknown parameters and bare cache-busters ignored).

use crate::http::error::{ApiError, Code};
use crate::http::server::Response;

/// The value of `key` in a query, ignoring every other parameter (and bare cache-busters such
/// as `?1700000000000`), as the pasted URLs must.
pub(super) fn lenient<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `?fps=N` of the API's stream route: 1 to 120, a bad value is a 400. Other parameters and
/// bare cache-busters are ignored, as on every route a viewer pastes (the contract says so:
/// players append `?t=<time>` to defeat caches).
pub(super) fn stream_fps(query: &str) -> Result<Option<u32>, Response> {
    let mut fps = None;
    for (_, v) in query.split('&').filter_map(|p| p.split_once('=')).filter(|(k, _)| *k == "fps") {
        match v.parse::<u32>() {
            Ok(n @ 1..=120) => fps = Some(n),
            _ => {
                return Err(Response::from(ApiError::new(
                    Code::BadQuery,
                    format!("fps={v:?} must be a whole number from 1 to 120"),
                )))
            }
        }
    }
    Ok(fps)
}

/// The `key=value` pairs of a query string, each key one of `allowed` (else a 400 naming it).
/// Values are not percent-decoded: every parameter here is a number or a camera name.
pub(super) fn params<'a>(query: &'a str, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, Response> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&k) {
            let msg = format!("unknown query parameter {k:?}; use {}", allowed.join(" and "));
            return Err(Response::from(ApiError::new(Code::BadQuery, &msg)));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// A sequence number parameter (`after`, `before`).
pub(super) fn seq_param(key: &str, v: &str) -> Result<u64, Response> {
    v.parse().map_err(|_| {
        Response::from(ApiError::new(
            Code::BadQuery,
            format!("{key}={v:?} is not a sequence number (a whole number >= 0)"),
        ))
    })
}

/// A `limit` from 1 to `max`; larger values (even beyond u64) are capped, not refused.
pub(super) fn limit_param(v: &str, max: usize) -> Result<usize, Response> {
    let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n.min(max as u64) as usize),
        Err(_) if digits => Ok(max),
        _ => Err(Response::from(ApiError::new(
            Code::BadQuery,
            format!("limit={v:?} must be a whole number from 1 to {max}"),
        ))),
    }
}
