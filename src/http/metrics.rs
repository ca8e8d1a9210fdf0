//! `GET /metrics` in the Prometheus text format (version 0.0.4), so a fleet of boards can be
//! watched by an existing Prometheus server. Everything here is read from published state and
//! `/proc/self`; nothing is computed per frame for it. The HTTP server's families come from its
//! counter registry ([`super::stats`]); the routes' tests check that every counter
//! `/api/status` reports has its family here.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::stats::Counts;
use crate::export::Exports;
use crate::lifecycle::JobState;
use crate::status::Shared;

/// Writes one metric family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP camjobd_{name} {help}\n# TYPE camjobd_{name} {kind}");
}

/// Metrics without labels: (name, type, help, value) each.
fn unlabelled<V: std::fmt::Display>(out: &mut String, rows: &[(&str, &str, &str, V)]) {
    for (name, kind, help, value) in rows {
        family(out, name, kind, help);
        let _ = writeln!(out, "camjobd_{name} {value}");
    }
}

/// Label values are camera names (`A-Z a-z 0-9 _ -`, checked by the config): no escaping needed.
fn sample(out: &mut String, name: &str, camera: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "camjobd_{name}{{camera=\"{camera}\"}} {value}");
}

/// The whole exposition.
pub fn render(
    shared: &Shared,
    http: Option<&Counts>,
    exports: &Exports,
    mqtt: Option<&crate::mqtt::Stats>,
    uptime_s: f64,
) -> String {
    let mut out = String::with_capacity(8192);
    cameras(&mut out, shared);
    globals(&mut out, shared, uptime_s);
    export_metrics(&mut out, exports);
    if let Some(h) = http {
        http_metrics(&mut out, h);
    }
    if let Some(m) = mqtt {
        mqtt_metrics(&mut out, m);
    }
    if shared.cameras.iter().any(|c| c.video.is_some()) && shared.config.rtsp.bind_addr().is_some() {
        rtsp_metrics(&mut out, &shared.rtsp);
    }
    if shared.cameras.iter().any(|c| c.video.is_some()) && shared.config.webrtc.enabled {
        webrtc_metrics(&mut out, &shared.webrtc);
    }
    moonraker_metrics(&mut out, shared.moonraker.view().as_ref());
    out
}

/// The Moonraker registration's families: whether it is on (always: `/api/status.moonraker` is
/// `null` when off), and its counters and states when it is.
fn moonraker_metrics(out: &mut String, v: Option<&crate::status::moonraker::View>) {
    family(out, "moonraker", "gauge", "1 when camjobd registers its cameras with Moonraker (moonraker configured).");
    let _ = writeln!(out, "camjobd_moonraker {}", u8::from(v.is_some()));
    let Some(v) = v else { return };
    let rows = [
        ("moonraker_attempts_total", "counter", "Sync rounds with Moonraker begun.", v.attempts as f64),
        ("moonraker_failures_total", "counter", "Sync rounds with Moonraker that failed.", v.failures as f64),
        (
            "moonraker_removed_total",
            "counter",
            "Webcams camjobd made earlier and removed from Moonraker (no camera registers them now).",
            v.removed as f64,
        ),
        (
            "moonraker_retry_in_seconds",
            "gauge",
            "Seconds until the next sync round after a failure; 0 when none is waited for.",
            v.retry_in_s().unwrap_or(0.0),
        ),
    ];
    unlabelled(out, &rows);
    family(out, "moonraker_state", "gauge", "1 for the state the Moonraker registration is in, 0 for the others.");
    for s in crate::status::moonraker::SyncState::ALL {
        let _ = writeln!(out, "camjobd_moonraker_state{{state=\"{}\"}} {}", s.as_str(), u8::from(v.state == s));
    }
    type Flag = fn(&crate::status::moonraker::Webcam) -> bool;
    let flags: [(&str, &str, Flag); 2] = [
        ("moonraker_webcam_registered", "1 while Moonraker lists the camera's webcam as camjobd sent it.", |w| {
            w.registered
        }),
        (
            "moonraker_webcam_conflict",
            "1 while a webcam camjobd did not make holds the camera's webcam name in Moonraker.",
            |w| w.conflict,
        ),
    ];
    for (name, help, get) in flags {
        family(out, name, "gauge", help);
        for w in &v.webcams {
            sample(out, name, &w.camera, u8::from(get(w)));
        }
    }
}

/// The per-camera families, labelled by camera.
fn cameras(out: &mut String, shared: &Shared) {
    let views: Vec<_> = shared.cameras.iter().map(|c| c.view()).collect();
    let now = crate::clock::unix_now();
    type Get = fn(&crate::status::CameraView) -> f64;
    let per_camera: [(&str, &str, &str, Get); 19] = [
        ("frames_captured_total", "counter", "Frames read from the camera in the current job.", |v| {
            v.job.frames_captured as f64
        }),
        (
            "frames_dropped_total",
            "counter",
            "Frames lost in the current job (oversize, malformed, no free buffer).",
            |v| v.job.frames_dropped as f64,
        ),
        (
            "frames_skipped_total",
            "counter",
            "Frames captured in the current job but skipped for the live view (every encoder busy or every buffer held).",
            |v| v.job.frames_skipped as f64,
        ),
        ("stream_clients", "gauge", "MJPEG stream clients of the camera now.", |v| v.live.stream_clients as f64),
        (
            "live_copies_missed_total",
            "counter",
            "Reads served an older frame because every copy buffer was held by a slow reader.",
            |v| v.live.copies_missed as f64,
        ),
        ("errors_total", "counter", "Source errors in the current job.", |v| v.job.errors_total as f64),
        ("recoveries_total", "counter", "Recoveries in the current job.", |v| v.job.recoveries as f64),
        ("snapshots_kept_total", "counter", "Snapshots kept in the current job.", |v| v.job.snapshots as f64),
        ("job_id", "gauge", "Id of the camera's current (or last) job; 0 before the first.", |v| {
            v.job.id.unwrap_or(0) as f64
        }),
        ("store_files", "gauge", "Snapshot files on disk.", |v| v.store.files as f64),
        ("store_bytes", "gauge", "Bytes of snapshot files on disk.", |v| v.store.bytes as f64),
        ("store_written_total", "counter", "Snapshot files written since start.", |v| v.store.written as f64),
        ("store_queued", "gauge", "Snapshots waiting for (or being written by) the store thread.", |v| {
            v.store.queued as f64
        }),
        ("store_dropped_total", "counter", "Snapshots not written because the store queue was full.", |v| {
            v.store.dropped as f64
        }),
        ("store_errors_total", "counter", "Failed snapshot writes.", |v| v.store.errors as f64),
        ("store_deleted_total", "counter", "Snapshot files deleted by retention.", |v| v.store.deleted as f64),
        ("store_unchanged_total", "counter", "Snapshots skipped by keep: changed.", |v| v.store.unchanged as f64),
        ("store_write_seconds_total", "counter", "Time spent writing snapshot files (with fsync if configured).", |v| {
            v.store.write_ms_mean.unwrap_or(0.0) * v.store.written as f64 / 1000.0
        }),
        ("store_write_seconds_max", "gauge", "The slowest snapshot file write since start.", |v| {
            v.store.write_ms_max / 1000.0
        }),
    ];
    for (name, kind, help, get) in per_camera {
        family(out, name, kind, help);
        for v in &views {
            sample(out, name, &v.camera, get(v));
        }
    }
    family(out, "seconds_since_last_frame", "gauge", "Seconds since the last good frame; absent before the first.");
    for v in &views {
        if let Some(t) = v.job.last_frame_at {
            sample(out, "seconds_since_last_frame", &v.camera, format_args!("{:.3}", (now - t).max(0.0)));
        }
    }
    video(out, &views);
    controls(out, shared);
    family(out, "job_state", "gauge", "1 for the state the camera's job is in, 0 for the others.");
    for v in &views {
        for s in JobState::ALL {
            let on = u8::from(v.job.state == s);
            let _ = writeln!(out, "camjobd_job_state{{camera=\"{}\",state=\"{}\"}} {on}", v.camera, s.as_str());
        }
    }
}

/// The control-change families (`/api/status` `cameras[].controls`).
fn controls(out: &mut String, shared: &Shared) {
    use std::sync::atomic::Ordering::Relaxed;
    type Get = fn(&crate::status::controls::Counters) -> u64;
    let families: [(&str, &str, Get); 5] = [
        ("controls_sets_total", "Control changes handed to the camera.", |c| c.sets.load(Relaxed)),
        ("controls_refused_busy_total", "Control changes refused: too many a second, or changes waiting.", |c| {
            c.refused_busy.load(Relaxed)
        }),
        ("controls_failed_total", "Control values the camera refused.", |c| c.failed.load(Relaxed)),
        ("controls_restarts_total", "Camera restarts to apply control changes (libcamera).", |c| {
            c.restarts.load(Relaxed)
        }),
        ("controls_save_errors_total", "Failed writes of a camera's kept control values (retried).", |c| {
            c.save_errors.load(Relaxed)
        }),
    ];
    for (name, help, get) in families {
        family(out, name, "counter", help);
        for c in &shared.cameras {
            sample(out, name, &c.name, get(&c.controls.counters));
        }
    }
}

/// The H.264 families, for the cameras with `video`.
fn video(out: &mut String, views: &[crate::status::CameraView]) {
    type Get = fn(&crate::h264::stage::VideoView) -> f64;
    let families: [(&str, &str, &str, Get); 7] = [
        ("h264_watchers", "gauge", "RTSP clients watching the camera's H.264 now.", |v| f64::from(v.watchers)),
        ("h264_frames_total", "counter", "Frames encoded to H.264 since start.", |v| v.frames as f64),
        ("h264_keyframes_total", "counter", "H.264 keyframes (IDR) since start.", |v| v.keyframes as f64),
        ("h264_bytes_total", "counter", "Bytes of H.264 encoded since start.", |v| v.bytes as f64),
        ("h264_encode_seconds_total", "counter", "Time spent encoding H.264.", |v| {
            v.encode_ms_mean.unwrap_or(0.0) * v.frames as f64 / 1000.0
        }),
        ("h264_frames_skipped_total", "counter", "Frames not encoded: the encoder was busy.", |v| v.skipped as f64),
        ("h264_frames_failed_total", "counter", "Frames that could not be encoded or kept.", |v| v.failed as f64),
    ];
    if views.iter().all(|v| v.video.is_none()) {
        return;
    }
    for (name, kind, help, get) in families {
        family(out, name, kind, help);
        for v in views {
            if let Some(video) = &v.video {
                sample(out, name, &v.camera, get(video));
            }
        }
    }
}

/// The RTSP server's families.
fn rtsp_metrics(out: &mut String, r: &crate::rtsp::Stats) {
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    let rows = [
        ("rtsp_connections", "gauge", "RTSP connections open now.", g(&r.connections)),
        ("rtsp_sessions_playing", "gauge", "RTSP sessions playing now.", g(&r.playing)),
        ("rtsp_refused_total", "counter", "RTSP connections refused at rtsp.max_clients.", g(&r.refused)),
        ("rtsp_packets_total", "counter", "RTP packets sent, all clients.", g(&r.packets)),
        ("rtsp_bytes_total", "counter", "RTP bytes sent, all clients.", g(&r.bytes)),
        ("rtsp_access_units_skipped_total", "counter", "Frames a client skipped after falling behind.", g(&r.skipped)),
        (
            "rtsp_packets_dropped_total",
            "counter",
            "RTP packets not sent to UDP clients (buffer full).",
            g(&r.packets_dropped),
        ),
        ("rtsp_task_panics_total", "counter", "RTSP connections cut by a panic in their task (a bug).", g(&r.panics)),
    ];
    unlabelled(out, &rows);
}

/// The WebRTC server's families.
fn webrtc_metrics(out: &mut String, w: &crate::webrtc::Stats) {
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    let rows = [
        ("webrtc_sessions", "gauge", "WebRTC (WHEP) sessions open now.", g(&w.sessions)),
        ("webrtc_playing", "gauge", "WebRTC sessions whose media flows (viewers).", g(&w.playing)),
        ("webrtc_ice_checking", "gauge", "WebRTC sessions whose ICE is not connected yet.", g(&w.checking)),
        ("webrtc_ice_connected", "gauge", "WebRTC sessions whose ICE is connected.", g(&w.connected)),
        ("webrtc_offers_total", "counter", "WHEP offers answered (sessions made).", g(&w.offers)),
        ("webrtc_refused_full_total", "counter", "WHEP offers refused at webrtc.max_sessions.", g(&w.refused_full)),
        (
            "webrtc_refused_offer_total",
            "counter",
            "WHEP offers refused as malformed or unplayable.",
            g(&w.refused_offer),
        ),
        ("webrtc_evicted_total", "counter", "WebRTC sessions that never started, ended to make room.", g(&w.evicted)),
        ("webrtc_ended_deleted_total", "counter", "WebRTC sessions ended by DELETE.", g(&w.ended_deleted)),
        ("webrtc_ended_ice_total", "counter", "WebRTC sessions whose ICE failed or timed out.", g(&w.ended_ice)),
        ("webrtc_ended_silent_total", "counter", "WebRTC sessions whose viewer went silent.", g(&w.ended_silent)),
        ("webrtc_ended_closed_total", "counter", "WebRTC sessions the viewer closed.", g(&w.ended_closed)),
        ("webrtc_ended_error_total", "counter", "WebRTC sessions ended by an error (a bug).", g(&w.ended_error)),
        ("webrtc_frames_sent_total", "counter", "Frames written to WebRTC sessions, all together.", g(&w.frames_sent)),
        (
            "webrtc_frames_skipped_total",
            "counter",
            "Frames a WebRTC session skipped to a keyframe.",
            g(&w.frames_skipped),
        ),
        ("webrtc_packets_total", "counter", "UDP datagrams sent by the WebRTC server.", g(&w.packets)),
        ("webrtc_bytes_total", "counter", "UDP bytes sent by the WebRTC server.", g(&w.bytes)),
        (
            "webrtc_packets_dropped_total",
            "counter",
            "UDP datagrams not sent: the socket was full.",
            g(&w.packets_dropped),
        ),
        ("webrtc_packets_unmatched_total", "counter", "UDP datagrams no session took.", g(&w.packets_unmatched)),
        (
            "webrtc_keyframe_requests_total",
            "counter",
            "Keyframe requests (PLI, FIR) from viewers.",
            g(&w.keyframe_requests),
        ),
    ];
    unlabelled(out, &rows);
}

/// Process-wide families: clock, process, uptime, log.
fn globals(out: &mut String, shared: &Shared, uptime_s: f64) {
    let proc = process();
    let globals: [(&str, &str, &str, f64); 7] = [
        ("clock_jumps_total", "counter", "Wall-clock jumps seen (NTP syncing a board without an RTC).", {
            shared.clock.jumps() as f64
        }),
        ("clock_synchronized", "gauge", "1 when the kernel says the clock is synchronised (adjtimex).", {
            f64::from(u8::from(crate::sys::clock_synchronized() == Some(true)))
        }),
        ("process_resident_bytes", "gauge", "Resident memory (VmRSS).", proc.rss_bytes),
        ("process_threads", "gauge", "Threads of the process.", proc.threads),
        ("process_open_fds", "gauge", "Open file descriptors.", proc.fds),
        ("uptime_seconds", "gauge", "Seconds since the service started.", uptime_s),
        (
            "log_lines_dropped_total",
            "counter",
            "Log lines that never reached stderr: not read in time, or held back by a once-a-minute limit.",
            { crate::logging::lines_dropped() as f64 },
        ),
    ];
    unlabelled(out, &globals);
}

/// The export queue's families.
fn export_metrics(out: &mut String, exports: &Exports) {
    let (queued, running) = exports.depth();
    let x = &exports.stats;
    let export_metrics = [
        ("exports_queued", "gauge", "Exports waiting for a worker (the export queue depth).", queued as u64),
        ("exports_running", "gauge", "Exports being written.", running as u64),
        ("exports_queue_limit", "gauge", "exports.max_queued.", exports.max_queued() as u64),
        ("exports_rejected_total", "counter", "Exports refused because the queue was full.", x.rejected.load(Relaxed)),
        ("exports_succeeded_total", "counter", "Exports finished.", x.succeeded.load(Relaxed)),
        ("exports_failed_total", "counter", "Exports failed (including panics).", x.failed.load(Relaxed)),
        ("exports_cancelled_total", "counter", "Exports cancelled.", x.cancelled.load(Relaxed)),
        ("exports_panics_total", "counter", "Panics caught inside an export.", x.panics.load(Relaxed)),
    ];
    unlabelled(out, &export_metrics);
}

/// The HTTP server's families, from its registry.
fn http_metrics(out: &mut String, h: &Counts) {
    for (f, value) in h.families() {
        family(out, f.name, f.kind, f.help);
        let _ = writeln!(out, "camjobd_{} {value}", f.name);
    }
}

/// The MQTT link's families.
fn mqtt_metrics(out: &mut String, m: &crate::mqtt::Stats) {
    let mqtt_metrics = [
        ("mqtt_connected", "gauge", "1 while connected to the MQTT broker.", u64::from(m.connected.load(Relaxed))),
        ("mqtt_connections_total", "counter", "Successful connections to the broker.", m.connections.load(Relaxed)),
        ("mqtt_messages_published_total", "counter", "Messages written to the broker.", m.published.load(Relaxed)),
        (
            "mqtt_messages_dropped_total",
            "counter",
            "Messages dropped because the outbox was full (broker slow or gone).",
            m.dropped.load(Relaxed),
        ),
        ("mqtt_outbox_messages", "gauge", "Messages waiting for the broker.", m.queued.load(Relaxed)),
        (
            "mqtt_commands_total",
            "counter",
            "Commands from MQTT handed to the supervisor and accepted.",
            m.commands.load(Relaxed),
        ),
        ("mqtt_commands_refused_total", "counter", "Commands from MQTT refused.", m.commands_refused.load(Relaxed)),
        (
            "mqtt_incoming_dropped_total",
            "counter",
            "Messages from the broker dropped because the earlier ones were not taken yet.",
            m.incoming_dropped.load(Relaxed),
        ),
        (
            "mqtt_incoming_refused_total",
            "counter",
            "Messages from the broker refused as larger than 64 KiB (the link stays up).",
            m.incoming_refused.load(Relaxed),
        ),
    ];
    unlabelled(out, &mqtt_metrics);
}

struct Process {
    rss_bytes: f64,
    threads: f64,
    fds: f64,
}

/// RSS and threads from `/proc/self/status`, open fds from `/proc/self/fd`.
fn process() -> Process {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as f64).unwrap_or(f64::NAN);
    Process { rss_bytes: field("VmRSS:") * 1024.0, threads: field("Threads:"), fds }
}
