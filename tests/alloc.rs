//! Fixed memory, proven: a counting global allocator watches the capture thread.
//!
//! - Pass-through (pipe source, every frame kept and published, a reader holding snapshots):
//!   zero heap allocations per frame over 10,000+ frames in steady state.
//! - Live view (pipe source, a stream client registered, every frame published to the live
//!   feed and copied for readers): zero allocations per frame on the capture thread and on the
//!   reader that takes the copies.
//! - Encoding (synthetic source, YUYV like a camera, two encoder threads, every frame kept):
//!   zero allocations per frame on the capture and encoder threads, and the process's RSS
//!   (libjpeg's own per-image `malloc`s included) does not grow.

mod common;

#[path = "support/capture_harness.rs"]
mod harness;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use camjobd::config::{CameraConfig, PipeConfig, SourceConfig, SyntheticConfig};
use camjobd::shutdown::Stop;
use camjobd::status::Shared;
use common::*;
use harness::{start_capture as start, ALLOCS};

#[global_allocator]
static GLOBAL: harness::Counting = harness::Counting;

/// The counters are global: the tests in this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn frames(shared: &Shared) -> u64 {
    shared.cameras[0].heartbeat.frames_captured.load(Relaxed)
}

fn wait_frames(shared: &Shared, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while frames(shared) < n {
        assert!(Instant::now() < deadline, "only {} of {n} frames", frames(shared));
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A pipe camera whose child repeats 50 different small JPEGs back to back forever.
fn pipe_camera(dir: &TempDir, snapshot_interval_ms: u64) -> CameraConfig {
    let mut stream = Vec::new();
    for i in 0..50 {
        stream.extend(jpeg(96, 64, i * 5));
    }
    std::fs::write(dir.path().join("stream.mjpg"), &stream).unwrap();
    CameraConfig {
        name: "cam0".into(),
        source: SourceConfig::Pipe(PipeConfig {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("while :; do cat {}; done", dir.path().join("stream.mjpg").display()),
            ],
        }),
        snapshot_interval_ms,
        ..CameraConfig::default()
    }
}

#[test]
fn pass_through_makes_zero_allocations_per_frame() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("alloc");
    let cam = pipe_camera(&dir, 0); // keep and publish every frame: the busiest path
    let stop = Stop::new();
    let (shared, t) = start(cam, &stop);
    // A reader that keeps taking the latest snapshot, like HTTP clients do.
    let reader = {
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = 0u64;
            while !stop.is_set() {
                if let Some(f) = shared.cameras[0].snapshots.latest() {
                    held += f.bytes().len() as u64;
                }
            }
            held
        })
    };
    wait_frames(&shared, 1_000, Duration::from_secs(30)); // warm-up: opening, first events
    let (a0, f0) = (ALLOCS.load(Relaxed), frames(&shared));
    wait_frames(&shared, f0 + 10_000, Duration::from_secs(60));
    let (a1, f1) = (ALLOCS.load(Relaxed), frames(&shared));
    stop.trigger();
    t.join().unwrap();
    assert!(reader.join().unwrap() > 0);
    let hb = &shared.cameras[0].heartbeat;
    println!(
        "pass-through: {} frames, {} allocations in steady state, {} snapshots, {} dropped",
        f1 - f0,
        a1 - a0,
        hb.snapshots.load(Relaxed),
        hb.frames_dropped.load(Relaxed)
    );
    assert_eq!(a1 - a0, 0, "the capture loop allocated in steady state");
    assert_eq!(hb.frames_dropped.load(Relaxed), 0);
    assert!(hb.snapshots.load(Relaxed) >= 11_000);
}

#[test]
fn live_view_publishing_and_copies_make_zero_allocations_per_frame() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("alloc-live");
    // Snapshots rarely: nearly every frame is published for the live view alone.
    let cam = pipe_camera(&dir, 5_000);
    let stop = Stop::new();
    let (shared, t) = start(cam, &stop);
    let live = Arc::clone(&shared.cameras[0].live);
    // A stream client wants every frame.
    let watcher = live.join(Duration::ZERO).expect("a client slot");
    // A reader taking a copy of each new frame, as stream clients and /snapshot do; its
    // allocations count too.
    let reader = {
        let (live, stop) = (Arc::clone(&live), stop.clone());
        std::thread::spawn(move || {
            harness::WATCHED.with(|w| w.set(true));
            let (mut copies, mut last) = (0u64, 0u64);
            while !stop.is_set() {
                if let Some(f) = live.newest() {
                    if f.id != last {
                        last = f.id;
                        copies += 1;
                    }
                }
            }
            copies
        })
    };
    wait_frames(&shared, 1_000, Duration::from_secs(30));
    let (a0, f0) = (ALLOCS.load(Relaxed), frames(&shared));
    wait_frames(&shared, f0 + 10_000, Duration::from_secs(60));
    let (a1, f1) = (ALLOCS.load(Relaxed), frames(&shared));
    stop.trigger();
    t.join().unwrap();
    let copies = reader.join().unwrap();
    drop(watcher);
    let hb = &shared.cameras[0].heartbeat;
    println!(
        "live view: {} frames, {} allocations in steady state, {} distinct copies read, {} skipped, {} dropped",
        f1 - f0,
        a1 - a0,
        copies,
        hb.frames_skipped.load(Relaxed),
        hb.frames_dropped.load(Relaxed)
    );
    assert_eq!(a1 - a0, 0, "publishing or copying allocated in steady state");
    assert_eq!(hb.frames_dropped.load(Relaxed), 0);
    assert!(copies >= 1_000, "the reader saw only {copies} frames");
    assert!(live.latest_id() > f1 - f0, "frames were not published for the live view");
}

/// The process's resident memory in bytes: covers libjpeg's `malloc`s in every thread's arena
/// (glibc's `mallinfo2` would see the main arena only).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn encoding_makes_zero_allocations_per_frame() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cam = CameraConfig {
        name: "cam0".into(),
        source: SourceConfig::Synthetic(SyntheticConfig {
            width: 320,
            height: 240,
            fps: 1000,
            ..SyntheticConfig::default()
        }),
        snapshot_interval_ms: 0, // keep every frame: every frame is encoded
        encoder_threads: 2,
        frame_buffers: 6,
        ..CameraConfig::default()
    };
    let stop = Stop::new();
    let (shared, t) = start(cam, &stop);
    let hb = &shared.cameras[0].heartbeat;
    let snapshots = || hb.snapshots.load(Relaxed);
    let wait_snapshots = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while snapshots() < n {
            assert!(Instant::now() < deadline, "only {} of {n} frames encoded", snapshots());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_snapshots(200); // warm-up: opening, the encoders' first images, first events
    let (a0, s0, rss0) = (ALLOCS.load(Relaxed), snapshots(), rss());
    wait_snapshots(s0 + 3_000);
    let (a1, s1, rss1) = (ALLOCS.load(Relaxed), snapshots(), rss());
    let latest = shared.cameras[0].snapshots.latest().expect("a kept frame");
    stop.trigger();
    t.join().unwrap();
    let img = image::load_from_memory_with_format(latest.bytes(), image::ImageFormat::Jpeg).expect("a JPEG");
    println!(
        "encode 320x240, 2 encoders: {} frames encoded, {} allocations in steady state, {} skipped, {} dropped; RSS {} → {} KiB",
        s1 - s0,
        a1 - a0,
        hb.frames_skipped.load(Relaxed),
        hb.frames_dropped.load(Relaxed),
        rss0 / 1024,
        rss1 / 1024
    );
    assert_eq!((img.width(), img.height()), (320, 240));
    assert_eq!(a1 - a0, 0, "capture or the encoders allocated in steady state");
    assert_eq!(hb.frames_dropped.load(Relaxed), 0);
    // libjpeg's per-image memory goes back to malloc after each image: nothing accumulates
    // (a page or two of slack for the allocator's bookkeeping).
    assert!(rss1 <= rss0 + (64 << 10), "RSS grew over {} encoded frames: {rss0} → {rss1} B", s1 - s0);
}

#[test]
fn h264_for_four_rtsp_clients_makes_zero_allocations_per_frame() {
    if std::process::Command::new("ffmpeg").arg("-version").output().is_err() {
        assert!(std::env::var_os("CAMJOBD_REQUIRE_CLIENTS").is_none(), "ffmpeg is required here but not installed");
        return;
    }
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cam = CameraConfig {
        name: "cam0".into(),
        source: SourceConfig::Synthetic(SyntheticConfig {
            width: 320,
            height: 240,
            fps: 100,
            ..SyntheticConfig::default()
        }),
        snapshot_interval_ms: 100,
        video: Some(camjobd::config::VideoConfig::default()),
        ..CameraConfig::default()
    };
    let stop = Stop::new();
    let (shared, t) = start(cam, &stop);
    // The real server, in this process: its thread (`rtsp`) and the encoder's (`h264-cam0`)
    // are counted with capture's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let video = Arc::clone(shared.cameras[0].video.as_ref().unwrap());
    let cameras = vec![camjobd::rtsp::Camera { name: "cam0".into(), video: Arc::clone(&video) }];
    let server =
        camjobd::rtsp::start(listener, cameras, 16, None, true, Arc::clone(&shared.rtsp), stop.clone()).unwrap();
    // Four clients, two over TCP and two over UDP, taking the stream as it comes.
    let mut clients: Vec<_> = ["tcp", "tcp", "udp", "udp"]
        .iter()
        .map(|transport| {
            std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-rtsp_transport", transport, "-i", &format!("rtsp://{addr}/cam0")])
                .args(["-c", "copy", "-f", "null", "-"])
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let encoded = || video.stats.frames.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.rtsp.playing.load(Relaxed) < 4 || encoded() < 100 {
        assert!(Instant::now() < deadline, "{} playing, {} encoded", shared.rtsp.playing.load(Relaxed), encoded());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (a0, f0, e0, p0) = (ALLOCS.load(Relaxed), frames(&shared), encoded(), shared.rtsp.packets.load(Relaxed));
    wait_frames(&shared, f0 + 1_000, Duration::from_secs(60));
    let (a1, f1, e1, p1) = (ALLOCS.load(Relaxed), frames(&shared), encoded(), shared.rtsp.packets.load(Relaxed));
    let playing = shared.rtsp.playing.load(Relaxed);
    for c in &mut clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    stop.trigger();
    t.join().unwrap();
    assert_eq!(server.join_by(Instant::now() + Duration::from_secs(5)), camjobd::shutdown::Joined::Returned);
    println!(
        "H.264 320x240 to 4 RTSP clients: {} frames captured, {} encoded, {} packets sent, {} allocations in steady state",
        f1 - f0,
        e1 - e0,
        p1 - p0,
        a1 - a0
    );
    assert_eq!(playing, 4, "every client played to the end");
    assert!(e1 - e0 >= (f1 - f0) / 2, "encoded {} of {} frames", e1 - e0, f1 - f0);
    assert!(p1 - p0 >= 4 * (e1 - e0), "every client was sent every frame");
    assert_eq!(a1 - a0, 0, "capture, the H.264 encoder or the RTSP server allocated in steady state");
}
