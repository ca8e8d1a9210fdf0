//! The `timelapse` export: an animated GIF, which every browser plays in an `<img>` without a
//! codec (the `image` crate on the design card encodes it; no video encoder is needed on the
//! Pi). The range is sampled evenly down to `max_frames`, each frame decoded (by libjpeg,
//! already scaled down in the inverse DCT as far as the width allows: a 1920x1080 snapshot for
//! a 480-wide film is decoded at 480x270), scaled to `exports.timelapse.width` and quantised
//! to 256 colours; frames are written as they come, so memory is one frame, not the film.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::rc::Rc;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, DynamicImage, RgbImage};

use super::{io_failed, Ended, Run};
use crate::config::TimelapseConfig;
use crate::jpeg::{Decoder, Pixels};

/// Largest decoded frame accepted (after DCT scaling), in pixels.
const MAX_PIXELS: usize = 1 << 23;

/// NeuQuant sampling factor (1 best .. 30 fastest); 10 is gif's own default.
const SPEED: i32 = 10;

/// Writes the timelapse into `file`; returns its size.
pub fn write(run: &mut Run<'_>, file: File, cfg: &TimelapseConfig) -> Result<u64, Ended> {
    let sync = file.try_clone().map_err(|e| io_failed("open the export file", &e))?;
    let fps = run.view.fps.unwrap_or(cfg.fps).clamp(1, 50);
    let frames = u64::from(run.view.max_frames.unwrap_or(cfg.max_frames)).min(run.total).max(1);
    let total = run.total;
    let error = Rc::new(RefCell::new(None));
    let out = Checked { file, error: Rc::clone(&error) };
    let mut encoder = GifEncoder::new_with_speed(BufWriter::with_capacity(64 * 1024, out), SPEED);
    encoder.set_repeat(Repeat::Infinite).map_err(|e| Ended::Failed(format!("cannot start the GIF: {e}")))?;
    let mut jpeg = Vec::new();
    let mut decoder = Decoder::new();
    let mut rgb = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    let (mut picked, mut written, mut bad) = (0u64, 0u64, 0u64);
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
        let img = match decoded {
            Ok((w, h)) => {
                rgb.truncate(w * h * 3);
                let pixels = std::mem::take(&mut rgb);
                DynamicImage::ImageRgb8(RgbImage::from_raw(w as u32, h as u32, pixels).expect("w x h x 3 bytes"))
            }
            Err(e) => {
                // A damaged file costs one frame, not the film.
                bad += 1;
                log::warn!("export {}: snapshot {} does not decode ({e}); skipped", run.view.id, s.seq);
                return Ok(());
            }
        };
        // The first frame fixes the size; later frames (a camera reconfigured) fit into it.
        let (w, h) = *size.get_or_insert_with(|| fit(img.width(), img.height(), cfg.width));
        let small: DynamicImage = img.thumbnail_exact(w, h);
        let frame = image::Frame::from_parts(small.to_rgba8(), 0, 0, Delay::from_numer_denom_ms(1000, fps));
        rgb = img.into_rgb8().into_raw(); // the buffer, for the next frame
        encoder.encode_frame(frame).map_err(|e| Ended::Failed(format!("cannot encode the GIF: {e}")))?;
        written += 1;
        run.progress(written, sync.metadata().map_or(0, |m| m.len()))
    })?;
    if written == 0 {
        return Err(Ended::Failed(format!(
            "no snapshot of the range could be read ({bad} did not decode, the rest were deleted by retention)"
        )));
    }
    // Dropping the encoder writes the GIF trailer and flushes the buffer; `Checked` keeps the
    // error a drop would swallow (a disk that filled up on the last block).
    drop(encoder);
    if let Some(e) = error.borrow_mut().take() {
        return Err(io_failed("write the timelapse", &e));
    }
    sync.sync_all().map_err(|e| io_failed("sync the timelapse", &e))?;
    let len = sync.metadata().map_err(|e| io_failed("read the timelapse size", &e))?.len();
    run.progress(written, len)?;
    run.publish(written, len);
    Ok(len)
}

/// A file that remembers its first write error, which `BufWriter`'s drop would discard.
struct Checked {
    file: File,
    error: Rc<RefCell<Option<io::Error>>>,
}

impl Write for Checked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf).inspect_err(|e| {
            self.error.borrow_mut().get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The output size: at most `max_w` wide, the aspect ratio kept, never upscaled.
fn fit(w: u32, h: u32, max_w: u32) -> (u32, u32) {
    let ow = w.min(max_w).max(1);
    let oh = ((u64::from(h) * u64::from(ow) + u64::from(w) / 2) / u64::from(w.max(1))).max(1) as u32;
    (ow, oh)
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn frames_scale_down_keeping_the_aspect_ratio() {
        assert_eq!(fit(640, 480, 480), (480, 360));
        assert_eq!(fit(1920, 1080, 480), (480, 270));
        assert_eq!(fit(320, 240, 480), (320, 240), "never upscaled");
        assert_eq!(fit(4000, 1, 480), (480, 1));
    }
}
