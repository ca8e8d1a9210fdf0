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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;
    use crate::status::Shared;

    fn answer(query: &str, cam: &CameraShared) -> Value {
        let r = history(query, cam).unwrap();
        let bytes = futures::executor::block_on(r.into_body().collect()).unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_full_ring_is_answered_oldest_first_and_since_filters_it() {
        let (tx, _) = crossbeam_channel::bounded(1);
        let shared = Shared::new(crate::config::Config::default(), tx);
        let cam = &shared.cameras[0];
        let h = &cam.history;
        assert_eq!((h.capacity(), h.interval_s()), (1440, 60), "no knob in the unit tests");
        assert_eq!(answer("", cam)["points"], serde_json::json!([]));
        // A day and an hour of minutes: the ring keeps the last day.
        let t0 = 1_765_000_020u32;
        h.note(JobState::Running);
        for i in 0..1500u32 {
            if i == 1000 {
                h.note(JobState::Recovering);
                h.note(JobState::Running);
            }
            h.close(t0 + 60 * i, 899, u64::from(i % 2), 60_000);
        }
        let started = std::time::Instant::now();
        let r = history("", cam).unwrap();
        let took = started.elapsed();
        let bytes = futures::executor::block_on(r.into_body().collect()).unwrap().to_bytes();
        println!("figures: a full ring answered in {took:?}, {} bytes", bytes.len());
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (v["camera"].as_str(), v["interval_s"].as_u64(), v["capacity"].as_u64()),
            (Some("cam0"), Some(60), Some(1440))
        );
        let points = v["points"].as_array().unwrap();
        assert_eq!(points.len(), 1440);
        assert_eq!(points[0]["t"], t0 + 60 * 60, "the oldest kept");
        assert!(points.windows(2).all(|w| w[1]["t"].as_u64() == w[0]["t"].as_u64().map(|t| t + 60)));
        assert_eq!(
            points[0],
            serde_json::json!({"t": t0 + 3600, "fps": 14.98, "frames": 899, "drops": 0, "state": "RUNNING"})
        );
        let rec: Vec<&Value> = points.iter().filter(|p| p["state"] == "RECOVERING").collect();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0]["t"], t0 + 60 * 1000);
        // ?since=: from that minute on; a fraction is fine.
        let last = t0 + 60 * 1499;
        let v = answer(&format!("since={}", last - 60), cam);
        assert_eq!(v["points"].as_array().unwrap().len(), 2);
        let v = answer(&format!("since={}.5", last - 60), cam);
        assert_eq!(v["points"].as_array().unwrap().len(), 1);
        for bad in ["since=x", "since=-1", "since=", "limit=3"] {
            let e = history(bad, cam).unwrap_err();
            assert_eq!(e.code, Code::BadQuery, "{bad}");
        }
    }
}
