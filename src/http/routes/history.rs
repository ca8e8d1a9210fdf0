//! `GET /api/cameras/{name}/history`: the camera's last day, one point a minute.

use std::io::Write;

use http::StatusCode;
use serde::Serialize;

use super::super::error::{ApiError, Code};
use super::super::reply::{json_bytes, Response};
use super::query::params;
use crate::lifecycle::JobState;
use crate::status::history::Point;
use crate::status::CameraShared;

/// Points copied out of the ring per lock (16 bytes each, on the stack).
const CHUNK: usize = 64;

/// A point as the API writes it.
#[derive(Serialize)]
struct PointView {
    t: u32,
    fps: f64,
    frames: u32,
    drops: u32,
    state: JobState,
}

/// `{"camera", "interval_s", "capacity", "points": [{"t", "fps", "frames", "drops", "state"}]}`,
/// oldest first, closed intervals only (the one in progress is not there yet);
/// `?since=T` keeps the points whose interval starts at `T` (Unix seconds) or later.
pub(super) fn history(query: &str, cam: &CameraShared) -> Result<Response, ApiError> {
    let mut since = 0.0;
    for (k, v) in params(query, &["since"])? {
        since = match v.parse::<f64>() {
            Ok(t) if t.is_finite() && t >= 0.0 => t,
            _ => {
                let msg = format!("{k}={v:?} must be a time in Unix seconds (a number >= 0)");
                return Err(ApiError::new(Code::BadQuery, msg));
            }
        };
    }
    let h = &cam.history;
    let end = h.pushed();
    // About 70 bytes a point: sized once for a full ring, so the buffer never grows by copying.
    let mut out = Vec::with_capacity(128 + 72 * end.min(h.capacity() as u64) as usize);
    out.extend_from_slice(b"{\"camera\":");
    serde_json::to_writer(&mut out, &cam.name).expect("a string");
    let _ = write!(out, ",\"interval_s\":{},\"capacity\":{},\"points\":[", h.interval_s(), h.capacity());
    // A chunk at a time, so that the lock is never held for the whole ring; from seq onwards,
    // so that a minute closed meanwhile neither repeats a point nor leaves a hole.
    let mut chunk = [Point::EMPTY; CHUNK];
    let (mut seq, mut first) = (0, true);
    loop {
        let (from, n) = h.copy(seq, end, &mut chunk);
        if n == 0 {
            break;
        }
        for p in chunk[..n].iter().filter(|p| f64::from(p.t) >= since) {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            let view = PointView { t: p.t, fps: p.fps(), frames: p.frames, drops: p.drops, state: p.state };
            serde_json::to_writer(&mut out, &view).expect("plain data");
        }
        seq = from + n as u64;
    }
    out.extend_from_slice(b"]}");
    Ok(json_bytes(StatusCode::OK, out))
}
