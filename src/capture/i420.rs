//! Raw I420 frames from a byte stream (`rpicam-vid --codec yuv420 -o -`): each frame is the
//! Y plane (`width x height`), then U and V (`width/2 x height/2`), back to back, with no
//! header. A frame is staged whole in one fixed buffer, then copied into an encoder's 4:2:0
//! image ([`Yuv`]) as it is: no colour conversion, no resampling.

use std::io;

use crate::jpeg::{Sampling, Yuv};

/// Splits a stream into I420 frames of one size.
pub struct I420Frames {
    buf: Vec<u8>,
    filled: usize,
    width: usize,
    height: usize,
}

impl I420Frames {
    /// Frames of `width x height` (both even).
    pub fn new(width: usize, height: usize) -> I420Frames {
        // Written once, so that the staging buffer is resident from the start.
        I420Frames { buf: vec![0x80; Self::frame_bytes(width, height)], filled: 0, width, height }
    }

    /// Bytes of one frame.
    pub fn frame_bytes(width: usize, height: usize) -> usize {
        width * height + 2 * (width / 2) * (height / 2)
    }

    /// Reads what is there, up to the end of the current frame (never past it, so a frame is
    /// never split between two buffers). `Ok(0)` is the end of the stream.
    pub fn fill_from<R: io::Read>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.filled == self.buf.len() {
            return Err(io::Error::other("i420 frame buffer full: take the frame before reading more"));
        }
        let n = super::mjpeg::read_some(r, &mut self.buf[self.filled..])?;
        self.filled += n;
        Ok(n)
    }

    /// Whether a whole frame is staged.
    pub fn ready(&self) -> bool {
        self.filled == self.buf.len()
    }

    /// The frame's size.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Takes the staged frame: copies it into `img` (made a 4:2:0 image of the frame's size)
    /// when given, and makes room for the next. Call only when [`I420Frames::ready`].
    pub fn take(&mut self, img: Option<&mut Yuv>) {
        debug_assert!(self.ready());
        self.filled = 0;
        let Some(img) = img else { return };
        let (w, h) = (self.width, self.height);
        img.set_format(w, h, Sampling::S420);
        // rpicam-vid's YUV420 is in JPEG's colour space: full range.
        img.set_full_range(true);
        let (y, u, v, ys, cs) = img.planes_mut();
        let (src_y, rest) = self.buf.split_at(w * h);
        let (src_u, src_v) = rest.split_at((w / 2) * (h / 2));
        for (plane, stride, src, sw) in [(y, ys, src_y, w), (u, cs, src_u, w / 2), (v, cs, src_v, w / 2)] {
            for (dst, row) in plane.chunks_exact_mut(stride).zip(src.chunks_exact(sw)) {
                dst[..sw].copy_from_slice(row);
            }
        }
        img.pad_edges();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose every sample says where it is: Y = (x + y) mod 251, U = row, V = column.
    fn frame(w: usize, h: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for r in 0..h {
            out.extend((0..w).map(|x| ((x + r) % 251) as u8));
        }
        for r in 0..h / 2 {
            out.extend((0..w / 2).map(|_| r as u8));
        }
        for _ in 0..h / 2 {
            out.extend((0..w / 2).map(|x| x as u8));
        }
        out
    }

    #[test]
    fn frames_arrive_whole_in_any_read_sizes_and_land_in_their_planes() {
        let (w, h) = (40, 22);
        let one = frame(w, h);
        assert_eq!(one.len(), I420Frames::frame_bytes(w, h));
        let stream: Vec<u8> = [one.clone(), one.clone(), one].concat();
        let mut frames = I420Frames::new(w, h);
        let mut img = Yuv::new(64, 64);
        let mut got = 0;
        // Reads of 7 bytes at a time: a frame is staged across many reads, never beyond.
        let mut reader = io::Cursor::new(stream);
        loop {
            let mut chunk = [0u8; 7];
            let n = io::Read::read(&mut reader, &mut chunk).unwrap();
            if n == 0 {
                break;
            }
            let mut part = &chunk[..n];
            while !part.is_empty() {
                let k = frames.fill_from(&mut part).unwrap();
                assert!(k > 0);
                if frames.ready() {
                    frames.take(Some(&mut img));
                    got += 1;
                }
            }
        }
        assert_eq!(got, 3);
        assert_eq!((img.width(), img.height(), img.sampling()), (w, h, Sampling::S420));
        let (y, u, v, ys, cs) = img.planes();
        for r in 0..h {
            for x in 0..w {
                assert_eq!(y[r * ys + x], ((x + r) % 251) as u8);
            }
        }
        for r in 0..h / 2 {
            for x in 0..w / 2 {
                assert_eq!((u[r * cs + x], v[r * cs + x]), (r as u8, x as u8), "chroma at {x},{r}");
            }
        }
        // Padding repeats the edge: the encoder reads whole blocks.
        assert_eq!(y[3 * ys + w], y[3 * ys + w - 1]);
    }

    #[test]
    fn a_frame_nobody_wants_is_skipped_without_a_copy() {
        let mut frames = I420Frames::new(4, 2);
        let data = frame(4, 2);
        frames.fill_from(&mut &data[..]).unwrap();
        assert!(frames.ready());
        frames.take(None);
        assert!(!frames.ready());
        assert!(frames.fill_from(&mut &data[..5]).is_ok());
    }
}
