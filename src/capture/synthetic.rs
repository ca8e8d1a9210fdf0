//! The synthetic camera: a moving test pattern with the frame number drawn in, paced at `fps`,
//! delivered as YUYV like a USB camera, so its frames take the same path as a real camera's
//! (deinterleave, the encoders). The pattern is made once at open; a frame is a shifted copy
//! of it with a bar and the number drawn in, and is only made when somebody wants it.
//!
//! Along the bottom, a strip carries the capture time for machines ([`draw_time_strip`]): a
//! client that decodes the picture (the browser test, the WHEP and RTSP benchmarks) computes
//! capture → display latency from pixels, whatever the path (MJPEG, RTSP, WebRTC).
//!
//! Fault injection (`fault` in the config) drives the failure paths from outside: a camera
//! that stops delivering, one whose reads fail, one that cannot be opened. Fault counters are
//! per job and live in the opener, so reopening does not reset them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::{Applied, Delivers, Dest, Opener, Read, Source, SourceError};
use crate::config::{FaultConfig, SyntheticConfig};
use crate::controls::{Control, Kind, MenuItem};
use crate::jpeg::yuv_of;

/// Per-job fault bookkeeping, shared by the opener and the source it opened.
#[derive(Default)]
struct JobFaults {
    job_id: AtomicU64,
    /// Frames delivered in this job, across reopens.
    frames: AtomicU64,
    /// Reopens in this job (the first open is not one).
    reopens: AtomicU32,
}

/// Opens synthetic cameras.
pub struct SyntheticOpener {
    config: SyntheticConfig,
    faults: Arc<JobFaults>,
}

impl SyntheticOpener {
    /// An opener for this config.
    pub fn new(config: SyntheticConfig) -> Self {
        SyntheticOpener { config, faults: Arc::default() }
    }
}

impl Opener for SyntheticOpener {
    fn open(&mut self, job_id: u64, _saved: &crate::controls::Saved) -> Result<Box<dyn Source>, SourceError> {
        let f = &self.faults;
        if f.job_id.swap(job_id, Relaxed) != job_id {
            f.frames.store(0, Relaxed);
            f.reopens.store(0, Relaxed);
        } else {
            f.reopens.fetch_add(1, Relaxed);
        }
        let fault = self.config.fault.clone().unwrap_or_default();
        if fault.fail_open {
            return Err(SourceError::fatal("cannot open the synthetic camera (fault fail_open is set)"));
        }
        let (w, h) = (self.config.width as usize, self.config.height as usize);
        Ok(Box::new(Synthetic {
            width: w,
            height: h,
            period: Duration::from_secs_f64(1.0 / self.config.fps as f64),
            next_at: Instant::now(),
            base: pattern(w, h),
            yuyv: vec![0; w * h * 2].into_boxed_slice(),
            reads: 0,
            fault,
            faults: Arc::clone(&self.faults),
            look: Look::default(),
        }))
    }
}

struct Synthetic {
    width: usize,
    height: usize,
    period: Duration,
    /// When the next frame is due.
    next_at: Instant,
    /// The pattern, YUYV, twice the frame's width so that any shift is one copy per row.
    base: Box<[u8]>,
    /// The frame as a camera would hand it over, allocated once at open.
    yuyv: Box<[u8]>,
    /// Frame slots so far in this open (for `error_every`).
    reads: u64,
    fault: FaultConfig,
    faults: Arc<JobFaults>,
    look: Look,
}

/// What the synthetic camera's controls change: a real driver's int, bool, menu and button,
/// each with an effect in the picture.
struct Look {
    /// Added to every pixel's luma.
    brightness: i64,
    /// Whether the white bar sweeps across.
    bar: bool,
    /// 0: the colour ramps; 1: flat grey.
    pattern: i64,
    /// Subtracted from the frame number drawn in (the `restart_count` button).
    count_base: u64,
}

impl Default for Look {
    fn default() -> Self {
        Look { brightness: 0, bar: true, pattern: 0, count_base: 0 }
    }
}

/// The synthetic camera's control ids.
const BRIGHTNESS: u32 = 1;
const MOVING_BAR: u32 = 2;
const PATTERN: u32 = 3;
const RESTART_COUNT: u32 = 4;

impl Synthetic {
    fn stalled(&self) -> bool {
        if let Some(every) = self.fault.stall_every_s {
            // The last `stall_for_ms` of every period, on the process clock, so reopening
            // during a stall does not end it early.
            let period = every * 1000;
            if crate::clock::mono_ms() % period >= period - self.fault.stall_for_ms {
                return true;
            }
        }
        let Some(n) = self.fault.stall_after_frames else { return false };
        let healed = self.fault.recover_after_reopens.is_some_and(|k| self.faults.reopens.load(Relaxed) >= k);
        !healed && self.faults.frames.load(Relaxed) >= n
    }

    fn render(&mut self, n: u64) {
        let (w, h) = (self.width, self.height);
        let shift = (n as usize * 4) % w;
        for (dst, src) in self.yuyv.chunks_exact_mut(w * 2).zip(self.base.chunks_exact(w * 4)) {
            dst.copy_from_slice(&src[shift * 2..(shift + w) * 2]);
        }
        // A white bar sweeping across, so motion is obvious on the dashboard.
        if self.look.bar {
            let bar_x = (n as usize * 8) % w;
            fill(&mut self.yuyv, w, (bar_x, 0), (bar_x + 8, h), 235);
        }
        draw_number(&mut self.yuyv, w, h, n.saturating_sub(self.look.count_base));
        if self.look.brightness != 0 {
            let add = self.look.brightness;
            for y in self.yuyv.iter_mut().step_by(2) {
                *y = (i64::from(*y) + add).clamp(16, 235) as u8;
            }
        }
        let unix_ms = (crate::clock::unix_now() * 1000.0) as u64;
        draw_time_strip(&mut self.yuyv, w, h, unix_ms);
    }
}

/// The test pattern, `2w x h` YUYV: a red ramp across, green down, a blue checker.
fn pattern(w: usize, h: usize) -> Box<[u8]> {
    let mut out = vec![0u8; w * 2 * h * 2];
    for (y, row) in out.chunks_exact_mut(w * 4).enumerate() {
        for (pair, px) in row.chunks_exact_mut(4).enumerate() {
            let rgb = |x: usize| [((x * 255 / w) % 256) as u8, (y * 255 / h) as u8, (((x + y) / 8) % 2 * 160) as u8];
            let (a, b) = (yuv_of(rgb(pair * 2)), yuv_of(rgb(pair * 2 + 1)));
            px.copy_from_slice(&[
                a[0],
                ((a[1] as u16 + b[1] as u16) / 2) as u8,
                b[0],
                ((a[2] as u16 + b[2] as u16) / 2) as u8,
            ]);
        }
    }
    out.into_boxed_slice()
}

/// A flat grey pattern, the size [`pattern`] makes.
fn grey(w: usize, h: usize) -> Box<[u8]> {
    [128u8, 128].repeat(w * 2 * h).into_boxed_slice()
}

/// Paints pixels `x0..x1` of rows `y0..y1` (clipped) a neutral grey of luma `luma`.
fn fill(yuyv: &mut [u8], w: usize, (x0, y0): (usize, usize), (x1, y1): (usize, usize), luma: u8) {
    let h = yuyv.len() / (w * 2);
    let x1 = x1.min(w).next_multiple_of(2).min(w);
    // Clipped: a digit can start past the right edge of a narrow frame.
    let x0 = (x0 & !1).min(x1);
    for row in yuyv.chunks_exact_mut(w * 2).take(y1.min(h)).skip(y0) {
        for px in row[x0 * 2..x1 * 2].chunks_exact_mut(4) {
            px.copy_from_slice(&[luma, 128, luma, 128]);
        }
    }
}

impl Source for Synthetic {
    fn delivers(&self) -> Delivers {
        Delivers::Yuv
    }

    fn controls(&mut self) -> Vec<Control> {
        let l = &self.look;
        let c = |id, label: &str, kind, (min, max, default): (i64, i64, i64), value| Control {
            id,
            name: crate::controls::snake(label),
            label: label.into(),
            kind,
            min,
            max,
            step: 1,
            default,
            value,
            menu: vec![],
            inactive: false,
            unit: None,
        };
        let items = ["Ramps", "Grey"].iter().enumerate();
        vec![
            c(BRIGHTNESS, "Brightness", Kind::Int, (-64, 64, 0), Some(l.brightness)),
            c(MOVING_BAR, "Moving Bar", Kind::Bool, (0, 1, 1), Some(i64::from(l.bar))),
            Control {
                menu: items.map(|(i, n)| MenuItem { value: i as i64, name: (*n).into() }).collect(),
                ..c(PATTERN, "Pattern", Kind::Menu, (0, 1, 0), Some(l.pattern))
            },
            c(RESTART_COUNT, "Restart Count", Kind::Button, (0, 0, 0), None),
        ]
    }

    fn set_controls(&mut self, changes: &[(u32, i64)]) -> Result<Applied, String> {
        for &(id, v) in changes {
            match id {
                BRIGHTNESS => self.look.brightness = v.clamp(-64, 64),
                MOVING_BAR => self.look.bar = v != 0,
                PATTERN if v != self.look.pattern => {
                    self.look.pattern = v;
                    self.base = if v == 1 { grey(self.width, self.height) } else { pattern(self.width, self.height) };
                }
                PATTERN => {}
                RESTART_COUNT => self.look.count_base = self.faults.frames.load(Relaxed),
                _ => return Err(format!("the synthetic camera has no control {id}")),
            }
        }
        Ok(Applied::Live)
    }

    fn read(&mut self, dst: Dest<'_>, wait: Duration) -> Result<Read, SourceError> {
        if self.stalled() {
            std::thread::sleep(wait);
            return Ok(Read::Timeout);
        }
        let now = Instant::now();
        if now < self.next_at {
            let left = self.next_at - now;
            std::thread::sleep(left.min(wait));
            if left > wait {
                return Ok(Read::Timeout);
            }
        }
        // Keep the cadence; after a long pause start afresh instead of bursting.
        self.next_at = (self.next_at + self.period).max(Instant::now());
        self.reads += 1;
        if let Some(k) = self.fault.error_every {
            if self.reads % k == 0 {
                return Err(SourceError::transient(format!(
                    "synthetic read {} failed (fault error_every {k})",
                    self.reads
                )));
            }
        }
        let n = self.faults.frames.fetch_add(1, Relaxed) + 1;
        let Some(img) = (match dst {
            Dest::Yuv(target) => target.image(),
            _ => None,
        }) else {
            return Ok(Read::Consumed);
        };
        self.render(n);
        super::yuyv::deinterleave(&self.yuyv, self.width, self.height, img);
        Ok(Read::Raw)
    }
}

/// Cells across the time strip: white, black, 40 bits (most significant first), black, white.
pub const STRIP_CELLS: usize = 44;
/// Bits of Unix milliseconds the strip carries (the time modulo 2^40 ms, about 35 years).
pub const STRIP_BITS: u32 = 40;

/// The time strip: the bottom `min(16, h/8)` rows, [`STRIP_CELLS`] cells of `w/44` pixels
/// (rounded down to even) from the left edge, each white (luma 235: a 1) or black (16: a 0).
/// Cells 0 and 43 are white, 1 and 42 black (a reader checks them: an image that is not a
/// strip is rejected); cells 2..42 hold `unix_ms mod 2^40`, most significant bit first. To
/// read it, sample each cell's centre on the strip's middle row against luma 128.
fn draw_time_strip(yuyv: &mut [u8], w: usize, h: usize, unix_ms: u64) {
    let cell = (w / STRIP_CELLS) & !1;
    let rows = (h / 8).min(16);
    if cell == 0 || rows == 0 {
        return;
    }
    for i in 0..STRIP_CELLS {
        let one = match i {
            0 | 43 => true,
            1 | 42 => false,
            _ => unix_ms >> (STRIP_BITS as usize - 1 - (i - 2)) & 1 == 1,
        };
        fill(yuyv, w, (i * cell, h - rows), ((i + 1) * cell, h), if one { 235 } else { 16 });
    }
}

/// 3x5 digit glyphs, one row per 3 bits.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 2, 2, 2],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// Draws `n` in white on a black box at the top left, scaled to be readable.
fn draw_number(yuyv: &mut [u8], w: usize, h: usize, n: u64) {
    let scale = (h / 60).max(2);
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut v = n;
    loop {
        digits[len] = (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    fill(yuyv, w, (0, 0), ((len * 4 + 1) * scale, 7 * scale), 16);
    for (i, &d) in digits[..len].iter().rev().enumerate() {
        for (row, bits) in DIGITS[d as usize].iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    let (x0, y0) = ((1 + i * 4 + col) * scale, (1 + row) * scale);
                    fill(yuyv, w, (x0, y0), (x0 + scale, y0 + scale), 235);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opener(fault: Option<FaultConfig>) -> SyntheticOpener {
        SyntheticOpener::new(SyntheticConfig { width: 64, height: 48, fps: 1000, quality: 80, fault })
    }

    #[test]
    fn frames_are_yuv_pictures_of_the_configured_size() {
        let mut src = opener(None).open(1, &Default::default()).unwrap();
        assert_eq!(src.delivers(), Delivers::Yuv);
        struct Target(crate::jpeg::Yuv);
        impl crate::capture::YuvTarget for Target {
            fn image(&mut self) -> Option<&mut crate::jpeg::Yuv> {
                Some(&mut self.0)
            }
        }
        let mut target = Target(crate::jpeg::Yuv::new(64, 48));
        let r = loop {
            match src.read(Dest::Yuv(&mut target), Duration::from_millis(100)).unwrap() {
                Read::Timeout => continue,
                r => break r,
            }
        };
        assert_eq!(r, Read::Raw);
        let img = &mut target.0;
        assert_eq!((img.width(), img.height()), (64, 48));
        let (y, u, _, ys, _) = img.planes_mut();
        assert_eq!((y[0], u[0]), (16, 128), "the number's box is black");
        assert_eq!(y[2 * ys + 4], 235, "frame 1: the digit's stroke is white");
        let bar_row = &y[20 * ys..20 * ys + 64];
        assert_eq!(bar_row[8..16], [235; 8], "frame 1's bar is at x 8..16");
        let mut out = vec![0u8; 64 * 1024];
        let n = crate::jpeg::Encoder::new().encode(img, 80, &mut out).unwrap();
        let decoded = image::load_from_memory_with_format(&out[..n], image::ImageFormat::Jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 48));
        let mut jpeg = [0u8; 16];
        assert_eq!(src.read(Dest::Jpeg(&mut jpeg), Duration::from_millis(100)).unwrap(), Read::Consumed);
    }

    fn next(src: &mut Box<dyn Source>) -> Result<Read, SourceError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = src.read(Dest::Discard, Duration::from_millis(20));
            if !matches!(r, Ok(Read::Timeout)) || Instant::now() > deadline {
                return r;
            }
        }
    }

    /// Reads the strip as a client would: the luma at each cell's centre.
    fn read_strip(luma: impl Fn(usize, usize) -> u8, w: usize, h: usize) -> Option<u64> {
        let (cell, rows) = ((w / STRIP_CELLS) & !1, (h / 8).min(16));
        let y = h - rows / 2 - 1;
        let bit = |i: usize| luma(i * cell + cell / 2, y) > 128;
        let framed = bit(0) && !bit(1) && !bit(42) && bit(43);
        framed.then(|| (2..42).fold(0u64, |v, i| v << 1 | u64::from(bit(i))))
    }

    #[test]
    fn the_time_strip_reads_back_after_jpeg() {
        let (w, h) = (320, 240);
        let mut yuyv = vec![0u8; w * h * 2];
        let t = 1_796_000_123_456u64 & ((1 << STRIP_BITS) - 1);
        draw_time_strip(&mut yuyv, w, h, t);
        let mut img = crate::jpeg::Yuv::new(w, h);
        super::super::yuyv::deinterleave(&yuyv, w, h, &mut img);
        let mut out = vec![0u8; 256 * 1024];
        let n = crate::jpeg::Encoder::new().encode(&img, 50, &mut out).unwrap();
        let decoded = image::load_from_memory_with_format(&out[..n], image::ImageFormat::Jpeg).unwrap().to_luma8();
        assert_eq!(read_strip(|x, y| decoded.get_pixel(x as u32, y as u32).0[0], w, h), Some(t));
        // A picture without the strip is not read as one.
        assert_eq!(read_strip(|_, _| 200, w, h), None);
    }

    #[test]
    fn the_number_is_clipped_at_the_edges_of_a_tiny_frame() {
        // 16 pixels wide: a number of 9 digits runs far past the right edge and the bottom.
        let (w, h) = (16, 16);
        let mut yuyv = vec![0u8; w * h * 2];
        draw_number(&mut yuyv, w, h, 123_456_789);
        fill(&mut yuyv, w, (40, 0), (48, h), 235);
        assert_eq!(yuyv[0], 16, "the box is drawn where it fits");
    }

    #[test]
    fn faults() {
        let mut o = opener(Some(FaultConfig { fail_open: true, ..Default::default() }));
        assert!(o.open(1, &Default::default()).err().unwrap().fatal);

        let mut o = opener(Some(FaultConfig { error_every: Some(3), ..Default::default() }));
        let mut src = o.open(1, &Default::default()).unwrap();
        let got: Vec<bool> = (0..6).map(|_| next(&mut src).is_ok()).collect();
        assert_eq!(got, [true, true, false, true, true, false]);

        let mut o = opener(Some(FaultConfig {
            stall_after_frames: Some(2),
            recover_after_reopens: Some(2),
            ..Default::default()
        }));
        let mut src = o.open(7, &Default::default()).unwrap();
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
        assert_eq!(src.read(Dest::Discard, Duration::from_millis(5)).unwrap(), Read::Timeout);
        let mut src = o.open(7, &Default::default()).unwrap(); // reopen 1: still dead
        assert_eq!(src.read(Dest::Discard, Duration::from_millis(5)).unwrap(), Read::Timeout);
        let mut src = o.open(7, &Default::default()).unwrap(); // reopen 2: healed
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
        let mut src = o.open(8, &Default::default()).unwrap(); // a new job starts afresh
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
    }
}
