//! Capture-path benchmark (run by `scripts/bench.sh`; prints figures, asserts nothing).
//!
//! 1. Pass-through: a `pipe` source fed ~100 KB JPEG frames as fast as `cat` can write them;
//!    every frame kept and published. Frames per second of wall time and per CPU second of the
//!    capture thread (= frames/s on one core), and heap allocations per frame.
//! 2. The MJPEG splitter alone, from memory.
//!
//! Encoding has its own benchmark: `examples/bench_encode.rs`.

#[path = "../tests/support/capture_harness.rs"]
mod harness;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use camjobd::capture::mjpeg::{Next, Splitter};
use camjobd::config::{CameraConfig, PipeConfig, SourceConfig};
use camjobd::shutdown::Stop;
use harness::{start_capture, ALLOCS, CAPTURE_TID};

#[global_allocator]
static GLOBAL: harness::Counting = harness::Counting;

/// CPU seconds used by one thread of this process.
fn thread_cpu(tid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn run(camera: CameraConfig, secs: f64) -> (u64, f64, f64, f64) {
    let stop = Stop::new();
    let (shared, t) = start_capture(camera, &stop);
    let cam = &shared.cameras[0];
    let hb = &cam.heartbeat;
    while hb.frames_captured.load(Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let tid = CAPTURE_TID.load(Relaxed);
    let (f0, a0, c0, t0) = (hb.frames_captured.load(Relaxed), ALLOCS.load(Relaxed), thread_cpu(tid), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (f1, a1, c1, wall) =
        (hb.frames_captured.load(Relaxed), ALLOCS.load(Relaxed), thread_cpu(tid), t0.elapsed().as_secs_f64());
    let dropped = hb.frames_dropped.load(Relaxed);
    stop.trigger();
    t.join().unwrap();
    let frames = f1 - f0;
    if dropped > 0 {
        println!("  ({dropped} frames dropped)");
    }
    (frames, frames as f64 / wall, (c1 - c0).max(0.01), (a1 - a0) as f64 / frames.max(1) as f64)
}

fn noisy_jpeg(target: usize, seed: u32) -> Vec<u8> {
    // Noise compresses badly, so the size is predictable; grow until ~target bytes.
    let mut side = 200u32;
    loop {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        let img = image::RgbImage::from_fn(side, side * 3 / 4, |_, _| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            image::Rgb([x as u8, (x >> 8) as u8, (x >> 16) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 60).encode_image(&img).unwrap();
        if out.len() >= target {
            return out;
        }
        side += 20;
    }
}

/// A textured but static scene (for `scripts/bench-disk.sh`): a gradient with mild noise.
fn write_static_jpeg(path: &str, w: u32, h: u32) {
    let mut x = 12345u32;
    let img = image::RgbImage::from_fn(w, h, |px, py| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x % 24) as u8;
        image::Rgb([(px * 200 / w) as u8 + n, (py * 200 / h) as u8 + n, 120 + n])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&img).unwrap();
    std::fs::write(path, out).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--write-static-jpeg") {
        let n = |i: usize| args.get(i).and_then(|v| v.parse().ok()).expect("--write-static-jpeg PATH W H");
        write_static_jpeg(&args[2], n(3), n(4));
        return;
    }
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let dir = std::env::temp_dir().join(format!("camjobd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut stream = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..20 {
        let f = noisy_jpeg(100_000, i + 1);
        sizes.push(f.len());
        stream.extend(f);
    }
    let path = dir.join("stream.mjpg");
    std::fs::write(&path, &stream).unwrap();
    let avg = sizes.iter().sum::<usize>() / sizes.len();
    println!("frames: 20 distinct JPEGs, {avg} bytes on average");

    // 2. Splitter alone, from memory.
    let mut splitter = Splitter::new(256 * 1024);
    let mut src = std::io::Cursor::new(Vec::new());
    let reps = 200;
    for _ in 0..reps {
        src.get_mut().extend_from_slice(&stream);
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    loop {
        match splitter.next() {
            Next::Frame { .. } => n += 1,
            Next::Dropped(_) => {}
            Next::NeedMore => {
                if splitter.fill_from(&mut src).unwrap() == 0 {
                    break;
                }
            }
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "splitter from memory: {n} frames in {dt:.2} s = {:.0} frames/s ({:.2} GB/s)",
        n as f64 / dt,
        (n as f64 * avg as f64) / dt / 1e9
    );

    // 1. Pass-through through a real pipe.
    for (label, interval) in [("every frame kept", 0u64), ("1 snapshot/s kept", 1000)] {
        let cam = CameraConfig {
            source: SourceConfig::Pipe(PipeConfig {
                command: vec!["sh".into(), "-c".into(), format!("while :; do cat {}; done", path.display())],
            }),
            snapshot_interval_ms: interval,
            max_frame_bytes: 256 * 1024,
            ..CameraConfig::default()
        };
        let (frames, fps, cpu, allocs_per_frame) = run(cam, secs);
        println!(
            "pass-through via pipe, {label}: {frames} frames, {fps:.0} frames/s wall, {:.0} frames per capture-thread CPU second, {allocs_per_frame:.3} allocations/frame",
            frames as f64 / cpu
        );
    }

    let _ = std::fs::remove_dir_all(&dir);
}
