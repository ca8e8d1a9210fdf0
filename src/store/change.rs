//! Change scores: how different a kept snapshot is from the previous kept one, measured on a
//! small grayscale thumbnail so the cost does not depend on the camera's resolution and the
//! thumbnails live in fixed arrays. The score is the mean absolute difference of the
//! thumbnails as a percentage of full scale: 0 for identical images, 100 for black vs white.

use image::codecs::jpeg::JpegDecoder;
use image::{ColorType, ImageDecoder};

/// Thumbnail width in pixels.
pub const THUMB_W: usize = 32;
/// Thumbnail height in pixels.
pub const THUMB_H: usize = 24;
/// A grayscale thumbnail.
pub type Thumb = [u8; THUMB_W * THUMB_H];

/// Decodes JPEGs into thumbnails, reusing one pixel buffer (it grows to the largest frame once).
#[derive(Default)]
pub struct Thumbnailer {
    pixels: Vec<u8>,
}

impl Thumbnailer {
    /// The thumbnail of a JPEG, by averaging the pixels of each cell.
    pub fn thumbnail(&mut self, jpeg: &[u8], out: &mut Thumb) -> Result<(), String> {
        let dec = JpegDecoder::new(std::io::Cursor::new(jpeg)).map_err(|e| e.to_string())?;
        let (w, h) = dec.dimensions();
        let channels = match dec.color_type() {
            ColorType::L8 => 1,
            ColorType::Rgb8 => 3,
            other => return Err(format!("unsupported JPEG colour type {other:?}")),
        };
        let (w, h) = (w as usize, h as usize);
        if w == 0 || h == 0 {
            return Err("empty image".into());
        }
        self.pixels.resize(dec.total_bytes() as usize, 0);
        dec.read_image(&mut self.pixels).map_err(|e| e.to_string())?;
        let mut sums = [0u32; THUMB_W * THUMB_H];
        let mut counts = [0u32; THUMB_W * THUMB_H];
        for y in 0..h {
            let ty = y * THUMB_H / h;
            let row = &self.pixels[y * w * channels..(y + 1) * w * channels];
            for x in 0..w {
                let p = &row[x * channels..x * channels + channels];
                // Integer luma (BT.601 weights); gray images use the value as is.
                let luma = if channels == 3 {
                    (77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32) >> 8
                } else {
                    p[0] as u32
                };
                let cell = ty * THUMB_W + x * THUMB_W / w;
                sums[cell] += luma;
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
