//! Where a picture goes in an OUTPUT buffer, as the driver laid it out, and the one copy into
//! it. Only what the driver read back is used (its stride and rows, which bcm2835-codec
//! rounds up): never a layout assumed from the picture size.

use super::{Format, NV12, YUV420};
use crate::jpeg::Yuv;

/// The raw formats camjobd can fill: both 4:2:0 in one buffer (one plane in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    /// `YU12`: Y, then U, then V, chroma rows half as long.
    I420,
    /// `NV12`: Y, then U and V interleaved, chroma rows as long as luma rows.
    Nv12,
}

impl Raw {
    /// The V4L2 pixel format.
    pub fn fourcc(self) -> u32 {
        match self {
            Raw::I420 => YUV420,
            Raw::Nv12 => NV12,
        }
    }

    /// Its name in V4L2 and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Raw::I420 => "YUV420",
            Raw::Nv12 => "NV12",
        }
    }
}

/// A picture's place in an OUTPUT buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Which format.
    pub raw: Raw,
    /// The picture, pixels (even).
    pub width: usize,
    /// See `width`.
    pub height: usize,
    /// Luma row stride, bytes (the driver's bytesperline).
    pub stride: usize,
    /// Luma rows in the buffer (the driver's height: at least the picture's).
    pub rows: usize,
    /// Bytes the driver expects (its sizeimage).
    pub bytes: usize,
}

impl Layout {
    /// The layout the driver read back for a picture of `width x height`, or why it cannot be
    /// filled.
    pub fn new(raw: Raw, got: &Format, width: usize, height: usize) -> Result<Layout, String> {
        let (stride, rows) = (got.bytesperline as usize, got.height as usize);
        if got.fourcc != raw.fourcc() {
            return Err(format!("it set {} instead", super::fourcc_name(got.fourcc)));
        }
        if got.planes != 1 {
            return Err(format!("it wants {} separate planes (only one buffer per picture is supported)", got.planes));
        }
        if (got.width as usize) < width || rows < height || stride < width {
            return Err(format!("it set {}x{} with rows of {stride} bytes", got.width, got.height));
        }
        let layout = Layout { raw, width, height, stride, rows, bytes: got.sizeimage as usize };
        if layout.bytes < layout.needed() {
            return Err(format!("its buffer of {} bytes is smaller than {} bytes", layout.bytes, layout.needed()));
        }
        Ok(layout)
    }

    /// Chroma row stride: half the luma's for I420 (V4L2's rule for single-buffer YUV420), the
    /// same for NV12.
    fn chroma_stride(&self) -> usize {
        match self.raw {
            Raw::I420 => self.stride / 2,
            Raw::Nv12 => self.stride,
        }
    }

    /// Bytes the three planes span.
    pub fn needed(&self) -> usize {
        let luma = self.stride * self.rows;
        let chroma = self.chroma_stride() * self.rows.div_ceil(2);
        match self.raw {
            Raw::I420 => luma + 2 * chroma,
            Raw::Nv12 => luma + chroma,
        }
    }
}

/// Full-range samples (JPEG's YCbCr) squeezed into the limited range an encoder's stream says
/// it carries by default: no driver's VUI settings are trusted to say "full" (unverified on a
/// board), so the samples are made to fit what every player assumes.
pub struct Squeeze {
    y: [u8; 256],
    c: [u8; 256],
}

impl Squeeze {
    /// The two tables: Y 0–255 to 16–235, Cb/Cr 0–255 to 16–240 around 128.
    pub fn new() -> Squeeze {
        Squeeze {
            y: std::array::from_fn(|v| (16.0 + v as f64 * 219.0 / 255.0).round() as u8),
            c: std::array::from_fn(|v| (128.0 + (v as f64 - 128.0) * 224.0 / 255.0).round() as u8),
        }
    }
}

impl Default for Squeeze {
    fn default() -> Self {
        Squeeze::new()
    }
}

/// Copies `src` into `dst`, through `table` when given.
fn copy_row(dst: &mut [u8], src: &[u8], table: Option<&[u8; 256]>) {
    match table {
        None => dst.copy_from_slice(src),
        Some(t) => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = t[usize::from(s)]),
    }
}

/// Copies `img` (4:2:0, or 4:2:2 read every other chroma row) into `dst` laid out as `l`,
/// through `squeeze` when the picture is full range. Rows the driver added below the picture
/// repeat its last row, so the encoder's padding macroblocks cost nothing. Columns: the
/// image's own padding (to 16) where the stride has room.
pub fn copy_420(img: &Yuv, l: &Layout, dst: &mut [u8], squeeze: Option<&Squeeze>) {
    let (y, u, v, ys, _) = img.planes();
    let (w, h) = (l.width.min(img.width()), l.height.min(img.height()));
    if w == 0 || h == 0 || dst.len() < l.needed() {
        return;
    }
    let n = w.next_multiple_of(16).min(ys).min(l.stride);
    let (dy, dc) = dst.split_at_mut(l.stride * l.rows);
    for (r, row) in dy.chunks_exact_mut(l.stride).enumerate() {
        let s = r.min(h - 1) * ys;
        copy_row(&mut row[..n], &y[s..s + n], squeeze.map(|t| &t.y));
    }
    let (crows, cw, cn) = (l.rows.div_ceil(2), w / 2, n / 2);
    let cst = l.chroma_stride();
    // Chroma row r of the 4:2:0 picture: row r of a 4:2:0 image, row 2r of a 4:2:2 one.
    let step = img.chroma_stride_420();
    let src_row = |r: usize| r.min(h.div_ceil(2) - 1) * step;
    match l.raw {
        Raw::I420 => {
            let (du, dv) = dc.split_at_mut(cst * crows);
            for r in 0..crows {
                let s = src_row(r);
                let c = squeeze.map(|t| &t.c);
                copy_row(&mut du[r * cst..r * cst + cn], &u[s..s + cn], c);
                copy_row(&mut dv[r * cst..r * cst + cn], &v[s..s + cn], c);
            }
        }
        Raw::Nv12 => {
            for (r, row) in dc.chunks_exact_mut(cst).take(crows).enumerate() {
                let s = src_row(r);
                let c = |x: u8| squeeze.map_or(x, |t| t.c[usize::from(x)]);
                for (i, pair) in row[..2 * cw].chunks_exact_mut(2).enumerate() {
                    pair[0] = c(u[s + i]);
                    pair[1] = c(v[s + i]);
                }
            }
        }
    }
}
