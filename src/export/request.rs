//! The body of `POST /api/exports` turned into a checked [`Spec`], and the texts a request
//! and a download carry: times (Unix seconds, RFC 3339, a UTC day) and the download's name.
//! Kept apart from the queue so that every refusal of a bad request is in one place, in the
//! order a client sees them.

use serde::Deserialize;

use super::record::{Kind, Spec};
use super::Refusal;
use crate::config::{ExportsConfig, TimelapseConfig};
use crate::status::{CameraShared, Shared};

/// The request body of `POST /api/exports`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewExport {
    camera: String,
    from: serde_json::Value,
    to: serde_json::Value,
    kind: Kind,
    fps: Option<u32>,
    max_frames: Option<u32>,
}

/// Checks a request body against the cameras, the store and `exports`; nothing is queued.
pub(super) fn parse(body: &[u8], shared: &Shared, cfg: &ExportsConfig) -> Result<Spec, Refusal> {
    let req: NewExport = serde_json::from_slice(body).map_err(|e| {
        Refusal::BadJson(format!(
            "export body: {e}; expected {{\"camera\": NAME, \"from\": TIME, \"to\": TIME, \"kind\": \"archive\"|\"timelapse\"}}"
        ))
    })?;
    let cam = shared.camera_index(&req.camera).map(|i| &shared.cameras[i]).ok_or_else(|| {
        Refusal::BadValue(format!("camera: no camera named {:?}; GET /api/status lists them", req.camera))
    })?;
    let from = parse_time(&req.from).map_err(|m| Refusal::BadValue(format!("from: {m}")))?;
    let to = parse_time(&req.to).map_err(|m| Refusal::BadValue(format!("to: {m}")))?;
    if from >= to {
        return Err(Refusal::BadRange(format!(
            "the range is empty or inverted: from ({from}) must be before to ({to})"
        )));
    }
    check_options(&req, &cfg.timelapse)?;
    let snapshots = count_stored(cam, req.kind, from, to, cfg.max_bytes)?;
    let t = &cfg.timelapse;
    let (fps, max_frames) = match req.kind {
        Kind::Timelapse => (Some(req.fps.unwrap_or(t.fps)), Some(req.max_frames.unwrap_or(t.max_frames))),
        Kind::Archive => (None, None),
    };
    Ok(Spec { camera: cam.name.clone(), kind: req.kind, from, to, fps, max_frames, snapshots })
}

/// `fps` and `max_frames`: timelapse only, within their bounds.
fn check_options(req: &NewExport, t: &TimelapseConfig) -> Result<(), Refusal> {
    if req.kind == Kind::Archive && (req.fps.is_some() || req.max_frames.is_some()) {
        return Err(Refusal::BadValue("fps and max_frames apply to timelapse exports only".into()));
    }
    if req.fps.is_some_and(|f| !(1..=50).contains(&f)) {
        return Err(Refusal::BadValue("fps must be from 1 to 50".into()));
    }
    if req.max_frames.is_some_and(|n| !(2..=t.max_frames).contains(&n)) {
        return Err(Refusal::BadValue(format!(
            "max_frames must be from 2 to {} (exports.timelapse.max_frames)",
            t.max_frames
        )));
    }
    Ok(())
}

/// The snapshots stored in the range: at least one, and (an archive) within `max_bytes`.
fn count_stored(cam: &CameraShared, kind: Kind, from: f64, to: f64, max_bytes: u64) -> Result<u64, Refusal> {
    let (count, bytes) = cam.stored.count_range(from, to, u64::MAX);
    if count == 0 {
        let (oldest, newest) = (cam.stored.oldest(), cam.stored.newest());
        let have = match (oldest, newest) {
            (Some(a), Some(b)) => format!("stored snapshots span {:.0} to {:.0}", a.captured_at, b.captured_at),
            _ if !cam.config.store.enabled => "it does not store snapshots (its store.enabled is false)".into(),
            _ => "it has no stored snapshots yet".into(),
        };
        return Err(Refusal::EmptyRange(format!("camera {} has no stored snapshot in that range; {have}", cam.name)));
    }
    // A tar costs the files plus a 512-byte header each (and padding).
    let estimate = bytes + count * 1024;
    if kind == Kind::Archive && estimate > max_bytes {
        return Err(Refusal::TooLarge(format!(
            "that range holds {} MiB of snapshots, more than exports.max_bytes ({} MiB): choose a shorter range or a timelapse",
            estimate >> 20,
            max_bytes >> 20
        )));
    }
    Ok(count)
}

/// `camjobd-<camera>-<yyyymmddThhmmssZ>-<id>.<ext>`.
pub(super) fn download_name(camera: &str, kind: Kind, from: f64, id: u64) -> String {
    let secs = from.max(0.0) as u64;
    let day = crate::index::day_name((secs / 86_400) as u32).replace('-', "");
    let t = secs % 86_400;
    format!("camjobd-{camera}-{day}T{:02}{:02}{:02}Z-{id}.{}", t / 3600, t / 60 % 60, t % 60, kind.ext())
}

/// A time in a request: Unix seconds (a number), or RFC 3339 text
/// (`2026-11-23T08:00:00Z`, `2026-11-23T09:00:00+01:00`), or a UTC day (`2026-11-23`).
pub fn parse_time(v: &serde_json::Value) -> Result<f64, String> {
    const HINT: &str = "use Unix seconds or RFC 3339 like \"2026-11-23T08:00:00Z\" or a day like \"2026-11-23\"";
    // 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z, whichever way it is written.
    let in_range = |t: f64| t.is_finite() && (0.0..=253_402_300_799.0).contains(&t);
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(t) if in_range(t) => Ok(t),
            _ => Err(format!("{n} is out of range; {HINT}")),
        },
        serde_json::Value::String(s) => match parse_rfc3339(s) {
            Some(t) if in_range(t) => Ok(t),
            Some(_) => Err(format!("{s:?} is before 1970 or after 9999 in UTC; {HINT}")),
            None => Err(format!("{s:?} is not a time; {HINT}")),
        },
        other => Err(format!("{other} is not a time; {HINT}")),
    }
}

fn parse_rfc3339(s: &str) -> Option<f64> {
    if s.len() == 10 {
        return Some(f64::from(crate::index::parse_day(s)?) * 86_400.0);
    }
    // RFC 3339 allows a space for the `T` (section 5.6, NOTE).
    let spaced = s.as_bytes().get(10) == Some(&b' ');
    let text = if spaced { std::borrow::Cow::Owned(format!("{}T{}", &s[..10], &s[11..])) } else { s.into() };
    let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_requests() {
        assert_eq!(parse_time(&json!(1_795_449_316)), Ok(1_795_449_316.0));
        assert_eq!(parse_time(&json!(12.5)), Ok(12.5));
        assert_eq!(parse_time(&json!("1970-01-02")), Ok(86_400.0));
        assert_eq!(parse_time(&json!("1970-01-01T01:00:00Z")), Ok(3600.0));
        assert_eq!(parse_time(&json!("1970-01-01T01:00:00.25Z")), Ok(3600.25));
        assert_eq!(parse_time(&json!("1970-01-01T02:00:00+01:00")), Ok(3600.0));
        assert_eq!(parse_time(&json!("1970-01-01T00:00:00-01:30")), Ok(5400.0));
        assert_eq!(parse_time(&json!("1970-01-01 01:00:00z")), Ok(3600.0), "a space, a small z");
        for bad in [
            json!(-1),
            json!("yesterday"),
            json!("2026-11-23T25:00:00Z"),
            json!("2026-11-23T10:00:00"),
            json!("2026-02-30"),
            json!("2026-02-30T10:00:00Z"),
            json!("2026-1-23"),
            json!(true),
            // Before the epoch once the offset is applied.
            json!("1970-01-01T00:00:00+01:00"),
            json!("9999-12-31T23:59:59-01:00"),
        ] {
            let e = parse_time(&bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn download_names_carry_camera_time_and_id() {
        assert_eq!(download_name("cam0", Kind::Archive, 3661.0, 7), "camjobd-cam0-19700101T010101Z-7.tar");
        assert_eq!(download_name("door", Kind::Timelapse, 86_400.0, 12), "camjobd-door-19700102T000000Z-12.gif");
    }
}
