//! Encoding benchmark (run by `scripts/bench.sh`, and under qemu-aarch64 by
//! `scripts/bench-encode-arm.sh`; prints figures, asserts nothing).
//!
//! 1. In process, 640x480 and 1280x720 at q80, one thread: time per encoded frame from a YUYV
//!    camera frame, the old path (YUYV → RGB, then the `image` crate's encoder, as camjobd
//!    did before) against the new one (deinterleave to planar 4:2:2, libjpeg-turbo's code from
//!    YUV). Medians of 5 runs, each timed over at least 0.5 s.
//! 2. Change-score thumbnails: full decode with `image` + averaging (old) against a luma-only
//!    1/8 decode in the DCT (new).
//! 3. The real capture path (`--camera`): the synthetic camera (YUYV) with every frame kept,
//!    through the capture loop and 1 or 2 encoder threads: frames/s and frames per CPU second
//!    of the whole process, beside `tjbench` (Debian's libjpeg-turbo-progs) compressing the
//!    same size at 4:2:2 from YUV, run right after.
//!
//! Usage: bench_encode [--quick] [--camera SECONDS]

#[path = "../tests/support/capture_harness.rs"]
mod harness;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use camjobd::capture::yuyv::deinterleave;
use camjobd::config::{CameraConfig, SourceConfig, SyntheticConfig};
use camjobd::jpeg::{yuv_of, Encoder, Yuv};
use camjobd::shutdown::Stop;
use camjobd::store::change::{Thumb, Thumbnailer, THUMB_H, THUMB_W};

#[global_allocator]
static GLOBAL: harness::Counting = harness::Counting;

/// A YUYV frame of a textured scene: gradients, a checker and mild noise (noise is what makes
/// entropy coding work; a flat test card would flatter every encoder).
fn yuyv_frame(w: usize, h: usize) -> Vec<u8> {
    let mut x = 12345u32;
    let mut out = Vec::with_capacity(w * h * 2);
    for py in 0..h {
        for pair in 0..w / 2 {
            let mut px = [[0u8; 3]; 2];
            for (k, p) in px.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let n = (x % 24) as usize;
                let px_x = pair * 2 + k;
                *p = yuv_of([
                    (px_x * 200 / w + n) as u8,
                    (py * 200 / h + n) as u8,
                    (((px_x / 16 + py / 16) % 2) * 100 + n) as u8,
                ]);
            }
            out.extend_from_slice(&[px[0][0], px[0][1], px[1][0], px[1][2]]);
        }
    }
    out
}

/// The old path's colour conversion (camjobd's `yuyv::to_rgb` before libjpeg): BT.601 limited
/// range, integer arithmetic.
fn to_rgb(yuyv: &[u8], rgb: &mut [u8]) {
    for (src, dst) in yuyv.chunks_exact(4).zip(rgb.chunks_exact_mut(6)) {
        let (u, v) = (i32::from(src[1]) - 128, i32::from(src[3]) - 128);
        let (r, g, b) = (409 * v, -100 * u - 208 * v, 516 * u);
        for (k, y) in [src[0], src[2]].into_iter().enumerate() {
            let c = 298 * (i32::from(y) - 16) + 128;
            dst[k * 3] = ((c + r) >> 8).clamp(0, 255) as u8;
            dst[k * 3 + 1] = ((c + g) >> 8).clamp(0, 255) as u8;
            dst[k * 3 + 2] = ((c + b) >> 8).clamp(0, 255) as u8;
        }
    }
}

/// Median over `runs` of the time per call of `f`, each run at least `min` long.
fn median_ms(runs: usize, min: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut per = Vec::new();
    for _ in 0..runs {
        let (t0, mut n) = (Instant::now(), 0u32);
        while t0.elapsed() < min {
            f();
            n += 1;
        }
        per.push(t0.elapsed().as_secs_f64() * 1000.0 / f64::from(n));
    }
    per.sort_by(f64::total_cmp);
    per[runs / 2]
}

/// The old thumbnail: a full decode with `image`, then averaging (as `store::change` did).
fn old_thumb(jpeg: &[u8], out: &mut Thumb) {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).unwrap().to_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut sums = [0u32; THUMB_W * THUMB_H];
    let mut counts = [0u32; THUMB_W * THUMB_H];
    for (y, row) in img.as_raw().chunks_exact(w).enumerate() {
        for (x, &l) in row.iter().enumerate() {
            let cell = y * THUMB_H / h * THUMB_W + x * THUMB_W / w;
            sums[cell] += u32::from(l);
            counts[cell] += 1;
        }
    }
    for i in 0..out.len() {
        out[i] = (sums[i] / counts[i].max(1)) as u8;
    }
}

fn in_process(quick: bool) {
    let (runs, min) = if quick { (3, Duration::from_millis(200)) } else { (5, Duration::from_millis(500)) };
    for (w, h) in [(640usize, 480usize), (1280, 720)] {
        let yuyv = yuyv_frame(w, h);
        let mut out = vec![0u8; w * h * 3];
        let mut rgb = vec![0u8; w * h * 3];
        let mut old_len = 0;
        let old = median_ms(runs, min, || {
            to_rgb(&yuyv, &mut rgb);
            let mut cur = std::io::Cursor::new(&mut out[..]);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut cur, 80)
                .encode(&rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .unwrap();
            old_len = cur.position();
        });
        let mut img = Yuv::new(w, h);
        let mut enc = Encoder::new();
        let mut new_len = 0;
        let new = median_ms(runs, min, || {
            deinterleave(&yuyv, w, h, &mut img);
            new_len = enc.encode(&img, 80, &mut out).unwrap();
        });
        println!(
            "encode {w}x{h} q80, one thread: old (YUYV→RGB + image) {old:.2} ms/frame ({old_len} B), new (YUV 4:2:2 + libjpeg-turbo) {new:.2} ms/frame ({new_len} B): new takes {:.3} of the old time ({:.1}x faster)",
            new / old,
            old / new
        );
        let jpeg = out[..new_len].to_vec();
        let mut thumb = [0u8; THUMB_W * THUMB_H];
        let old = median_ms(runs, min, || old_thumb(&jpeg, &mut thumb));
        let mut t = Thumbnailer::default();
        let new = median_ms(runs, min, || t.thumbnail(&jpeg, &mut thumb).unwrap());
        println!(
            "change-score thumbnail of {w}x{h}: old (full decode with image) {old:.3} ms, new (luma at 1/8 in the DCT) {new:.3} ms: new takes {:.3} of the old time",
            new / old
        );
    }
}

/// CPU seconds of this whole process.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// tjbench's "Comp Perf" from YUV in megapixels per second for a `w x h` 4:2:2 q80 image, if
/// tjbench is installed.
fn tjbench(w: usize, h: usize) -> Option<f64> {
    let path = std::env::temp_dir().join(format!("camjobd-tj-{}-{w}x{h}.ppm", std::process::id()));
    let yuyv = yuyv_frame(w, h);
    let mut rgb = vec![0u8; w * h * 3];
    to_rgb(&yuyv, &mut rgb);
    let mut ppm = format!("P6 {w} {h} 255\n").into_bytes();
    ppm.extend_from_slice(&rgb);
    std::fs::write(&path, ppm).ok()?;
    let out = std::process::Command::new("tjbench")
        .arg(&path)
        .args(["80", "-subsamp", "422", "-yuv", "-componly", "-nowrite", "-quiet", "-benchtime", "2", "-warmup", "0.5"])
        .output()
        .ok();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out?.stdout).into_owned();
    // The result row: "BGR  (TD)  4:2:2  80  W  H  EncodePerf  CompPerf  Ratio ..."
    let row = text.lines().rev().find(|l| l.contains("4:2:2"))?;
    let cols: Vec<&str> = row.split_whitespace().collect();
    let at = cols.iter().position(|c| *c == "4:2:2")?;
    cols.get(at + 5)?.parse().ok()
}

fn camera(secs: f64) {
    for (w, h) in [(640u32, 480u32), (1280, 720)] {
        let tj = tjbench(w as usize, h as usize);
        for threads in [1usize, 2] {
            let cam = CameraConfig {
                source: SourceConfig::Synthetic(SyntheticConfig {
                    width: w,
                    height: h,
                    fps: 10_000,
                    ..SyntheticConfig::default()
                }),
                snapshot_interval_ms: 0,
                encoder_threads: threads,
                frame_buffers: threads + 4,
                max_frame_bytes: 1 << 20,
                store: camjobd::config::StoreConfig { enabled: false, ..Default::default() },
                ..CameraConfig::default()
            };
            let stop = Stop::new();
            let (shared, t) = harness::start_capture(cam, &stop);
            let hb = &shared.cameras[0].heartbeat;
            while hb.snapshots.load(Relaxed) < 20 {
                std::thread::sleep(Duration::from_millis(10));
            }
            let (s0, c0, t0) = (hb.snapshots.load(Relaxed), process_cpu(), Instant::now());
            std::thread::sleep(Duration::from_secs_f64(secs));
            let (s1, c1, wall) = (hb.snapshots.load(Relaxed), process_cpu(), t0.elapsed().as_secs_f64());
            stop.trigger();
            t.join().unwrap();
            let frames = (s1 - s0) as f64;
            let per_cpu = frames / (c1 - c0).max(0.01);
            let tj_line = tj.map_or("tjbench not installed".to_string(), |mpx| {
                let tj_fps = mpx * 1e6 / f64::from(w * h);
                format!("tjbench from YUV {tj_fps:.0} frames/s on one core: camjobd does {:.2} of tjbench's rate per CPU second", per_cpu / tj_fps)
            });
            println!(
                "synthetic camera {w}x{h} q80, every frame kept, {threads} encoder thread(s): {:.0} frames/s, {per_cpu:.0} frames per process CPU second, {} skipped; {tj_line}",
                frames / wall,
                hb.frames_skipped.load(Relaxed)
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    in_process(quick);
    if let Some(i) = args.iter().position(|a| a == "--camera") {
        let secs = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
        camera(secs);
    }
}
