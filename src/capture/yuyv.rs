//! YUYV (packed 4:2:2, BT.601 limited range, what UVC cameras and vivid deliver) to RGB, in
//! integer arithmetic into a buffer allocated once. Only kept snapshots are converted; other
//! frames are counted and handed back to the driver untouched.

/// Converts `width x height` YUYV pixels (`2 * width * height` bytes) into `rgb`
/// (`3 * width * height` bytes). `width` is even for YUYV.
pub fn to_rgb(yuyv: &[u8], width: usize, height: usize, rgb: &mut [u8]) {
    let pixels = width * height;
    debug_assert!(yuyv.len() >= pixels * 2 && rgb.len() >= pixels * 3);
    for (src, dst) in yuyv[..pixels * 2].chunks_exact(4).zip(rgb[..pixels * 3].chunks_exact_mut(6)) {
        let (u, v) = (i32::from(src[1]) - 128, i32::from(src[3]) - 128);
        // Chroma terms shared by the two pixels (coefficients x 256).
        let r = 409 * v;
        let g = -100 * u - 208 * v;
        let b = 516 * u;
        for (k, y) in [src[0], src[2]].into_iter().enumerate() {
            let c = 298 * (i32::from(y) - 16) + 128;
            dst[k * 3] = ((c + r) >> 8).clamp(0, 255) as u8;
            dst[k * 3 + 1] = ((c + g) >> 8).clamp(0, 255) as u8;
            dst[k * 3 + 2] = ((c + b) >> 8).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_rgb;

    #[test]
    fn bt601_limited_range() {
        // Black, white, and 100% red and blue (BT.601 limited range).

        let cases: [([u8; 3], [u8; 3]); 4] = [
            ([16, 128, 128], [0, 0, 0]),
            ([235, 128, 128], [255, 255, 255]),
            ([81, 90, 240], [255, 0, 0]),
            ([41, 240, 110], [0, 0, 255]),
        ];
        for ([y, u, v], want) in cases {
            let mut rgb = [0u8; 6];
            to_rgb(&[y, u, y, v], 2, 1, &mut rgb);
            for (got, want) in rgb[..3].iter().zip(want) {
                assert!(got.abs_diff(want) <= 2, "YUV {y},{u},{v}: got {:?}, want {want:?}", &rgb[..3]);
            }
            assert_eq!(rgb[..3], rgb[3..], "both pixels of a pair share chroma");
        }
    }
}
