//! YUYV (packed 4:2:2, what UVC cameras and vivid deliver) to planar 4:2:2, the encoder's input:
//! a byte shuffle, no arithmetic, so the encoder gets the camera's samples untouched (no RGB
//! pass, no chroma resampling).

use crate::jpeg::Yuv422;

/// Deinterleaves `width x height` YUYV pixels (`2 * width * height` bytes, rows without
/// padding; `width` even) into `img`, which takes that size.
pub fn deinterleave(yuyv: &[u8], width: usize, height: usize, img: &mut Yuv422) {
    debug_assert!(width % 2 == 0 && yuyv.len() >= width * height * 2);
    img.set_size(width, height);
    let (y, u, v, ys, cs) = img.planes_mut();
    let rows = yuyv.chunks_exact(width * 2).take(height);
    let planes = y.chunks_exact_mut(ys).zip(u.chunks_exact_mut(cs)).zip(v.chunks_exact_mut(cs));
    for (src, ((y, u), v)) in rows.zip(planes) {
        for (((px, y), u), v) in src.chunks_exact(4).zip(y.chunks_exact_mut(2)).zip(u.iter_mut()).zip(v.iter_mut()) {
            y[0] = px[0];
            *u = px[1];
            y[1] = px[2];
            *v = px[3];
        }
    }
    img.pad_edges();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_planes_and_padding_repeats_the_edge() {
        // 4x2 pixels: row r, pair p → Y0 = 10r+2p, U = 100+p, Y1 = 10r+2p+1, V = 200+p.
        let mut yuyv = Vec::new();
        for r in 0..2u8 {
            for p in 0..2u8 {
                yuyv.extend_from_slice(&[10 * r + 2 * p, 100 + p, 10 * r + 2 * p + 1, 200 + p]);
            }
        }
        let mut img = Yuv422::new(2, 2);
        deinterleave(&yuyv, 4, 2, &mut img);
        assert_eq!((img.width(), img.height()), (4, 2));
        let (y, u, v, ys, cs) = img.planes_mut();
        assert_eq!((ys, cs), (16, 8), "padded to a whole MCU");
        assert_eq!(&y[..5], &[0, 1, 2, 3, 3]);
        assert_eq!(&y[ys..ys + 4], &[10, 11, 12, 13]);
        assert_eq!(&u[..3], &[100, 101, 101]);
        assert_eq!(&v[cs..cs + 2], &[200, 201]);
        assert_eq!(&y[7 * ys..7 * ys + 4], &[10, 11, 12, 13], "rows repeat down to a whole block");
    }
}
