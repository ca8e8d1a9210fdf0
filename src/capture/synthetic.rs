//! The synthetic camera: a moving test pattern with the frame number drawn in, JPEG-encoded
//! with `image`, paced at `fps`. It only renders and encodes frames somebody keeps (the caller
//! passes no buffer otherwise), like a YUYV camera that encodes only kept snapshots.
//!
//! Fault injection (`fault` in the config) drives the failure paths from outside: a camera
//! that stops delivering, one whose reads fail, one that cannot be opened. Fault counters are
//! per job and live in the opener, so reopening does not reset them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;

use crate::capture::{DropCause, Opener, Read, SliceWriter, Source, SourceError};
use crate::config::{FaultConfig, SyntheticConfig};

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
    fn open(&mut self, job_id: u64) -> Result<Box<dyn Source>, SourceError> {
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
        let (w, h) = (self.config.width, self.config.height);
        Ok(Box::new(Synthetic {
            width: w,
            height: h,
            quality: self.config.quality,
            period: Duration::from_secs_f64(1.0 / self.config.fps as f64),
            next_at: Instant::now(),
            rgb: vec![0; w as usize * h as usize * 3].into_boxed_slice(),
            reads: 0,
            fault,
            faults: Arc::clone(&self.faults),
        }))
    }
}

struct Synthetic {
    width: u32,
    height: u32,
    quality: u8,
    period: Duration,
    /// When the next frame is due.
    next_at: Instant,
    /// The render target, allocated once at open.
    rgb: Box<[u8]>,
    /// Frame slots so far in this open (for `error_every`).
    reads: u64,
    fault: FaultConfig,
    faults: Arc<JobFaults>,
}

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
        let (w, h) = (self.width as usize, self.height as usize);
        let shift = (n * 4) as usize;
        for y in 0..h {
            let row = &mut self.rgb[y * w * 3..(y + 1) * w * 3];
            for x in 0..w {
                let p = &mut row[x * 3..x * 3 + 3];
                p[0] = ((x + shift) * 255 / w.max(1)) as u8;
                p[1] = (y * 255 / h.max(1)) as u8;
                p[2] = (((x + y + shift) / 8) % 2 * 160) as u8;
            }
        }
        // A white bar sweeping across, so motion is obvious on the dashboard.
        let bar_x = (n as usize * 8) % w;
        for y in 0..h {
            for x in bar_x..(bar_x + 8).min(w) {
                self.rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(255);
            }
        }
        draw_number(&mut self.rgb, w, h, n);
    }
}

impl Source for Synthetic {
    fn read(&mut self, dst: Option<&mut [u8]>, wait: Duration) -> Result<Read, SourceError> {
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
        let Some(dst) = dst else { return Ok(Read::Consumed) };
        self.render(n);
        let mut out = SliceWriter { buf: dst, len: 0 };
        let mut enc = JpegEncoder::new_with_quality(&mut out, self.quality);
        match enc.encode(&self.rgb, self.width, self.height, ExtendedColorType::Rgb8) {
            Ok(()) => Ok(Read::Frame { len: out.len, width: self.width, height: self.height }),
            Err(_) if out.len == out.buf.len() => Ok(Read::Dropped(DropCause::Oversize)),
            Err(e) => Err(SourceError::transient(format!("synthetic JPEG encoding failed: {e}"))),
        }
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
fn draw_number(rgb: &mut [u8], w: usize, h: usize, n: u64) {
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
    let box_w = (len * 4 + 1) * scale;
    let box_h = 7 * scale;
    for y in 0..box_h.min(h) {
        for x in 0..box_w.min(w) {
            rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(0);
        }
    }
    for (i, &d) in digits[..len].iter().rev().enumerate() {
        for (row, bits) in DIGITS[d as usize].iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    let x0 = (1 + i * 4 + col) * scale;
                    let y0 = (1 + row) * scale;
                    for y in y0..(y0 + scale).min(h) {
                        for x in x0..(x0 + scale).min(w) {
                            rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(255);
                        }
                    }
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
    fn frames_are_real_jpegs_of_the_configured_size() {
        let mut src = opener(None).open(1).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let r = loop {
            match src.read(Some(&mut buf), Duration::from_millis(100)).unwrap() {
                Read::Timeout => continue,
                r => break r,
            }
        };
        let Read::Frame { len, width, height } = r else { panic!("{r:?}") };
        assert_eq!((width, height), (64, 48));
        let img = image::load_from_memory_with_format(&buf[..len], image::ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
        assert!(matches!(src.read(None, Duration::from_millis(100)).unwrap(), Read::Consumed | Read::Timeout));
    }

    #[test]
    fn a_small_buffer_is_an_oversize_drop() {
        let mut src = opener(None).open(1).unwrap();
        let mut buf = vec![0u8; 100];
        let r = loop {
            match src.read(Some(&mut buf), Duration::from_millis(100)).unwrap() {
                Read::Timeout => continue,
                r => break r,
            }
        };
        assert_eq!(r, Read::Dropped(DropCause::Oversize));
    }

    fn next(src: &mut Box<dyn Source>) -> Result<Read, SourceError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = src.read(None, Duration::from_millis(20));
            if !matches!(r, Ok(Read::Timeout)) || Instant::now() > deadline {
                return r;
            }
        }
    }

    #[test]
    fn faults() {
        let mut o = opener(Some(FaultConfig { fail_open: true, ..Default::default() }));
        assert!(o.open(1).err().unwrap().fatal);

        let mut o = opener(Some(FaultConfig { error_every: Some(3), ..Default::default() }));
        let mut src = o.open(1).unwrap();
        let got: Vec<bool> = (0..6).map(|_| next(&mut src).is_ok()).collect();
        assert_eq!(got, [true, true, false, true, true, false]);

        let mut o = opener(Some(FaultConfig {
            stall_after_frames: Some(2),
            recover_after_reopens: Some(2),
            ..Default::default()
        }));
        let mut src = o.open(7).unwrap();
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
        assert_eq!(src.read(None, Duration::from_millis(5)).unwrap(), Read::Timeout);
        let mut src = o.open(7).unwrap(); // reopen 1: still dead
        assert_eq!(src.read(None, Duration::from_millis(5)).unwrap(), Read::Timeout);
        let mut src = o.open(7).unwrap(); // reopen 2: healed
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
        let mut src = o.open(8).unwrap(); // a new job starts afresh
        assert_eq!(next(&mut src).unwrap(), Read::Consumed);
    }
}
