//! H.264 encode cost of camjobd's software encoder (OpenH264, one thread), run by
//! `scripts/bench-h264.sh` beside `ffmpeg -c:v libx264 -preset ultrafast -tune zerolatency` on
//! the same raw frames. Prints figures, asserts nothing.
//!
//! Usage: bench_h264 WIDTH HEIGHT FRAMES.yuv [RUNS]
//!
//! FRAMES.yuv is raw I420 (what `ffmpeg -pix_fmt yuv420p -f rawvideo` writes). The frames are
//! read and laid out as camjobd's 4:2:2 images before timing; each run encodes all of them
//! with a new encoder at 2 Mbit/s, 30 fps, a keyframe every 2 s, and is timed in CPU seconds
//! of the process (`getrusage`), so it compares with ffmpeg's own `-benchmark` CPU figures.

use camjobd::config::Profile;
use camjobd::h264::{software::Software, Encoder as _, Settings};
use camjobd::jpeg::Yuv;

fn cpu_seconds() -> f64 {
    // SAFETY: a plain C struct filled by getrusage; zero is a valid start.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_h264 WIDTH HEIGHT FRAMES.yuv [RUNS]");
        std::process::exit(2);
    }
    let (w, h): (usize, usize) = (args[1].parse().expect("WIDTH"), args[2].parse().expect("HEIGHT"));
    let runs: usize = args.get(4).map_or(5, |r| r.parse().expect("RUNS"));
    let raw = std::fs::read(&args[3]).expect("FRAMES.yuv");
    let frame = w * h * 3 / 2;
    let images: Vec<Yuv> = raw
        .chunks_exact(frame)
        .map(|f| {
            let mut img = Yuv::new(w, h);
            let (y, u, v, ys, cs) = img.planes_mut();
            let (fy, rest) = f.split_at(w * h);
            let (fu, fv) = rest.split_at(w * h / 4);
            for row in 0..h {
                y[row * ys..row * ys + w].copy_from_slice(&fy[row * w..row * w + w]);
                // 4:2:0 to 4:2:2: each chroma row twice (the encoder reads every other one).
                let c = row / 2 * (w / 2);
                u[row * cs..row * cs + w / 2].copy_from_slice(&fu[c..c + w / 2]);
                v[row * cs..row * cs + w / 2].copy_from_slice(&fv[c..c + w / 2]);
            }
            img
        })
        .collect();
    let settings = Settings { bitrate_kbps: 2000, keyframe_interval_s: 2, profile: Profile::Baseline, fps: 30 };
    let mut out = Vec::with_capacity(4 << 20);
    let mut rates = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let mut enc = Software::new(&settings).expect("an encoder");
        bytes = 0;
        let t0 = cpu_seconds();
        for (i, img) in images.iter().enumerate() {
            bytes += enc.encode(img, i as u64 * 1000 / 30, false, &mut out).expect("encoded").bytes;
        }
        rates.push(images.len() as f64 / (cpu_seconds() - t0));
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "openh264 {w}x{h}: {:.0} frames per CPU-second (median of {runs}; min {:.0}, max {:.0}), {:.2} ms per frame, {} frames, {:.0} kbit/s",
        rates[runs / 2],
        rates[0],
        rates[runs - 1],
        1000.0 / rates[runs / 2],
        images.len(),
        bytes as f64 * 8.0 * 30.0 / images.len() as f64 / 1000.0
    );
}
