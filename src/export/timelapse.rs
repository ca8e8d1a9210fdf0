//! The `timelapse` export: an animated GIF, which every browser plays in an `<img>` without a
//! codec (the `gif` crate encodes it and quantises each frame to 256 colours with NeuQuant; no
//! video encoder is needed on the Pi). The range is sampled evenly down to `max_frames`, each
//! frame decoded (by libjpeg, already scaled down in the inverse DCT as far as the width allows:
//! a 1920x1080 snapshot for a 480-wide film is decoded at 480x270), averaged down to
//! `exports.timelapse.width` and written as it comes, so memory is one frame, not the film.

use std::fs::File;
use std::io::{self, BufWriter, Read};

use super::{io_failed, Ended, Run};
use crate::config::TimelapseConfig;
use crate::jpeg::{Decoder, Pixels};

/// Largest decoded frame accepted (after DCT scaling), in pixels.
const MAX_PIXELS: usize = 1 << 23;

/// NeuQuant sampling factor (1 best .. 30 fastest); 10 is gif's own default.
const SPEED: i32 = 10;

type Gif = gif::Encoder<BufWriter<File>>;

/// Writes the timelapse into `file`; returns its size.
pub fn write(run: &mut Run<'_>, file: File, cfg: &TimelapseConfig) -> Result<u64, Ended> {
    let sync = file.try_clone().map_err(|e| io_failed("open the export file", &e))?;
    let fps = run.view.fps.unwrap_or(cfg.fps).clamp(1, 50);
    let frames = u64::from(run.view.max_frames.unwrap_or(cfg.max_frames)).min(run.total).max(1);
    let total = run.total;
    // Made at the first frame, which fixes the size.
    let mut out = Some(BufWriter::with_capacity(64 * 1024, file));
    let mut encoder: Option<(Gif, (u16, u16))> = None;
    let mut jpeg = Vec::new();
    let mut decoder = Decoder::new();
    let (mut rgb, mut small) = (Vec::new(), Vec::new());
    let (mut picked, mut written, mut bad) = (0u64, 0u64, 0u64);
    let encoding = |e: gif::EncodingError| match e {
        gif::EncodingError::Io(e) => io_failed("write the timelapse", &e),
        e => Ended::Failed(format!("cannot encode the GIF: {e}")),
    };
    run.each(|run, pos, s| {
        // Frame j of `frames` is the snapshot at position floor(j * total / frames).
        if pos < picked * total / frames {
            return run.progress(written, sync.metadata().map_or(0, |m| m.len()));
        }
        picked += 1;
        jpeg.clear();
        match run.open(s).and_then(|mut f| f.read_to_end(&mut jpeg)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_failed(&format!("read snapshot {}", s.seq), &e)),
        }
        let decoded = decoder
            .scale_for(&jpeg, cfg.width as usize)
            .and_then(|(denom, ..)| decoder.decode(&jpeg, denom, Pixels::Rgb, MAX_PIXELS, &mut rgb));
        let (w, h) = match decoded {
            Ok(wh) => wh,
            Err(e) => {
                // A damaged file costs one frame, not the film.
                bad += 1;
                log::warn!("export {}: snapshot {} does not decode ({e}); skipped", run.view.id, s.seq);
                return Ok(());
            }
        };
        // The first frame fixes the size; later frames (a camera reconfigured) fit into it.
        let (gif, (ow, oh)) = match &mut encoder {
            Some(g) => g,
            None => {
                let (ow, oh) = fit(w as u32, h as u32, cfg.width);
                let mut g = gif::Encoder::new(out.take().expect("once"), ow, oh, &[]).map_err(encoding)?;
                g.set_repeat(gif::Repeat::Infinite).map_err(encoding)?;
                encoder.insert((g, (ow, oh)))
            }
        };
        let (ow, oh) = (*ow, *oh);
        resize(&rgb[..w * h * 3], (w, h), &mut small, (usize::from(ow), usize::from(oh)));
        let mut frame = gif::Frame::from_rgb_speed(ow, oh, &small, SPEED);
        frame.delay = (100 / fps) as u16; // hundredths of a second
        gif.write_frame(&frame).map_err(encoding)?;
        written += 1;
        run.progress(written, sync.metadata().map_or(0, |m| m.len()))
    })?;
    let Some((gif, _)) = encoder else {
        return Err(Ended::Failed(format!(
            "no snapshot of the range could be read ({bad} did not decode, the rest were deleted by retention)"
        )));
    };
    // The trailer, then the buffer flushed: a disk that filled on the last block is an error
    // here, not one a drop would swallow.
    let buffered = gif.into_inner().map_err(encoding)?;
    buffered.into_inner().map_err(|e| io_failed("write the timelapse", e.error()))?;
    sync.sync_all().map_err(|e| io_failed("sync the timelapse", &e))?;
    let len = sync.metadata().map_err(|e| io_failed("read the timelapse size", &e))?.len();
    run.progress(written, len)?;
    run.publish(written, len);
    Ok(len)
}

/// Scales an RGB image to `(ow, oh)`: each output pixel is the mean of the source pixels under
/// it (at least one), which is what a downscale by less than two (after the DCT's) wants.
fn resize(src: &[u8], (w, h): (usize, usize), out: &mut Vec<u8>, (ow, oh): (usize, usize)) {
    out.clear();
    out.reserve(ow * oh * 3);
    let span = |o: usize, n: usize, on: usize| {
        let a = o * n / on;
        (a, ((o + 1) * n / on).max(a + 1).min(n))
    };
    for oy in 0..oh {
        let (y0, y1) = span(oy, h, oh);
        for ox in 0..ow {
            let (x0, x1) = span(ox, w, ow);
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                for px in src[(y * w + x0) * 3..(y * w + x1) * 3].chunks_exact(3) {
                    sum.iter_mut().zip(px).for_each(|(s, &v)| *s += u32::from(v));
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            out.extend(sum.iter().map(|s| ((s + n / 2) / n) as u8));
        }
    }
}

/// The output size: at most `max_w` wide, the aspect ratio kept, never upscaled (and within
/// a GIF's 65,535).
fn fit(w: u32, h: u32, max_w: u32) -> (u16, u16) {
    let ow = w.min(max_w).clamp(1, 65_535);
    let oh = ((u64::from(h) * u64::from(ow) + u64::from(w) / 2) / u64::from(w.max(1))).clamp(1, 65_535);
    (ow as u16, oh as u16)
}

#[cfg(test)]
mod tests {
    use super::{fit, resize};

    #[test]
    fn resize_averages_and_keeps_flat_colour() {
        // 4x2 -> 2x1: each output pixel is the mean of a 2x2 block.
        let src: Vec<u8> = [[0, 0, 0], [100, 50, 10], [200, 200, 200], [200, 200, 200]]
            .iter()
            .chain(&[[100, 50, 10], [0, 0, 0], [200, 200, 200], [200, 200, 200]])
            .flatten()
            .copied()
            .collect();
        let mut out = Vec::new();
        resize(&src, (4, 2), &mut out, (2, 1));
        assert_eq!(out, [50, 25, 5, 200, 200, 200]);
        // Up (a later, smaller frame fitted into the first one's size): nearest pixel.
        resize(&[9, 8, 7], (1, 1), &mut out, (3, 2));
        assert_eq!(out, [9, 8, 7].repeat(6));
        // 3 -> 2 columns: spans 0..1 and 1..3.
        resize(&[0, 0, 0, 30, 30, 30, 90, 90, 90], (3, 1), &mut out, (2, 1));
        assert_eq!(out, [0, 0, 0, 60, 60, 60]);
    }

    #[test]
    fn frames_scale_down_keeping_the_aspect_ratio() {
        assert_eq!(fit(640, 480, 480), (480, 360));
        assert_eq!(fit(1920, 1080, 480), (480, 270));
        assert_eq!(fit(320, 240, 480), (320, 240), "never upscaled");
        assert_eq!(fit(4000, 1, 480), (480, 1));
    }
}
