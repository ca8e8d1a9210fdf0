//! Snapshots over HTTP: `latest.jpg` from the live view's copy, the stored-snapshot list and
//! files (read beneath `storage.dir` without following a link), and `ETag` matching.

use crate::http::error::{ApiError, Code};
use crate::http::server::{Body, Request, Response};
use crate::status::{CameraShared, Shared};

use serde_json::json;

use super::not_found;
use super::query::{limit_param, params, seq_param};

/// `latest.jpg`: the pool buffer itself is the body (no copy); `ETag` is the snapshot seq.
pub(super) fn latest_jpg(req: &Request<'_>, cam: &CameraShared) -> Response {
    let Some(frame) = cam.snapshots.latest() else {
        return Response::from(ApiError::new(Code::NoSnapshot, format!("camera {} has no snapshot yet", cam.name)));
    };
    let etag = format!("\"{}\"", frame.seq);
    let cached = req.header("If-None-Match").is_some_and(|v| etag_matches(v, frame.seq));
    let headers = vec![("ETag", etag), ("Cache-Control", "no-cache".into())];
    if cached {
        return Response { status: 304, content_type: "image/jpeg", headers, body: Body::Empty };
    }
    match cam.live.copy_exact(&frame) {
        Some(copy) => Response { status: 200, content_type: "image/jpeg", headers, body: Body::Shared(copy) },
        None => copies_busy(),
    }
}

/// Every frame copy is held by slow readers: the named frame cannot be served now without
/// holding a capture buffer or allocating, so the reader is asked to come back.
fn copies_busy() -> Response {
    Response::from(ApiError::new(
        Code::Busy,
        "every frame copy is held by slow readers (http.frame_copies); try again in a moment",
    ))
    .with_header("Retry-After", "1".into())
}

/// Default and largest page of `GET .../snapshots`.
const SNAPSHOTS_DEFAULT_LIMIT: usize = 50;
/// See [`SNAPSHOTS_DEFAULT_LIMIT`].
const SNAPSHOTS_MAX_LIMIT: usize = 500;

/// `GET /api/cameras/{name}/snapshots?before=SEQ&limit=N`: the memory ring and the disk
/// together, newest first; `stored` says whether the file exists.
pub(super) fn snapshots(query: &str, cam: &CameraShared) -> Result<Response, Response> {
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
    Ok(Response::json(200, &json!({ "snapshots": out, "before_next": next })))
}

/// `GET /api/cameras/{name}/snapshots/{seq}.jpg`: from memory if it is the latest, else from
/// disk. The path is built from the parsed number only, so nothing can escape the store.
pub(super) fn snapshot_jpg(req: &Request<'_>, cam: &CameraShared, shared: &Shared, file: &str) -> Response {
    let seq = match file.strip_suffix(".jpg").filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())) {
        Some(d) => match d.parse::<u64>() {
            Ok(n) => n,
            Err(_) => return not_found(req.path),
        },
        None => return not_found(req.path),
    };
    let etag = format!("\"{seq}\"");
    let headers = vec![("ETag", etag), ("Cache-Control", "max-age=86400, immutable".into())];
    if req.header("If-None-Match").is_some_and(|v| etag_matches(v, seq)) {
        return Response { status: 304, content_type: "image/jpeg", headers, body: Body::Empty };
    }
    // The newest snapshot from memory, when a copy of it can be had; else from disk.
    if let Some(copy) = cam.snapshots.latest().filter(|f| f.seq == seq).and_then(|f| cam.live.copy_exact(&f)) {
        return Response { status: 200, content_type: "image/jpeg", headers, body: Body::Shared(copy) };
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
        Ok(bytes) => Response { status: 200, content_type: "image/jpeg", headers, body: Body::Bytes(bytes) },
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
