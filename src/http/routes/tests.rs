//! The routes against an API over a default config (one camera with video, RTSP, an MQTT link
//! that never connects), without a server.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use super::*;

fn api(dir: &tempfile::TempDir) -> Api {
    let mut config = crate::config::Config::default();
    config.storage.dir = dir.path().to_path_buf();
    // Nobody serves the command channel.
    let (tx, _) = crossbeam_channel::bounded(1);
    let shared = Arc::new(Shared::new(config, tx));
    let exports = Arc::new(Exports::open(Arc::clone(&shared)).expect("an exports directory"));
    // The real WebRTC thread, on a free port (it runs until the test process ends).
    let cameras = shared.webrtc_cameras();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let settings = crate::webrtc::Settings {
        cameras,
        camera_count: shared.cameras.len(),
        socket,
        max_sessions: 2,
        beat: Box::new(|| {}),
    };
    let (_, webrtc) = crate::webrtc::start(settings, Arc::clone(&shared.webrtc), Stop::new()).unwrap();
    Api::new(shared, exports, Stop::new())
        .with_mqtt(Arc::new(crate::mqtt::Stats::new("mqtt://broker:1883")))
        .with_webrtc(webrtc)
}

fn get(target: &str) -> Request {
    http::Request::get(target).body(Bytes::new()).unwrap()
}

async fn body(r: Response) -> Bytes {
    r.into_body().collect().await.unwrap().to_bytes()
}

async fn json_of(r: Response) -> Value {
    serde_json::from_slice(&body(r).await).unwrap()
}

/// JSON fields whose metric is named otherwise, or that are no counter (`None`, with why).
const NAMED_OTHERWISE: &[(&str, &str, Option<&str>)] = &[
    ("", "uptime_s", Some("uptime_seconds")),
    ("", "now", None),                                             // the wall clock
    ("", "log_lines_suppressed", Some("log_lines_dropped_total")), // counted in it
    ("rtsp", "bind", None),
    ("rtsp", "playing", Some("rtsp_sessions_playing")),
    ("rtsp", "skipped", Some("rtsp_access_units_skipped_total")),
    ("rtsp", "panics", Some("rtsp_task_panics_total")),
    ("webrtc", "udp", None),
    ("", "moonraker", None), // null: Moonraker is not configured here
    ("controls", "count", None),
    ("controls", "open", None),
    ("controls", "saved", None),
    ("mqtt", "published", Some("mqtt_messages_published_total")),
    ("mqtt", "dropped", Some("mqtt_messages_dropped_total")),
    ("mqtt", "queued", Some("mqtt_outbox_messages")),
    ("mqtt", "last_error", None),
    ("store", "enabled", None),          // the config's
    ("store", "change_threshold", None), // the config's
    ("store", "last_change", None),      // a score, not a counter
    ("store", "at_start", None),         // what the start-up scan found (an object once set)
    ("store", "write_ms_mean", Some("store_write_seconds_total")),
    ("store", "write_ms_max", Some("store_write_seconds_max")),
    ("live", "copies_missed", Some("live_copies_missed_total")),
    ("job", "id", Some("job_id")),
    ("job", "snapshots", Some("snapshots_kept_total")),
    ("job", "last_frame_at", Some("seconds_since_last_frame")),
    ("job", "reason", None),
    ("job", "started_at", None),
    ("job", "ended_at", None),
    ("job", "state_since", None),
    ("job", "max_frames", None),     // the job's limits
    ("job", "max_duration_s", None), // the job's limits
    ("video", "encode_ms_mean", Some("h264_encode_seconds_total")),
    ("video", "bitrate_kbps_mean", None), // h264_bytes_total over time
    ("video", "skipped", Some("h264_frames_skipped_total")),
    ("video", "failed", Some("h264_frames_failed_total")),
    ("exports", "max_queued", Some("exports_queue_limit")),
];

/// Every counter `/api/status` and `/api/exports` report (http, streams, RTSP, MQTT, exports,
/// store, jobs) has its family in `/metrics`: `<prefix><key>`, `<prefix><key>_total`, or the
/// name [`NAMED_OTHERWISE`] gives. A counter added to the JSON alone fails here.
#[tokio::test(flavor = "current_thread")]
async fn every_counter_in_the_json_has_its_metric() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(&dir);
    let status = json_of(api.status()).await;
    let exports = json_of(api.exports(&get("/api/exports"))).await;
    let metrics = String::from_utf8(body(api.metrics()).await.to_vec()).unwrap();
    let cam = &status["cameras"][0];
    let sections = [
        ("", &status, ""),
        ("http", &status["http"], "http_"),
        ("rtsp", &status["rtsp"], "rtsp_"),
        ("webrtc", &status["webrtc"], "webrtc_"),
        ("webrtc.ice", &status["webrtc"]["ice"], "webrtc_ice_"),
        ("webrtc.refused", &status["webrtc"]["refused"], "webrtc_refused_"),
        ("webrtc.ended", &status["webrtc"]["ended"], "webrtc_ended_"),
        ("mqtt", &status["mqtt"], "mqtt_"),
        ("store", &cam["store"], "store_"),
        ("live", &cam["live"], ""),
        ("job", &cam["job"], ""),
        ("video", &cam["video"], "h264_"),
        ("controls", &cam["controls"], "controls_"),
        ("exports", &exports, "exports_"),
    ];
    let mut missing = Vec::new();
    for (section, object, prefix) in sections {
        let object = object.as_object().unwrap_or_else(|| panic!("no {section:?} in the JSON"));
        // Names and lists are no counters; nulls are (a counter not yet counted).
        for (key, _) in object.iter().filter(|(_, v)| !(v.is_string() || v.is_array() || v.is_object())) {
            let names = match NAMED_OTHERWISE.iter().find(|(s, k, _)| *s == section && k == key) {
                Some((_, _, None)) => continue,
                Some((_, _, Some(name))) => vec![name.to_string()],
                None => vec![format!("{prefix}{key}"), format!("{prefix}{key}_total")],
            };
            if !names.iter().any(|n| metrics.contains(&format!("# TYPE camjobd_{n} "))) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "in the JSON but not in /metrics: {missing:?}");
    assert!(metrics.contains("camjobd_http_connections_evicted_total 0\n"), "{metrics}");
}

#[test]
fn start_bodies() {
    let status = |r: Result<JobLimits, ApiError>| r.err().map(|e| e.code.status().as_u16());
    assert_eq!(parse_limits(b"").ok(), Some(JobLimits::default()));
    assert_eq!(parse_limits(b"{\"max_frames\":3}").ok(), Some(JobLimits { max_frames: Some(3), max_duration_s: None }));
    assert_eq!(status(parse_limits(b"{\"max_frames\":0}")), Some(400));
    assert_eq!(status(parse_limits(b"{\"max_frames\":18446744073709551615}")), Some(400));
    assert_eq!(status(parse_limits(b"{\"max_duration_s\":315360001}")), Some(400));
    assert!(parse_limits(b"{\"max_duration_s\":315360000}").is_ok());
    assert_eq!(status(parse_limits(b"{\"frames\":3}")), Some(400));
    assert_eq!(status(parse_limits(b"{oops")), Some(400));
}

/// Each path once: a method the route does not take is 405 with the table's `Allow`; a path
/// not in the table 404 — after the layers, as every request.
#[tokio::test(flavor = "current_thread")]
async fn the_table_answers_404_and_405() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(&dir);
    let ask = |method: Method, target: &str| {
        let mut req = get(target);
        *req.method_mut() = method;
        req
    };
    for (method, target, allow) in [
        (Method::POST, "/api/status", "GET, HEAD"),
        (Method::GET, "/api/cameras/cam0/start", "POST"),
        (Method::DELETE, "/api/cameras/cam0", "GET, HEAD"),
        (Method::PUT, "/api/exports", "GET, HEAD, POST"),
        (Method::POST, "/api/exports/1", "GET, HEAD, DELETE"),
        (Method::POST, "/?action=stream", "GET, HEAD"),
        (Method::DELETE, "/snapshot", "GET, HEAD"),
        (Method::GET, "/api/cameras/cam0/whep", "POST, OPTIONS"),
        (Method::POST, "/api/cameras/cam0/whep/0123456789abcdef0123456789abcdef", "PATCH, DELETE, OPTIONS"),
    ] {
        let r = api.route(&ask(method.clone(), target)).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {target}");
        assert_eq!(r.headers()[ALLOW], allow, "{method} {target}");
    }
    for target in ["/nope", "/api/cameras/cam0/nope", "/api/exports/x", "/api/cameras/cam0/snapshots/x.jpg"] {
        let r = api.route(&get(target)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{target}");
        assert_eq!(json_of(r).await["error"]["message"], format!("no such endpoint: {target}"));
    }
    let r = api.route(&get("/api/cameras/nope/latest.jpg")).await;
    assert_eq!(json_of(r).await["error"]["code"], "not_found");
    let r = api.route(&get("/index.html?action=stream")).await;
    assert_eq!(r.headers()[http::header::CONTENT_TYPE], "text/html; charset=utf-8", "only / takes an action");
}
