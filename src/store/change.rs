//! Change scores: how different a kept snapshot is from the previous kept one, measured on a
//! small grayscale thumbnail so the cost does not depend on the camera's resolution and the
//! thumbnails live in fixed arrays. The score is the mean absolute difference of the
//! thumbnails as a percentage of full scale: 0 for identical images, 100 for black vs white.

use crate::jpeg::{Decoder, Pixels};

/// Thumbnail width in pixels.
pub const THUMB_W: usize = 32;
/// Thumbnail height in pixels.
pub const THUMB_H: usize = 24;
/// A grayscale thumbnail.
pub type Thumb = [u8; THUMB_W * THUMB_H];

/// Largest decoded image accepted (after scaling): an 8K frame at 1/8 is 960x540.
const MAX_PIXELS: usize = 1 << 20;

/// Decodes JPEGs into thumbnails, reusing one pixel buffer (it grows to the largest image once).
/// Only luma is decoded, scaled down in the inverse DCT (1/8 where the image stays at least
/// twice the thumbnail's width): 640x480 becomes 80x60 without computing the other 98 % of
/// the pixels (docs/encoding.md, for the figures).
#[derive(Default)]
pub struct Thumbnailer {
    decoder: Decoder,
    pixels: Vec<u8>,
}

impl Thumbnailer {
    /// The thumbnail of a JPEG, by averaging the pixels of each cell.
    pub fn thumbnail(&mut self, jpeg: &[u8], out: &mut Thumb) -> Result<(), crate::jpeg::Error> {
        let (denom, ..) = self.decoder.scale_for(jpeg, THUMB_W * 2)?;
        let (w, h) = self.decoder.decode(jpeg, denom, Pixels::Gray, MAX_PIXELS, &mut self.pixels)?;
        let mut sums = [0u32; THUMB_W * THUMB_H];
        let mut counts = [0u32; THUMB_W * THUMB_H];
        for (y, row) in self.pixels[..w * h].chunks_exact(w).enumerate() {
            let ty = y * THUMB_H / h;
            for (x, &luma) in row.iter().enumerate() {
                let cell = ty * THUMB_W + x * THUMB_W / w;
                sums[cell] += u32::from(luma);
                counts[cell] += 1;
            }
        }
        for i in 0..out.len() {
            out[i] = sums[i].checked_div(counts[i]).unwrap_or(0) as u8;
        }
        Ok(())
    }
}

/// The change between two thumbnails, 0–100.
pub fn score(a: &Thumb, b: &Thumb) -> f32 {
    let sum: u32 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u32).sum();
    sum as f32 * 100.0 / (255.0 * a.len() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_fn(160, 120, |x, y| image::Rgb(f(x, y)));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        out
    }

    #[test]
    fn scores_rank_changes_sensibly() {
        let mut t = Thumbnailer::default();
        let (mut a, mut b, mut c, mut d) =
            ([0; THUMB_W * THUMB_H], [0; THUMB_W * THUMB_H], [0; THUMB_W * THUMB_H], [0; THUMB_W * THUMB_H]);
        t.thumbnail(&jpeg(|x, y| [(x % 200) as u8, (y * 2) as u8, 90]), &mut a).unwrap();
        t.thumbnail(&jpeg(|x, y| [(x % 200) as u8, (y * 2) as u8, 90]), &mut b).unwrap();
        // Same scene with a 40x30 white box: a quarter of a quarter of the image.
        t.thumbnail(
            &jpeg(|x, y| if x < 40 && y < 30 { [255; 3] } else { [(x % 200) as u8, (y * 2) as u8, 90] }),
            &mut c,
        )
        .unwrap();
        t.thumbnail(&jpeg(|_, _| [0; 3]), &mut d).unwrap();
        let same = score(&a, &b);
        let small = score(&a, &c);
        let big = score(&a, &d);
        assert!(same < 0.5, "identical scenes: {same}");
        assert!(small > 2.0 && small < 15.0, "a small object: {small}");
        assert!(big > small, "{big} vs {small}");
        assert_eq!(score(&[255; THUMB_W * THUMB_H], &[0; THUMB_W * THUMB_H]), 100.0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut t = Thumbnailer::default();
        let mut out = [0; THUMB_W * THUMB_H];
        assert!(t.thumbnail(b"\xff\xd8 not really", &mut out).is_err());
        assert!(t.thumbnail(b"", &mut out).is_err());
    }
}
