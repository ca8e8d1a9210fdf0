//! Snapshots over HTTP: `latest.jpg` from the live view's copy, the stored-snapshot list and
//! files (read beneath `storage.dir` without following a link), and `ETag` matching.

use http::header::{HeaderValue, CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::StatusCode;
use serde_json::json;

use crate::http::error::{ApiError, Code};
use crate::http::reply::{json, no_body, with_body, Body, Request, Response, WithHeader};
use crate::http::stream::FrameBytes;
use crate::status::{CameraShared, Shared};

use super::not_found;
use super::query::{limit_param, params, seq_param};

/// `latest.jpg`: the pool buffer itself is the body (no copy); `ETag` is the snapshot seq.
pub(super) fn latest_jpg(req: &Request, cam: &CameraShared) -> Response {
    let Some(frame) = cam.snapshots.latest() else {
        return Response::from(ApiError::new(Code::NoSnapshot, format!("camera {} has no snapshot yet", cam.name)));
    };
    let r = if if_none_match(req, frame.seq) {
        no_body(StatusCode::NOT_MODIFIED)
    } else {
        match cam.live.copy_exact(&frame) {
            Some(copy) => with_body(StatusCode::OK, "image/jpeg", Body::shared(FrameBytes(copy))),
            None => return copies_busy(),
        }
    };
    r.with_text(ETAG, format!("\"{}\"", frame.seq)).with(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
}

/// Every frame copy is held by slow readers: the named frame cannot be served now without
/// holding a capture buffer or allocating, so the reader is asked to come back.
fn copies_busy() -> Response {
    Response::from(ApiError::new(
        Code::Busy,
        "every frame copy is held by slow readers (http.frame_copies); try again in a moment",
    ))
    .with(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Default and largest page of `GET .../snapshots`.
const SNAPSHOTS_DEFAULT_LIMIT: usize = 50;
/// See [`SNAPSHOTS_DEFAULT_LIMIT`].
const SNAPSHOTS_MAX_LIMIT: usize = 500;

/// `GET /api/cameras/{name}/snapshots?before=SEQ&limit=N`: the memory ring and the disk
/// together, newest first; `stored` says whether the file exists.
pub(super) fn snapshots(query: &str, cam: &CameraShared) -> Result<Response, ApiError> {
    let mut before = None;
    let mut limit = SNAPSHOTS_DEFAULT_LIMIT;
    for (k, v) in params(query, &["before", "limit"])? {
        match k {
            "before" => before = Some(seq_param(k, v)?),
            _ => limit = limit_param(v, SNAPSHOTS_MAX_LIMIT)?,
        }
    }
    let mut disk = Vec::with_capacity(limit);
    cam.stored.page(before, limit, &mut disk);
    let mut memory = Vec::with_capacity(limit.min(crate::ring::SNAPSHOT_RING));
    cam.snapshots.recent(before, limit, &mut memory);
    // Merge two newest-first lists by seq; the ring knows sizes, the disk knows what is kept.
    let ring = |m: &crate::ring::SnapshotMeta, stored: bool| json!({"seq": m.seq, "captured_at": m.captured_at, "bytes": m.bytes, "width": m.width, "height": m.height, "stored": stored});
    let dims = |v: u32| (v != 0).then_some(v);
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(limit);
    while out.len() < limit {
        let item = match (disk.get(i), memory.get(j)) {
            (Some(a), Some(b)) if a.seq == b.seq => {
                (i, j) = (i + 1, j + 1);
                let mut v = ring(b, true);
                v["change"] = json!(a.change);
                // The store's date wins: it is corrected after a wall-clock jump.
                v["captured_at"] = json!(a.captured_at);
                v
            }
            (Some(a), Some(b)) if b.seq > a.seq => {
                j += 1;
                ring(b, false)
            }
            (Some(a), _) => {
                i += 1;
                json!({"seq": a.seq, "captured_at": a.captured_at, "bytes": a.bytes, "width": dims(a.width),
                       "height": dims(a.height), "change": a.change, "stored": true})
            }
            (None, Some(b)) => {
                j += 1;
                ring(b, false)
            }
            (None, None) => break,
        };
        out.push(item);
    }
    let next = if out.len() == limit { out.last().and_then(|v| v["seq"].as_u64()) } else { None };
    Ok(json(StatusCode::OK, &json!({ "snapshots": out, "before_next": next })))
}

/// `GET /api/cameras/{name}/snapshots/{seq}.jpg`: from memory if it is the latest, else from
/// disk. The path is built from the parsed number only, so nothing can escape the store.
pub(super) fn snapshot_jpg(req: &Request, cam: &CameraShared, shared: &Shared, seq: &str) -> Response {
    let Some(seq) = seq.parse::<u64>().ok().filter(|_| seq.bytes().all(|b| b.is_ascii_digit())) else {
        return not_found(req.uri().path());
    };
    let found = |r: Response| {
        r.with_text(ETAG, format!("\"{seq}\""))
            .with(CACHE_CONTROL, HeaderValue::from_static("max-age=86400, immutable"))
    };
    if if_none_match(req, seq) {
        return found(no_body(StatusCode::NOT_MODIFIED));
    }
    // The newest snapshot from memory, when a copy of it can be had; else from disk.
    if let Some(copy) = cam.snapshots.latest().filter(|f| f.seq == seq).and_then(|f| cam.live.copy_exact(&f)) {
        return found(with_body(StatusCode::OK, "image/jpeg", Body::shared(FrameBytes(copy))));
    }
    let Some(s) = cam.stored.find(seq) else {
        return Response::from(ApiError::new(
            Code::NoSnapshot,
            format!("camera {} has no stored snapshot {seq}", cam.name),
        ));
    };
    let dir = &shared.config.storage.dir;
    let rel = crate::index::snapshot_rel(&cam.name, s.day, s.seq);
    let read = crate::sys::open_regular_beneath(dir, &rel).and_then(|mut f| {
        let mut bytes = Vec::with_capacity(s.bytes as usize);
        std::io::Read::read_to_end(&mut f, &mut bytes).map(|_| bytes)
    });
    match read {
        Ok(bytes) => found(with_body(StatusCode::OK, "image/jpeg", Body::full(bytes))),
        // A link or a FIFO where the snapshot should be: planted, never followed or served.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.kind() == std::io::ErrorKind::InvalidData => {
            shared.events.push(
                crate::events::EventKind::Error,
                &cam.name,
                None,
                None,
                format_args!(
                    "{} in storage.dir is not a regular file (a link or something planted there); not served",
                    rel.display()
                ),
            );
            Response::from(ApiError::new(
                Code::NoSnapshot,
                format!("snapshot {seq} of camera {} is not a regular file in storage.dir; refused", cam.name),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let msg = if crate::store::forget_missing(&shared.events, dir, cam, seq) {
                format!("snapshot {seq} of camera {} was deleted outside camjobd; it is no longer listed", cam.name)
            } else {
                // Deleted by retention between the lookup and the read.
                format!("snapshot {seq} of camera {} was just deleted by retention", cam.name)
            };
            Response::from(ApiError::new(Code::NoSnapshot, &msg))
        }
        Err(e) => Response::from(ApiError::new(Code::Store, format!("cannot read snapshot {seq}: {e}"))),
    }
}

/// Whether the request's `If-None-Match` names snapshot `seq`.
fn if_none_match(req: &Request, seq: u64) -> bool {
    req.headers().get(IF_NONE_MATCH).is_some_and(|v| etag_matches(v.as_bytes(), seq))
}

/// `If-None-Match` against a seq: a list of (weak or strong) tags, or `*`.
fn etag_matches(header: &[u8], seq: u64) -> bool {
    let Ok(text) = std::str::from_utf8(header) else { return false };
    text.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"').parse::<u64>() == Ok(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert!(etag_matches(b"\"5\"", 5));
        assert!(etag_matches(b"W/\"5\"", 5));
        assert!(etag_matches(b"\"1\", \"5\"", 5));
        assert!(etag_matches(b"*", 5));
        assert!(!etag_matches(b"\"6\"", 5));
        assert!(!etag_matches(b"\xff", 5));
    }
}
