//! The "no live video" picture. While a camera is not RUNNING, the MJPEG stream and `/snapshot`
//! still send a frame: this one. A client then neither times out waiting for data nor shows a
//! blank or frozen picture with no explanation, because the job state and its reason are drawn
//! into the image (like ustreamer's "NO LIVE VIDEO" frame).
//!
//! Self-contained on purpose: a built-in bitmap font (so no font file can be missing on a board)
//! and libjpeg-turbo's encoder ([`crate::jpeg`]), which the cameras use too.

use crate::jpeg::{Encoder, Yuv};

/// JPEG quality: the picture is flat grey and text, so 75 is sharp enough and stays small.
const QUALITY: u8 = 75;
/// Size limits. Below 64 there is no room for a word; above 4096 the RGB buffer alone would be
/// tens of MB on a board that may have 512 MB.
const MIN_SIDE: u32 = 64;
const MAX_SIDE: u32 = 4096;
/// At most this many text rows (after wrapping): the picture is a notice, not a log.
const MAX_ROWS: usize = 8;

const BACKGROUND: [u8; 3] = [40, 40, 40];
/// The state (first line) is white and larger; the reason a lighter grey, so the state reads first.
const TITLE_COLOUR: [u8; 3] = [255, 255, 255];
const TEXT_COLOUR: [u8; 3] = [190, 190, 190];

/// Renders a dark-grey `width` x `height` JPEG (quality ~75) with `lines` of text centred on it,
/// in a built-in bitmap font, scaled to the image size. Returns the JPEG bytes.
///
/// The first line (the state, e.g. "FAILED") is drawn larger and brighter than the others. Lines
/// too long for the width are wrapped at spaces (words longer than a row are cut), `\n` starts a
/// new row, blank lines are skipped, and at most 8 rows are drawn; rows that do not fit are
/// dropped and the last row drawn ends in "...". Lowercase letters are drawn as capitals and
/// characters the font lacks as a small box. `width` and `height` are clamped to 64..=4096 and
/// rounded down to even, so any input gives a picture. Never panics.
///
/// Costs a full-frame JPEG encode, so callers should render once per state change, not per frame.
pub fn render(width: u32, height: u32, lines: &[&str]) -> Vec<u8> {
    let (w, h) = clamp_size(width, height);
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    for px in rgb.chunks_exact_mut(3) {
        px.copy_from_slice(&BACKGROUND);
    }
    for row in layout(w, h, lines) {
        draw_row(&mut rgb, w, h, &row);
    }
    encode(&rgb, w, h).unwrap_or_else(fallback)
}

/// Clamps to the supported range and rounds down to even: 4:2:0 consumers (and some players)
/// mishandle odd sizes, and odd input must not panic.
fn clamp_size(width: u32, height: u32) -> (u32, u32) {
    (width.clamp(MIN_SIDE, MAX_SIDE) & !1, height.clamp(MIN_SIDE, MAX_SIDE) & !1)
}

/// Encodes a packed RGB buffer as a JPEG (the frames' encoder, 4:2:2).
fn encode(rgb: &[u8], w: u32, h: u32) -> Option<Vec<u8>> {
    let (w, h) = (w as usize, h as usize);
    let img = Yuv::from_rgb(rgb, w, h);
    // Flat colour and text: far smaller than the raw 4:2:2 samples.
    let mut out = vec![0u8; w * h * 2 + 4096];
    let n = Encoder::new().encode(&img, QUALITY, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

/// A 64x64 grey JPEG for the case that cannot really happen (the encoder refusing a valid
/// buffer): a client still gets a decodable frame instead of a broken stream. Empty only if the
/// encoder fails even on this, as the caller has nothing better to send.
fn fallback() -> Vec<u8> {
    let side = MIN_SIDE;
    encode(&vec![BACKGROUND[0]; (side * side * 3) as usize], side, side).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

/// One row of text as placed on the picture: top-left corner in pixels, and the size of a font
/// pixel (`scale` x `scale` image pixels).
#[derive(Debug)]
struct Row {
    text: Vec<char>,
    scale: u32,
    colour: [u8; 3],
    x: u32,
    y: u32,
    /// Index into the caller's `lines`: rows wrapped from one line sit closer together.
    line: usize,
    title: bool,
}

/// Size of a font pixel for the body text: about 52 characters across at 4:3 and 16:9 whatever
/// the resolution (320x240 and 640x480 get 1 and 2, 1920x1080 gets 6), limited by the height so
/// that 8 rows always fit.
fn body_scale(w: u32, h: u32) -> u32 {
    (w / 240).min(h / 160).max(1)
}

/// How many characters fit in `avail` pixels at `scale` (the last one needs no spacing column).
fn capacity(avail: u32, scale: u32) -> usize {
    ((avail + scale) / (ADVANCE * scale)).max(1) as usize
}

/// Width in pixels of `len` characters at `scale`.
fn text_width(len: usize, scale: u32) -> u32 {
    (len as u32 * ADVANCE * scale).saturating_sub(scale)
}

/// Places the text: wraps, caps the row count to what fits, and centres the block.
fn layout(w: u32, h: u32, lines: &[&str]) -> Vec<Row> {
    let body = body_scale(w, h);
    // Keep text off the edges, where it is hard to read and players may crop.
    let (margin_x, margin_y) = ((w / 20).max(4 * body), (h / 20).max(4 * body));
    let (avail_w, avail_h) = (w - 2 * margin_x, h - 2 * margin_y);

    // Wrap every line at its own scale, stopping once MAX_ROWS are taken.
    let mut rows: Vec<Row> = Vec::new();
    let mut truncated = false;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if rows.len() >= MAX_ROWS {
            truncated = true;
            break;
        }
        let title = i == 0;
        let (scale, colour) =
            if title { (title_scale(line, body, avail_w), TITLE_COLOUR) } else { (body, TEXT_COLOUR) };
        let (pieces, cut) = wrap(line, capacity(avail_w, scale), MAX_ROWS - rows.len());
        truncated |= cut;
        rows.extend(pieces.into_iter().map(|text| Row { text, scale, colour, x: 0, y: 0, line: i, title }));
    }

    // Keep the rows that fit the height; assign each its y relative to the top of the block.
    let mut total = 0;
    let mut kept = 0;
    for k in 0..rows.len() {
        let gap = if k == 0 { 0 } else { row_gap(&rows[k - 1], &rows[k], body) };
        let bottom = total + gap + GLYPH_H * rows[k].scale;
        if bottom > avail_h {
            truncated = true;
            break;
        }
        rows[k].y = total + gap;
        total = bottom;
        kept += 1;
    }
    rows.truncate(kept);

    // Say that something was left out rather than end mid-sentence silently.
    if truncated {
        if let Some(last) = rows.last_mut() {
            let cap = capacity(avail_w, last.scale);
            if cap > 3 {
                last.text.truncate(cap - 3);
                while last.text.last() == Some(&' ') {
                    last.text.pop();
                }
                last.text.extend(['.', '.', '.']);
            }
        }
    }

    let top = (h - total) / 2;
    for row in &mut rows {
        row.y += top;
        row.x = (w - text_width(row.text.len(), row.scale)) / 2;
    }
    rows
}

/// Vertical space between two rows: more after the state so it stands apart, and a little more
/// between lines than within a wrapped one so the lines read as separate sentences.
fn row_gap(prev: &Row, next: &Row, body: u32) -> u32 {
    if prev.title && !next.title {
        6 * body
    } else if prev.line != next.line {
        5 * body
    } else {
        3 * body
    }
}

/// The largest scale up to twice the body scale at which the state fits on one row; the body
/// scale (and wrapping) if even that is too wide.
fn title_scale(title: &str, body: u32, avail_w: u32) -> u32 {
    let len = title.split_whitespace().map(|word| word.chars().count() + 1).sum::<usize>().saturating_sub(1);
    (body..=2 * body).rev().find(|&s| len <= capacity(avail_w, s)).unwrap_or(body)
}

/// Greedy word wrap to `cap` characters a row: words are separated by single spaces, a word
/// longer than a row is cut, `\n` forces a break. Returns at most `limit` rows, and whether
/// anything was left out.
fn wrap(text: &str, cap: usize, limit: usize) -> (Vec<Vec<char>>, bool) {
    let mut rows: Vec<Vec<char>> = Vec::new();
    let mut cur: Vec<char> = Vec::new();
    'outer: for part in text.lines() {
        for word in part.split_whitespace() {
            let word: Vec<char> = word.chars().collect();
            if !cur.is_empty() && cur.len() + 1 + word.len() <= cap {
                cur.push(' ');
                cur.extend(word);
                continue;
            }
            if !cur.is_empty() {
                rows.push(std::mem::take(&mut cur));
            }
            let mut rest = &word[..];
            while rest.len() > cap {
                rows.push(rest[..cap].to_vec());
                rest = &rest[cap..];
                if rows.len() > limit {
                    break 'outer;
                }
            }
            cur = rest.to_vec();
            if rows.len() > limit {
                break 'outer;
            }
        }
        if !cur.is_empty() {
            rows.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        // Only reached after a break: the row being built is part of what did not fit.
        rows.push(cur);
    }
    let cut = rows.len() > limit;
    rows.truncate(limit);
    (rows, cut)
}

/// Paints one row of glyphs into the RGB buffer.
fn draw_row(rgb: &mut [u8], w: u32, h: u32, row: &Row) {
    let s = row.scale;
    for (i, &c) in row.text.iter().enumerate() {
        let left = row.x + i as u32 * ADVANCE * s;
        for (gy, bits) in glyph(c).iter().enumerate() {
            for gx in 0..GLYPH_W {
                if bits >> (GLYPH_W - 1 - gx) & 1 == 1 {
                    fill(rgb, w, h, left + gx * s, row.y + gy as u32 * s, s, row.colour);
                }
            }
        }
    }
}

/// Fills an `s` x `s` square, clipped to the picture: layout keeps text inside, but a drawing
/// slip must not become a panic in the HTTP path.
fn fill(rgb: &mut [u8], w: u32, h: u32, x: u32, y: u32, s: u32, colour: [u8; 3]) {
    let (x_end, y_end) = ((x + s).min(w), (y + s).min(h));
    for yy in y..y_end {
        let start = (yy as usize * w as usize + x as usize) * 3;
        let end = (yy as usize * w as usize + x_end as usize) * 3;
        if let Some(span) = rgb.get_mut(start..end) {
            for px in span.chunks_exact_mut(3) {
                px.copy_from_slice(&colour);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Font
// ---------------------------------------------------------------------------------------------

/// Glyph size in font pixels.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;
/// Horizontal step per character in font pixels: the glyph plus a blank column.
const ADVANCE: u32 = GLYPH_W + 1;

/// The characters of [`SHEET`], in order; every other character is drawn as the box that
/// follows them. Lowercase is looked up as uppercase.
const CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_/()'\"!?=+%#<>@[]";
const GLYPHS_PER_BAND: usize = 12;
const BANDS: usize = 5;
const GLYPH_COUNT: usize = BANDS * GLYPHS_PER_BAND;
const UNKNOWN: usize = GLYPH_COUNT - 1;

/// The font, drawn as it looks so it can be read and edited: bands of 12 glyphs, 5x7 each,
/// `#` lit, separated by one space. Turned into bits at compile time by [`build_font`].
#[rustfmt::skip]
const SHEET: [[&str; GLYPH_H as usize]; BANDS] = [
    //   A     B     C     D     E     F     G     H     I     J     K     L
    [
        ".###. ####. .###. ####. ##### ##### .###. #...# .###. ..### #...# #....",
        "#...# #...# #...# #...# #.... #.... #...# #...# ..#.. ...#. #..#. #....",
        "#...# #...# #.... #...# #.... #.... #.... #...# ..#.. ...#. #.#.. #....",
        "##### ####. #.... #...# ####. ####. #.### ##### ..#.. ...#. ##... #....",
        "#...# #...# #.... #...# #.... #.... #...# #...# ..#.. ...#. #.#.. #....",
        "#...# #...# #...# #...# #.... #.... #...# #...# ..#.. #..#. #..#. #....",
        "#...# ####. .###. ####. ##### #.... .#### #...# .###. .##.. #...# #####",
    ],
    //   M     N     O     P     Q     R     S     T     U     V     W     X
    [
        "#...# #...# .###. ####. .###. ####. .#### ##### #...# #...# #...# #...#",
        "##.## #...# #...# #...# #...# #...# #.... ..#.. #...# #...# #...# #...#",
        "#.#.# ##..# #...# #...# #...# #...# #.... ..#.. #...# #...# #...# .#.#.",
        "#.#.# #.#.# #...# ####. #...# ####. .###. ..#.. #...# #...# #.#.# ..#..",
        "#...# #..## #...# #.... #.#.# #.#.. ....# ..#.. #...# #...# #.#.# .#.#.",
        "#...# #...# #...# #.... #..#. #..#. ....# ..#.. #...# .#.#. #.#.# #...#",
        "#...# #...# .###. #.... .##.# #...# ####. ..#.. .###. ..#.. .#.#. #...#",
    ],
    //   Y     Z     0     1     2     3     4     5     6     7     8     9
    [
        "#...# ##### .###. ..#.. .###. ####. ...#. ##### ..##. ##### .###. .###.",
        "#...# ....# #...# .##.. #...# ....# ..##. #.... .#... ....# #...# #...#",
        ".#.#. ...#. #..## ..#.. ....# ....# .#.#. ####. #.... ...#. #...# #...#",
        "..#.. ..#.. #.#.# ..#.. ...#. .###. #..#. ....# ####. ..#.. .###. .####",
        "..#.. .#... ##..# ..#.. ..#.. ....# ##### ....# #...# .#... #...# ....#",
        "..#.. #.... #...# ..#.. .#... ....# ...#. #...# #...# .#... #...# ...#.",
        "..#.. ##### .###. .###. ##### ####. ...#. .###. .###. .#... .###. .##..",
    ],
    // space .     ,     :     ;     -     _     /     (     )     '     "
    [
        "..... ..... ..... ..... ..... ..... ..... ....# ...#. .#... ..#.. .#.#.",
        "..... ..... ..... .##.. .##.. ..... ..... ....# ..#.. ..#.. ..#.. .#.#.",
        "..... ..... ..... .##.. .##.. ..... ..... ...#. .#... ...#. ..... .....",
        "..... ..... ..... ..... ..... .###. ..... ..#.. .#... ...#. ..... .....",
        "..... ..... .##.. .##.. .##.. ..... ..... .#... .#... ...#. ..... .....",
        "..... .##.. .##.. .##.. .##.. ..... ..... #.... ..#.. ..#.. ..... .....",
        "..... .##.. .#... ..... .#... ..... ##### #.... ...#. .#... ..... .....",
    ],
    //   !     ?     =     +     %     #     <     >     @     [     ]   unknown
    [
        "..#.. .###. ..... ..... ##... .#.#. ...#. .#... .###. .###. .###. #####",
        "..#.. #...# ..... ..#.. ##..# .#.#. ..#.. ..#.. #...# .#... ...#. #...#",
        "..#.. ....# ##### ..#.. ...#. ##### .#... ...#. #.### .#... ...#. #...#",
        "..#.. ...#. ..... ##### ..#.. .#.#. #.... ....# #.#.# .#... ...#. #...#",
        "..#.. ..#.. ##### ..#.. .#... ##### .#... ...#. #.### .#... ...#. #...#",
        "..... ..... ..... ..#.. #..## .#.#. ..#.. ..#.. #.... .#... ...#. #...#",
        "..#.. ..#.. ..... ..... ...## .#.#. ...#. .#... .#### .###. .###. #####",
    ],
];

/// One glyph: rows top to bottom, the low 5 bits of each a row of pixels, bit 4 the leftmost.
type Glyph = [u8; GLYPH_H as usize];

/// The font as bits, checked and converted at compile time (a malformed sheet fails the build).
const FONT: [Glyph; GLYPH_COUNT] = build_font();

/// Glyph index of every ASCII character; non-ASCII characters get [`UNKNOWN`].
const INDEX: [u8; 128] = build_index();

const fn build_font() -> [Glyph; GLYPH_COUNT] {
    assert!(CHARS.len() == GLYPH_COUNT - 1, "one glyph per character plus the unknown box");
    let row_len = GLYPHS_PER_BAND * ADVANCE as usize - 1;
    let mut font = [[0u8; GLYPH_H as usize]; GLYPH_COUNT];
    let mut g = 0;
    while g < GLYPH_COUNT {
        let mut r = 0;
        while r < GLYPH_H as usize {
            let line = SHEET[g / GLYPHS_PER_BAND][r].as_bytes();
            assert!(line.len() == row_len, "every sheet row holds 12 glyphs");
            let mut bits = 0u8;
            let mut x = 0;
            while x < GLYPH_W as usize {
                let b = line[(g % GLYPHS_PER_BAND) * ADVANCE as usize + x];
                assert!(b == b'#' || b == b'.', "glyph pixels are '#' or '.'");
                bits = bits << 1 | (b == b'#') as u8;
                x += 1;
            }
            font[g][r] = bits;
            r += 1;
        }
        g += 1;
    }
    font
}

const fn build_index() -> [u8; 128] {
    let mut index = [UNKNOWN as u8; 128];
    let chars = CHARS.as_bytes();
    let mut i = 0;
    while i < chars.len() {
        index[chars[i] as usize] = i as u8;
        i += 1;
    }
    index
}

/// The glyph for `c`: lowercase as uppercase, anything the font lacks as a box.
fn glyph(c: char) -> &'static Glyph {
    let c = c.to_ascii_uppercase();
    let i = if c.is_ascii() { INDEX[c as usize] as usize } else { UNKNOWN };
    &FONT[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    const REASON: &str = "camera cam0: no frame for 5 s (stall timeout); check the cable";

    fn decode(jpeg: &[u8]) -> image::RgbImage {
        image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).expect("valid JPEG").to_rgb8()
    }

    fn mean(img: &image::RgbImage) -> f64 {
        img.as_raw().iter().map(|&b| f64::from(b)).sum::<f64>() / img.as_raw().len() as f64
    }

    fn luma(img: &image::RgbImage, x: u32, y: u32) -> u32 {
        img.get_pixel(x, y).0.iter().map(|&b| u32::from(b)).sum::<u32>() / 3
    }

    #[test]
    fn output_is_a_jpeg_of_the_requested_size() {
        let jpeg = render(640, 480, &["FAILED", REASON]);
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9]);
        let img = decode(&jpeg);
        assert_eq!(img.dimensions(), (640, 480));
    }

    #[test]
    fn sizes_are_clamped_and_even() {
        assert_eq!(clamp_size(0, 0), (64, 64));
        assert_eq!(clamp_size(5000, 5000), (4096, 4096));
        assert_eq!(clamp_size(321, 241), (320, 240));
        assert_eq!(clamp_size(65, u32::MAX), (64, 4096));
        for (w, h, want) in
            [(0, 0, (64, 64)), (321, 241, (320, 240)), (5000, 5000, (4096, 4096)), (1, 99999, (64, 4096))]
        {
            let img = decode(&render(w, h, &["STOPPED", REASON]));
            assert_eq!(img.dimensions(), want, "{w}x{h}");
        }
    }

    #[test]
    fn long_reason_wraps_within_the_picture() {
        let long = REASON.repeat(3);
        let rows = layout(640, 480, &["FAILED", &long]);
        assert!(rows.len() > 2, "wrapped into several rows: {rows:?}");
        for row in &rows {
            assert!(row.x + text_width(row.text.len(), row.scale) <= 640);
            assert!(row.y + GLYPH_H * row.scale <= 480);
        }
        // Words stay whole when they fit a row.
        let words: Vec<String> = rows[1..].iter().map(|r| r.text.iter().collect()).collect();
        assert!(words.iter().all(|r| !r.starts_with(' ') && !r.ends_with(' ')), "{words:?}");
        assert_eq!(decode(&render(640, 480, &["FAILED", &long])).dimensions(), (640, 480));
    }

    #[test]
    fn too_much_text_is_capped_and_marked() {
        let huge = "x".repeat(100_000);
        let many = ["FAILED", REASON, REASON, REASON, REASON, REASON, &huge, "tail"];
        for (w, h) in [(64, 64), (320, 240), (640, 480), (1920, 1080)] {
            let rows = layout(w, h, &many);
            assert!(!rows.is_empty() && rows.len() <= MAX_ROWS, "{w}x{h}: {} rows", rows.len());
            assert!(rows[0].title);
            let last: String = rows.last().unwrap().text.iter().collect();
            assert!(last.ends_with("..."), "{w}x{h}: {last}");
            for row in &rows {
                assert!(row.x + text_width(row.text.len(), row.scale) <= w, "{w}x{h}: {row:?}");
                assert!(row.y + GLYPH_H * row.scale <= h, "{w}x{h}: {row:?}");
            }
            decode(&render(w, h, &many));
        }
        // A single unbroken word is cut, not overflowing.
        let rows = layout(320, 240, &["FAILED", &huge]);
        assert!(rows.iter().all(|r| r.text.len() <= capacity(320 - 2 * 16, r.scale)));
    }

    #[test]
    fn state_is_larger_and_brighter() {
        for (w, h) in [(320, 240), (640, 480), (1920, 1080)] {
            let rows = layout(w, h, &["FAILED", REASON]);
            assert!(rows[0].scale > rows[1].scale, "{w}x{h}");
            assert!(rows[0].colour > rows[1].colour);
            // Legible: body text at least 7 px tall, about 50 characters a row.
            assert!(capacity(w - w / 10, rows[1].scale) >= 40, "{w}x{h}");
        }
    }

    #[test]
    fn text_changes_pixels() {
        let blank = decode(&render(640, 480, &[]));
        let with_text = decode(&render(640, 480, &["FAILED", REASON]));
        assert!(mean(&with_text) > mean(&blank) + 1.0, "{} vs {}", mean(&with_text), mean(&blank));
        assert!(luma(&blank, 320, 240) < 60);

        // The middle of the top bar of the "F" of FAILED is white.
        let rows = layout(640, 480, &["FAILED", REASON]);
        let (f, s) = (&rows[0], rows[0].scale);
        assert_eq!(f.text[0], 'F');
        assert!(luma(&with_text, f.x + 2 * s + s / 2, f.y + s / 2) > 200);
        // And the body text is drawn: the stem of the "C" of "camera" is bright.
        let c = &rows[1];
        let s = c.scale;
        assert!(luma(&with_text, c.x + s / 2, c.y + 3 * s + s / 2) > 120);
    }

    #[test]
    fn font_covers_the_required_characters() {
        let required = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,:;-_/()'\"!?=+%#<>@";
        for c in required.chars() {
            assert_ne!(glyph(c), &FONT[UNKNOWN], "{c:?}");
            assert_eq!(glyph(c), glyph(c.to_ascii_uppercase()));
        }
        assert_eq!(glyph('é'), &FONT[UNKNOWN]);
        assert_eq!(glyph('\u{7}'), &FONT[UNKNOWN]);
        // No two characters share a glyph (catches a copy-paste slip in the sheet).
        for (i, a) in FONT.iter().enumerate() {
            assert!(a.iter().all(|&row| row < 1 << GLYPH_W));
            for b in &FONT[i + 1..] {
                assert_ne!(a, b, "duplicate glyph");
            }
        }
    }

    #[test]
    fn fallback_is_a_valid_jpeg() {
        let jpeg = fallback();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        assert_eq!(decode(&jpeg).dimensions(), (64, 64));
    }
}
