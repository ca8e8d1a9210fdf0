//! JPEG with libjpeg-turbo's SIMD code (NEON on ARM, SSE2/AVX2 on x86 when NASM was found at
//! build time), through `mozjpeg-sys`, which builds it with the C compiler alone: a fresh
//! machine needs no cmake (docs/design.md, "Why mozjpeg-sys"). mozjpeg's own extensions (trellis
//! quantisation, progressive scans) are switched off: the encoder runs libjpeg-turbo's baseline
//! path, which is what ustreamer and mjpg-streamer use.
//!
//! - [`Encoder`]: planar YUV 4:2:2 or 4:2:0 ([`Yuv`]: what a YUYV camera gives once
//!   deinterleaved, or what `rpicam-vid --codec yuv420` writes) straight into the DCT ("raw data" input: no colour conversion, no chroma resampling),
//!   written into the caller's buffer. Steady state allocates nothing on the Rust side; libjpeg's
//!   own per-image pools come from `malloc` and go back to it at the end of each image (measured:
//!   docs/encoding.md).
//! - [`Decoder`]: decodes scaled by 1/2, 1/4 or 1/8 inside the inverse DCT (change-score
//!   thumbnails, time-lapse frames), grayscale or RGB.
//!
//! This is the only foreign code besides the capture backends; libjpeg reports errors by
//! calling a function that must not return, which here unwinds (`C-unwind`, the C code is built
//! with `-fexceptions`) back to the call, where it becomes an [`Error`].

use std::ffi::CStr;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use mozjpeg_sys as sys;

unsafe extern "C" {
    /// libjpeg-turbo's own probe (in its SIMD dispatch, or `jsimd_none.c` when it was built
    /// without SIMD): non-zero when the forward DCT runs on SIMD code on this CPU.
    fn jsimd_can_fdct_islow() -> std::ffi::c_int;
}

/// Whether the encoder runs libjpeg-turbo's SIMD code here (NEON on ARM; on x86 only when NASM
/// was installed when camjobd was built). Logged at start; without it encoding takes ~4.5x the
/// CPU (measured: docs/encoding.md).
pub fn simd() -> bool {
    // SAFETY: a pure query with no preconditions (it reads the CPU's features once).
    unsafe { jsimd_can_fdct_islow() != 0 }
}

/// Why an encode or decode failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The JPEG did not fit in the output buffer (for a frame: larger than `max_frame_bytes`);
    /// `needed` is the size it came to (the encoder counts the rest without keeping it).
    Full {
        /// The whole JPEG's size in bytes.
        needed: usize,
    },
    /// libjpeg refused the data or the parameters; its message.
    Codec(String),
    /// The decoded image would be larger than the caller allows.
    TooLarge {
        /// Decoded width in pixels.
        width: usize,
        /// Decoded height in pixels.
        height: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Full { needed } => write!(f, "the JPEG ({needed} bytes) does not fit in its buffer"),
            Error::Codec(m) => write!(f, "libjpeg: {m}"),
            Error::TooLarge { width, height } => write!(f, "decoded image {width}x{height} is larger than allowed"),
        }
    }
}

impl std::error::Error for Error {}

/// A planar YUV image (BT.601, as cameras send it): a Y plane of `width` samples per row and U
/// and V planes of `width / 2`; the chroma planes have every row ([`Sampling::S422`]) or every
/// other one ([`Sampling::S420`]). Rows and columns are padded to whole DCT blocks of the
/// JPEG's MCU (16 luma columns; 8 rows, or 16 for 4:2:0) by repeating the last sample, because
/// the encoder reads whole blocks. The buffer is allocated once and only grows.
#[derive(Debug)]
pub struct Yuv {
    data: Vec<u8>,
    width: usize,
    height: usize,
    sampling: Sampling,
    /// The samples use the full 0–255 range (JPEG's YCbCr: a decoded JPEG, libcamera's raw
    /// frames), not the limited 16–235 of YUYV cameras.
    full_range: bool,
}

/// How the chroma planes of a [`Yuv`] are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Half the columns, every row (YUYV cameras, decoded JPEGs).
    S422,
    /// Half the columns, half the rows (I420, what H.264 codes; `rpicam-vid --codec yuv420`).
    S420,
}

/// BT.601 limited-range Y, Cb, Cr of an RGB colour (what cameras send), in integers.
pub fn yuv_of([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = 16 + ((66 * r + 129 * g + 25 * b + 128) >> 8);
    let u = 128 + ((-38 * r - 74 * g + 112 * b + 128) >> 8);
    let v = 128 + ((112 * r - 94 * g - 18 * b + 128) >> 8);
    [y as u8, u as u8, v as u8]
}

/// Luma rows padded to a whole MCU row (8 for 4:2:2, 16 for 4:2:0).
fn padded_rows(height: usize, sampling: Sampling) -> usize {
    match sampling {
        Sampling::S422 => height.div_ceil(8) * 8,
        Sampling::S420 => height.div_ceil(16) * 16,
    }
}

/// Luma row length padded to a whole 4:2:2 MCU (16 samples); chroma rows are half that.
fn y_stride(width: usize) -> usize {
    width.div_ceil(16) * 16
}

impl Yuv {
    /// A 4:2:2 image of `width x height` (`width` even), its memory allocated and touched now.
    pub fn new(width: usize, height: usize) -> Yuv {
        Yuv::with_sampling(width, height, Sampling::S422)
    }

    /// An image of `width x height` (both even for 4:2:0), allocated and touched now.
    pub fn with_sampling(width: usize, height: usize, sampling: Sampling) -> Yuv {
        let mut img = Yuv { data: Vec::new(), width: 0, height: 0, sampling, full_range: false };
        img.set_size(width, height);
        img
    }

    /// An image of packed RGB pixels (`width` even), chroma averaged over each pixel pair.
    /// For pictures made here (placeholders); camera frames arrive as YUV.
    pub fn from_rgb(rgb: &[u8], width: usize, height: usize) -> Yuv {
        let mut img = Yuv::new(width, height);
        let (y, u, v, ys, cs) = img.planes_mut();
        for (row, src) in rgb.chunks_exact(width * 3).take(height).enumerate() {
            for (pair, px) in src.chunks_exact(6).enumerate() {
                let a = yuv_of([px[0], px[1], px[2]]);
                let b = yuv_of([px[3], px[4], px[5]]);
                y[row * ys + pair * 2] = a[0];
                y[row * ys + pair * 2 + 1] = b[0];
                u[row * cs + pair] = ((u16::from(a[1]) + u16::from(b[1])) / 2) as u8;
                v[row * cs + pair] = ((u16::from(a[2]) + u16::from(b[2])) / 2) as u8;
            }
        }
        img.pad_edges();
        img
    }

    /// Bytes needed for a 4:2:2 image of `width x height` with padding (4:2:0 needs no more
    /// for any height of at least 16).
    pub fn bytes_for(width: usize, height: usize) -> usize {
        Self::bytes_with(width, height, Sampling::S422)
    }

    /// Bytes needed for `width x height` sampled as `sampling`, with padding.
    pub fn bytes_with(width: usize, height: usize, sampling: Sampling) -> usize {
        let (ys, rows) = (y_stride(width), padded_rows(height, sampling));
        match sampling {
            Sampling::S422 => ys * rows * 2,
            Sampling::S420 => ys * rows + ys * rows / 2,
        }
    }

    /// Makes the image `width x height`; allocates only when it is larger than any size before.
    pub fn set_size(&mut self, width: usize, height: usize) {
        debug_assert!(width % 2 == 0, "chroma at half the columns needs an even width");
        debug_assert!(self.sampling == Sampling::S422 || height % 2 == 0, "4:2:0 needs an even height");
        let need = Self::bytes_with(width, height, self.sampling);
        if self.data.len() < need {
            // Not zeroes: a zeroed allocation may stay untouched (calloc) and hide the footprint.
            self.data.resize(need, 0x80);
        }
        self.width = width;
        self.height = height;
    }

    /// Makes the image `width x height` sampled as `sampling`.
    pub fn set_format(&mut self, width: usize, height: usize, sampling: Sampling) {
        self.sampling = sampling;
        self.set_size(width, height);
    }

    /// Makes this image a copy of `other` (its size, sampling and pixels, padding included).
    pub fn copy_from(&mut self, other: &Yuv) {
        self.set_format(other.width, other.height, other.sampling);
        self.full_range = other.full_range;
        let n = Self::bytes_with(other.width, other.height, other.sampling);
        self.data[..n].copy_from_slice(&other.data[..n]);
    }

    /// How the chroma planes are sampled.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Whether the samples use the full 0–255 range (JPEG's YCbCr).
    pub fn full_range(&self) -> bool {
        self.full_range
    }

    /// Says what range the samples use; whoever fills the image says it.
    pub fn set_full_range(&mut self, full: bool) {
        self.full_range = full;
    }

    /// The stride that reads the chroma planes as 4:2:0 rows: every row of a 4:2:0 image,
    /// every other row of a 4:2:2 one (what an H.264 encoder takes, without a copy).
    pub fn chroma_stride_420(&self) -> usize {
        let cs = y_stride(self.width) / 2;
        match self.sampling {
            Sampling::S422 => 2 * cs,
            Sampling::S420 => cs,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// `(y_stride, c_stride, luma rows, chroma rows)`, padding included.
    fn layout(&self) -> (usize, usize, usize, usize) {
        let ys = y_stride(self.width);
        let rows = padded_rows(self.height, self.sampling);
        let chroma_rows = match self.sampling {
            Sampling::S422 => rows,
            Sampling::S420 => rows / 2,
        };
        (ys, ys / 2, rows, chroma_rows)
    }

    /// Chroma rows with pixels in them (the rest is padding).
    pub fn chroma_height(&self) -> usize {
        match self.sampling {
            Sampling::S422 => self.height,
            Sampling::S420 => self.height / 2,
        }
    }

    /// The three planes and their row strides: `(y, u, v, y_stride, c_stride)`. The Y plane has
    /// `height` rows rounded up to the MCU; the chroma planes as many, or half as many for 4:2:0.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8], usize, usize) {
        let (ys, cs, rows, crows) = self.layout();
        let (y, rest) = self.data.split_at_mut(ys * rows);
        let (u, rest) = rest.split_at_mut(cs * crows);
        let v = &mut rest[..cs * crows];
        (y, u, v, ys, cs)
    }

    /// The three planes and their row strides, to read: `(y, u, v, y_stride, c_stride)`.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8], usize, usize) {
        let (ys, cs, rows, crows) = self.layout();
        let (y, rest) = self.data.split_at(ys * rows);
        let (u, rest) = rest.split_at(cs * crows);
        (y, u, &rest[..cs * crows], ys, cs)
    }

    /// Repeats the last column and row of each plane into the padding. Call after filling the
    /// visible `width x height` pixels; free when the size is a whole number of blocks.
    pub fn pad_edges(&mut self) {
        let (w, h, ch) = (self.width, self.height, self.chroma_height());
        if w == 0 || ch == 0 {
            return;
        }
        let (y, u, v, ys, cs) = self.planes_mut();
        for (plane, stride, visible, h) in [(y, ys, w, h), (u, cs, w / 2, ch), (v, cs, w / 2, ch)] {
            if stride > visible {
                for row in plane.chunks_exact_mut(stride).take(h) {
                    let last = row[visible - 1];
                    row[visible..].fill(last);
                }
            }
            let (top, bottom) = plane.split_at_mut(h * stride);
            let last = &top[(h - 1) * stride..];
            for row in bottom.chunks_exact_mut(stride) {
                row.copy_from_slice(last);
            }
        }
    }
}

/// The unwinding payload of a libjpeg error.
struct Unwind(Error);

/// libjpeg's `error_exit`: must not return, so it unwinds to the `catch_unwind` around the call.
unsafe extern "C-unwind" fn error_exit(cinfo: &mut sys::jpeg_common_struct) {
    // SAFETY: `err` points at the error manager this module installed and keeps alive for as
    // long as the codec object; libjpeg set `msg_code` before calling.
    let message = unsafe { message(&*cinfo.err) };
    resume_unwind(Box::new(Unwind(Error::Codec(message))));
}

/// The text of libjpeg's current message (its format string: parameters are not filled in).
///
/// # Safety
/// `err` must be a manager set up by `jpeg_std_error`, whose table outlives the call.
unsafe fn message(err: &sys::jpeg_error_mgr) -> String {
    let code = err.msg_code;
    if code > 0 && code <= err.last_jpeg_message && !err.jpeg_message_table.is_null() {
        // SAFETY: the standard table has `last_jpeg_message + 1` entries, each a static
        // NUL-terminated string (the caller guarantees the table).
        let text = unsafe { *err.jpeg_message_table.add(code as usize) };
        if !text.is_null() {
            // SAFETY: as above, a static NUL-terminated string.
            return unsafe { CStr::from_ptr(text.cast()) }.to_string_lossy().into_owned();
        }
    }
    format!("error code {code}")
}

/// Warnings (corrupt data that libjpeg could work around) are counted by libjpeg, not printed.
unsafe extern "C-unwind" fn silent(_cinfo: &mut sys::jpeg_common_struct) {}

/// Where the encoder writes: the caller's buffer; past its end, a small scratch buffer used
/// over and over, only to count how large the JPEG comes to (the frame is refused anyway, and
/// the reason can then name its size). libjpeg holds a pointer to `mgr`, the first field.
#[repr(C)]
struct Dest {
    mgr: sys::jpeg_destination_mgr,
    /// The caller's buffer filled up.
    overflowed: bool,
    /// Bytes written past it into scratch buffers that filled up.
    spilled: usize,
    scratch: [u8; SCRATCH],
}

/// Size of [`Dest::scratch`].
const SCRATCH: usize = 4096;

/// The buffer is full: the JPEG is too large. Counting goes on in the scratch buffer.
unsafe extern "C-unwind" fn buffer_full(cinfo: &mut sys::jpeg_compress_struct) -> sys::boolean {
    // SAFETY: `cinfo.dest` is the `mgr` field of a live `Dest` (repr(C), first field), set in
    // `Encoder::new`; libjpeg calls this only while it writes through it.
    let d = unsafe { &mut *cinfo.dest.cast::<Dest>() };
    if d.overflowed {
        d.spilled += SCRATCH;
    }
    d.overflowed = true;
    d.mgr.next_output_byte = d.scratch.as_mut_ptr();
    d.mgr.free_in_buffer = SCRATCH;
    1
}

unsafe extern "C-unwind" fn nothing(_cinfo: &mut sys::jpeg_compress_struct) {}

/// Runs `f`, turning a libjpeg error into an `Error`; any other panic goes on unwinding.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| match payload.downcast::<Unwind>() {
        Ok(u) => u.0,
        Err(other) => resume_unwind(other),
    })
}

/// A value on the heap that libjpeg keeps a pointer to. It is only ever reached through its
/// raw pointer: a `Box` or `&mut` to it would, by Rust's aliasing rules, invalidate the pointer
/// libjpeg holds. Freed on drop, after the codec object that points at it is destroyed (the
/// owner's `Drop` runs before its fields are dropped).
struct Held<T>(NonNull<T>);

impl<T> Held<T> {
    fn new(value: T) -> Held<T> {
        Held(NonNull::new(Box::into_raw(Box::new(value))).expect("a Box is never null"))
    }
    fn ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `new`, freed once, here; libjpeg's object was
        // destroyed by the owner's `Drop` before its fields are dropped.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// A zeroed C struct.
///
/// # Safety
/// `T` must be a struct of integers, bools, bytes, raw pointers and optional function pointers
/// (for which all zeroes is valid: 0, false, null, `None`), as libjpeg's and [`Dest`] are.
unsafe fn zeroed<T>() -> T {
    // SAFETY: the caller's promise.
    unsafe { std::mem::zeroed() }
}

fn error_manager() -> Held<sys::jpeg_error_mgr> {
    // SAFETY: libjpeg's error manager is such a struct; `jpeg_std_error` then fills it in.
    let err = Held::new(unsafe { zeroed::<sys::jpeg_error_mgr>() });
    // SAFETY: `err` is valid and nothing else refers to it yet.
    unsafe {
        sys::jpeg_std_error(&mut *err.ptr());
        (*err.ptr()).error_exit = Some(error_exit);
        (*err.ptr()).output_message = Some(silent);
    }
    err
}

/// A JPEG encoder for [`Yuv`] images. One per encoding thread; reusable for any size.
pub struct Encoder {
    cinfo: Held<sys::jpeg_compress_struct>,
    _err: Held<sys::jpeg_error_mgr>,
    dest: Held<Dest>,
    /// The (width, height, quality) the parameters are set up for.
    set_for: Option<(usize, usize, Sampling, u8)>,
}

// SAFETY: libjpeg objects have no thread affinity, and every pointer inside points into memory
// this value owns; it is used by one thread at a time (`&mut self`).
unsafe impl Send for Encoder {}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// A new encoder (small: libjpeg allocates the per-image state while encoding).
    pub fn new() -> Encoder {
        let err = error_manager();
        // SAFETY: libjpeg's structs (see `zeroed`); zero is the state `jpeg_create_compress`
        // expects, and a destination with no callbacks yet.
        let (cinfo, dest) = unsafe { (Held::new(zeroed::<sys::jpeg_compress_struct>()), Held::new(zeroed::<Dest>())) };
        // SAFETY: all three are valid and owned here; the error manager outlives the codec
        // (field order). Creation fails only by running out of memory, which unwinds through
        // `error_exit` to the encoder thread's guard.
        unsafe {
            let d = &raw mut (*dest.ptr()).mgr;
            (*d).init_destination = Some(nothing);
            (*d).empty_output_buffer = Some(buffer_full);
            (*d).term_destination = Some(nothing);
            (*cinfo.ptr()).common.err = err.ptr();
            sys::jpeg_create_compress(&mut *cinfo.ptr());
            (*cinfo.ptr()).dest = d;
        }
        Encoder { cinfo, _err: err, dest, set_for: None }
    }

    /// The compressor. libjpeg keeps pointers to the managers, never to this struct itself, so
    /// a `&mut` to it for the length of one call is sound.
    fn cinfo(&mut self) -> &mut sys::jpeg_compress_struct {
        // SAFETY: owned by `self`, borrowed mutably through `&mut self`.
        unsafe { &mut *self.cinfo.ptr() }
    }

    fn configure(&mut self, width: usize, height: usize, sampling: Sampling, quality: u8) -> Result<(), Error> {
        if self.set_for == Some((width, height, sampling, quality)) {
            return Ok(());
        }
        let c = self.cinfo();
        guarded(|| {
            c.image_width = width as sys::JDIMENSION;
            c.image_height = height as sys::JDIMENSION;
            c.input_components = 3;
            c.in_color_space = sys::J_COLOR_SPACE::JCS_YCbCr;
            // SAFETY: `c` is a created compressor between images; these calls only set
            // parameters, and errors unwind to `guarded`.
            unsafe {
                // libjpeg-turbo's defaults (baseline, standard Huffman tables), not mozjpeg's.
                sys::jpeg_c_set_int_param(c, sys::J_INT_PARAM::JINT_COMPRESS_PROFILE, sys::JCP_FASTEST as i32);
                sys::jpeg_set_defaults(c);
                sys::jpeg_set_quality(c, i32::from(quality), 1);
            }
            c.raw_data_in = 1;
            c.dct_method = sys::J_DCT_METHOD::JDCT_ISLOW;
            // SAFETY: `jpeg_set_defaults` allocated three component records for YCbCr.
            let comps = unsafe { std::slice::from_raw_parts_mut(c.comp_info, 3) };
            let luma_rows = if sampling == Sampling::S420 { 2 } else { 1 };
            for (comp, (h, v)) in comps.iter_mut().zip([(2, luma_rows), (1, 1), (1, 1)]) {
                comp.h_samp_factor = h;
                comp.v_samp_factor = v;
            }
        })?;
        self.set_for = Some((width, height, sampling, quality));
        Ok(())
    }

    /// Encodes `img` at `quality` (1–100) into `out`; returns the JPEG's length.
    /// [`Error::Full`] when it does not fit.
    pub fn encode(&mut self, img: &Yuv, quality: u8, out: &mut [u8]) -> Result<usize, Error> {
        if img.width == 0 || img.height == 0 {
            return Err(Error::Codec("an empty image".into()));
        }
        self.configure(img.width, img.height, img.sampling, quality)?;
        let dest = self.dest.ptr();
        // SAFETY: the destination manager is ours, reached through the pointer libjpeg holds;
        // `out` outlives this call, the only time libjpeg writes through these.
        unsafe {
            (*dest).mgr.next_output_byte = out.as_mut_ptr();
            (*dest).mgr.free_in_buffer = out.len();
            (*dest).overflowed = false;
            (*dest).spilled = 0;
        }
        let (y, u, v, ys, cs) = img.planes();
        let c = self.cinfo();
        let result = guarded(|| {
            // SAFETY: `c` is configured for `img`'s size, its destination is `out`.
            unsafe { sys::jpeg_start_compress(c, 1) };
            // One iMCU row: 8 luma lines (4:2:2) or 16 (4:2:0), and 8 chroma lines.
            let band = if img.sampling == Sampling::S420 { 16 } else { 8 };
            let mut rows: [[sys::JSAMPROW; 16]; 3] = [[std::ptr::null(); 16]; 3];
            for b in 0..padded_rows(img.height, img.sampling) / band {
                for (r, line) in (b * band..b * band + band).enumerate() {
                    rows[0][r] = y[line * ys..].as_ptr();
                }
                for (r, line) in (b * 8..b * 8 + 8).enumerate() {
                    rows[1][r] = u[line * cs..].as_ptr();
                    rows[2][r] = v[line * cs..].as_ptr();
                }
                let planes: [sys::JSAMPARRAY; 3] = [rows[0].as_ptr(), rows[1].as_ptr(), rows[2].as_ptr()];
                // SAFETY: one iMCU row of each plane; every row pointer has a whole padded row
                // behind it (`Yuv`'s layout), which is what libjpeg reads.
                unsafe { sys::jpeg_write_raw_data(c, planes.as_ptr(), band as sys::JDIMENSION) };
            }
            // SAFETY: every line was written.
            unsafe { sys::jpeg_finish_compress(c) };
        });
        // SAFETY: as above; libjpeg is done with the destination.
        let (overflowed, spilled, free) = unsafe { ((*dest).overflowed, (*dest).spilled, (*dest).mgr.free_in_buffer) };
        match result {
            Ok(()) if overflowed => Err(Error::Full { needed: out.len() + spilled + (SCRATCH - free) }),
            Ok(()) => Ok(out.len() - free),
            Err(e) => {
                // SAFETY: puts the compressor back to "between images" after a failed image.
                unsafe { sys::jpeg_abort_compress(self.cinfo()) };
                Err(e)
            }
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once; the managers are freed after this.
        unsafe { sys::jpeg_destroy_compress(self.cinfo()) };
    }
}

/// What to decode into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// One byte per pixel (luma only: colour is never computed).
    Gray,
    /// Three bytes per pixel, R G B.
    Rgb,
}

/// Largest JPEG the decoder takes on, in pixels at full size (a 64-megapixel image): bounds the
/// work a hostile file on disk or from a camera can ask for.
pub const MAX_SOURCE_PIXELS: usize = 1 << 26;
/// Memory libjpeg may take for whole-image buffers (a progressive or multi-scan JPEG keeps all
/// its coefficients): enough for a 4K progressive frame; beyond it the decode fails cleanly
/// instead of taking a small board's memory.
const MAX_DECODE_MEMORY: usize = 32 << 20;
/// Scans a progressive JPEG may have (real encoders write about 10): each scan walks the
/// whole image, so thousands of tiny scans would cost CPU without bound.
const MAX_SCANS: i32 = 200;

unsafe extern "C-unwind" fn scan_limit(cinfo: &mut sys::jpeg_common_struct) {
    if cinfo.is_decompressor == 0 {
        return;
    }
    // SAFETY: installed on decompressors only; `jpeg_common_struct` is the first field of the
    // `repr(C)` `jpeg_decompress_struct`, so the pointer is the decompressor's.
    let d = unsafe { &*(cinfo as *const sys::jpeg_common_struct).cast::<sys::jpeg_decompress_struct>() };
    if d.input_scan_number > MAX_SCANS {
        resume_unwind(Box::new(Unwind(Error::Codec(format!("more than {MAX_SCANS} scans; refused")))));
    }
}

/// A JPEG decoder that scales in the inverse DCT. Reusable; allocates nothing per image on the
/// Rust side once `out` has grown to the size decoded.
pub struct Decoder {
    dinfo: Held<sys::jpeg_decompress_struct>,
    _err: Held<sys::jpeg_error_mgr>,
    _progress: Held<sys::jpeg_progress_mgr>,
}

// SAFETY: as for `Encoder`.
unsafe impl Send for Decoder {}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A new decoder.
    pub fn new() -> Decoder {
        let err = error_manager();
        // SAFETY: libjpeg's structs (see `zeroed`); zero is the state
        // `jpeg_create_decompress` expects, and a progress manager with no callback yet.
        let (dinfo, progress) = unsafe {
            (Held::new(zeroed::<sys::jpeg_decompress_struct>()), Held::new(zeroed::<sys::jpeg_progress_mgr>()))
        };
        // SAFETY: as in `Encoder::new`; the memory manager exists once the decompressor is
        // created.
        unsafe {
            (*progress.ptr()).progress_monitor = Some(scan_limit);
            (*dinfo.ptr()).common.err = err.ptr();
            sys::jpeg_create_decompress(&mut *dinfo.ptr());
            (*dinfo.ptr()).common.progress = progress.ptr();
            (*(*dinfo.ptr()).common.mem).max_memory_to_use = MAX_DECODE_MEMORY as _;
        }
        Decoder { dinfo, _err: err, _progress: progress }
    }

    /// The decompressor; see [`Encoder::cinfo`].
    fn dinfo(&mut self) -> &mut sys::jpeg_decompress_struct {
        // SAFETY: owned by `self`, borrowed mutably through `&mut self`.
        unsafe { &mut *self.dinfo.ptr() }
    }

    /// Reads the header of `jpeg` (into the decompressor) and checks its size.
    fn read_header(d: &mut sys::jpeg_decompress_struct, jpeg: &[u8]) -> Result<(usize, usize), Error> {
        // SAFETY: `jpeg` outlives the decode that follows in the caller; the memory source
        // only reads it. Errors unwind to the caller's `guarded`.
        unsafe {
            sys::jpeg_mem_src(d, jpeg.as_ptr(), jpeg.len() as _);
            sys::jpeg_read_header(d, 1);
        }
        let (w, h) = (d.image_width as usize, d.image_height as usize);
        if w * h > MAX_SOURCE_PIXELS {
            return Err(Error::TooLarge { width: w, height: h });
        }
        Ok((w, h))
    }

    /// The smallest scale 1/1, 1/2, 1/4 or 1/8 at which `jpeg` is still at least `min_width`
    /// pixels wide, and its size there. Reads the header only.
    pub fn scale_for(&mut self, jpeg: &[u8], min_width: usize) -> Result<(u8, usize, usize), Error> {
        let d = self.dinfo();
        let r = guarded(|| Self::read_header(d, jpeg)).and_then(|inner| inner);
        // SAFETY: back to "no image" whether or not the header was read.
        unsafe { sys::jpeg_abort_decompress(self.dinfo()) };
        let (w, h) = r?;
        let denom = [8u8, 4, 2].into_iter().find(|&d| w.div_ceil(usize::from(d)) >= min_width).unwrap_or(1);
        let d = usize::from(denom);
        Ok((denom, w.div_ceil(d), h.div_ceil(d)))
    }

    /// Decodes `jpeg` scaled by 1/`denom` (1, 2, 4 or 8) into `out` (rows of `width * channels`
    /// bytes, no padding; grown as needed, never beyond `max_pixels` pixels). Returns the
    /// decoded width and height. Corrupt data that libjpeg can work around (a truncated scan)
    /// decodes, with the missing part grey. Refused: more than [`MAX_SOURCE_PIXELS`] at full
    /// size, more than 200 scans, or whole-image buffers beyond 32 MiB.
    pub fn decode(
        &mut self,
        jpeg: &[u8],
        denom: u8,
        pixels: Pixels,
        max_pixels: usize,
        out: &mut Vec<u8>,
    ) -> Result<(usize, usize), Error> {
        let d = self.dinfo();
        let r = guarded(|| -> Result<(usize, usize), Error> {
            Self::read_header(d, jpeg)?;
            d.scale_num = 1;
            d.scale_denom = u32::from(denom);
            d.out_color_space = match pixels {
                Pixels::Gray => sys::J_COLOR_SPACE::JCS_GRAYSCALE,
                Pixels::Rgb => sys::J_COLOR_SPACE::JCS_RGB,
            };
            d.dct_method = sys::J_DCT_METHOD::JDCT_ISLOW;
            // SAFETY: header read; computes the output size from the scale.
            unsafe { sys::jpeg_calc_output_dimensions(d) };
            let (w, h) = (d.output_width as usize, d.output_height as usize);
            if w * h > max_pixels {
                return Err(Error::TooLarge { width: w, height: h });
            }
            let channels = if pixels == Pixels::Gray { 1 } else { 3 };
            let row = w * channels;
            if out.len() < row * h {
                out.resize(row * h, 0);
            }
            // SAFETY: parameters set; decoding starts.
            unsafe { sys::jpeg_start_decompress(d) };
            while (d.output_scanline as usize) < h {
                let line = d.output_scanline as usize;
                let mut ptr: sys::JSAMPROW_MUT = out[line * row..(line + 1) * row].as_mut_ptr();
                // SAFETY: one row of `row` bytes, inside `out`.
                unsafe { sys::jpeg_read_scanlines(d, &mut ptr, 1) };
            }
            // SAFETY: every scanline was read.
            unsafe { sys::jpeg_finish_decompress(d) };
            Ok((w, h))
        });
        let r = r.and_then(|inner| inner);
        if r.is_err() {
            // SAFETY: back to "no image" after a failed or refused one.
            unsafe { sys::jpeg_abort_decompress(self.dinfo()) };
        }
        r
    }
}

impl Decoder {
    /// Decodes `jpeg` at full size into `img` as planar 4:2:2 (made the JPEG's size, its width
    /// rounded down to even; allocates only when larger than any image before), for the H.264
    /// encoder of a camera that delivers JPEGs. `row` is scratch for one YCbCr row (grown once).
    pub fn decode_yuv422(&mut self, jpeg: &[u8], img: &mut Yuv, row: &mut Vec<u8>) -> Result<(usize, usize), Error> {
        let d = self.dinfo();
        let r = guarded(|| -> Result<(usize, usize), Error> {
            let (w, h) = Self::read_header(d, jpeg)?;
            if w < 2 || h < 2 {
                return Err(Error::TooLarge { width: w, height: h });
            }
            d.scale_num = 1;
            d.scale_denom = 1;
            d.out_color_space = sys::J_COLOR_SPACE::JCS_YCbCr;
            d.dct_method = sys::J_DCT_METHOD::JDCT_IFAST;
            // Chroma is averaged back down to 4:2:2 below: smooth upsampling would be wasted.
            d.do_fancy_upsampling = 0;
            // SAFETY: header read; computes the output size (full scale).
            unsafe { sys::jpeg_calc_output_dimensions(d) };
            let (w, h) = (d.output_width as usize, d.output_height as usize);
            let even = w & !1;
            img.set_format(even, h, Sampling::S422);
            img.set_full_range(true);
            if row.len() < w * 3 {
                row.resize(w * 3, 0);
            }
            let (y, u, v, ys, cs) = img.planes_mut();
            // SAFETY: parameters set; decoding starts.
            unsafe { sys::jpeg_start_decompress(d) };
            while (d.output_scanline as usize) < h {
                let line = d.output_scanline as usize;
                let mut ptr: sys::JSAMPROW_MUT = row.as_mut_ptr();
                // SAFETY: one row of `w * 3` bytes, inside `row`.
                unsafe { sys::jpeg_read_scanlines(d, &mut ptr, 1) };
                let (yr, ur, vr) = (&mut y[line * ys..], &mut u[line * cs..], &mut v[line * cs..]);
                for (x, px) in row[..even * 3].chunks_exact(6).enumerate() {
                    yr[2 * x] = px[0];
                    yr[2 * x + 1] = px[3];
                    ur[x] = (u16::from(px[1]) + u16::from(px[4])).div_ceil(2) as u8;
                    vr[x] = (u16::from(px[2]) + u16::from(px[5])).div_ceil(2) as u8;
                }
            }
            // SAFETY: every scanline was read.
            unsafe { sys::jpeg_finish_decompress(d) };
            Ok((even, h))
        });
        let r = r.and_then(|inner| inner);
        if r.is_err() {
            // SAFETY: back to "no image" after a failed or refused one.
            unsafe { sys::jpeg_abort_decompress(self.dinfo()) };
        }
        r
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once; the managers are freed after this.
        unsafe { sys::jpeg_destroy_decompress(self.dinfo()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test card: luma ramp left to right, chroma from the row.
    fn card(w: usize, h: usize) -> Yuv {
        let mut img = Yuv::new(w, h);
        let (y, u, v, ys, cs) = img.planes_mut();
        for row in 0..h {
            for x in 0..w {
                y[row * ys + x] = (16 + x * 219 / w) as u8;
            }
            for x in 0..w / 2 {
                u[row * cs + x] = (16 + row * 224 / h) as u8;
                v[row * cs + x] = 128;
            }
        }
        img.pad_edges();
        img
    }

    #[test]
    fn a_jpeg_decodes_back_to_the_planes_it_was_made_from() {
        let card = card(320, 240);
        let mut jpeg = vec![0u8; 256 << 10];
        let n = Encoder::new().encode(&card, 95, &mut jpeg).unwrap();
        let mut back = Yuv::new(16, 16);
        let mut row = Vec::new();
        assert_eq!(Decoder::new().decode_yuv422(&jpeg[..n], &mut back, &mut row).unwrap(), (320, 240));
        assert_eq!((back.width(), back.height()), (320, 240));
        let (a, b) = (card.planes(), back.planes());
        let diff = |p: &[u8], q: &[u8], stride: usize, w: usize| {
            let mut sum = 0u64;
            for r in 0..240 {
                for x in 0..w {
                    sum += u64::from(p[r * stride + x].abs_diff(q[r * stride + x]));
                }
            }
            sum as f64 / (240 * w) as f64
        };
        assert_eq!((a.3, a.4), (b.3, b.4), "same strides");
        assert!(diff(a.0, b.0, a.3, 320) < 2.0, "luma");
        assert!(diff(a.1, b.1, a.4, 160) < 3.0, "Cb");
        assert!(diff(a.2, b.2, a.4, 160) < 3.0, "Cr");
        // Garbage is an error, not a panic, and the decoder works after it.
        assert!(Decoder::new().decode_yuv422(b"not a jpeg", &mut back, &mut row).is_err());
    }

    #[test]
    fn a_420_image_encodes_as_420_and_decodes_to_the_same_picture() {
        // 4:2:0 with a height that is not a whole MCU (16 rows), one encoder for both samplings.
        let (w, h) = (320, 234);
        let mut img = Yuv::with_sampling(w, h, Sampling::S420);
        let (y, u, v, ys, cs) = img.planes_mut();
        for row in 0..h {
            for x in 0..w {
                y[row * ys + x] = (16 + x * 219 / w) as u8;
            }
        }
        for row in 0..h / 2 {
            for x in 0..w / 2 {
                u[row * cs + x] = (16 + row * 2 * 224 / h) as u8;
                v[row * cs + x] = (240 - x * 2 * 224 / w) as u8;
            }
        }
        img.pad_edges();
        assert_eq!(img.chroma_stride_420(), cs);
        let mut enc = Encoder::new();
        let mut jpeg = vec![0u8; 256 << 10];
        let n422 = enc.encode(&card(w, h), 90, &mut jpeg).unwrap();
        let n = enc.encode(&img, 90, &mut jpeg).unwrap();
        // The frame header's sampling factors: Y 2x2 (4:2:0), Cb and Cr 1x1.
        let sof = jpeg[..n].windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        assert_eq!(jpeg[sof + 11], 0x22, "luma sampling factors");
        assert_eq!((jpeg[sof + 14], jpeg[sof + 17]), (0x11, 0x11));
        assert!(n < n422, "4:2:0 ({n} B) is smaller than 4:2:2 ({n422} B)");
        let mut back = Yuv::new(16, 16);
        let mut row = Vec::new();
        assert_eq!(Decoder::new().decode_yuv422(&jpeg[..n], &mut back, &mut row).unwrap(), (w, h));
        let (a, b) = (img.planes(), back.planes());
        let mut worst = [0u8; 3];
        for r in 1..h - 1 {
            for x in 1..w - 1 {
                worst[0] = worst[0].max(a.0[r * a.3 + x].abs_diff(b.0[r * b.3 + x]));
            }
            for x in 1..w / 2 - 1 {
                // Decoded back as 4:2:2: chroma row r is the 4:2:0 row r / 2, within smoothing.
                worst[1] = worst[1].max(a.1[r / 2 * a.4 + x].abs_diff(b.1[r * b.4 + x]));
                worst[2] = worst[2].max(a.2[r / 2 * a.4 + x].abs_diff(b.2[r * b.4 + x]));
            }
        }
        assert!(worst.iter().all(|&d| d <= 12), "worst differences Y/Cb/Cr {worst:?}");
    }

    #[test]
    fn encodes_yuv_that_decodes_to_the_same_picture() {
        for (w, h) in [(64, 48), (38, 21)] {
            let img = card(w, h);
            let mut out = vec![0u8; 64 * 1024];
            let n = Encoder::new().encode(&img, 90, &mut out).unwrap();
            assert_eq!(&out[..2], &[0xFF, 0xD8]);
            assert_eq!(&out[n - 2..n], &[0xFF, 0xD9]);
            let mut gray = Vec::new();
            let (dw, dh) = Decoder::new().decode(&out[..n], 1, Pixels::Gray, usize::MAX, &mut gray).unwrap();
            assert_eq!((dw, dh), (w, h));
            // The luma ramp survives: left dark, right bright, within JPEG's error.
            for x in [0, w / 2, w - 1] {
                let got = gray[(h / 2) * w + x];
                let want = (16 + x * 219 / w) as u8;
                assert!(got.abs_diff(want) <= 6, "{w}x{h} column {x}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn simd_is_compiled_in_where_required() {
        // scripts/test.sh installs NASM before building and sets this: a CI build that lost the
        // SIMD code (and with it most of the speed) fails here rather than in a benchmark.
        if std::env::var_os("CAMJOBD_REQUIRE_SIMD").is_some() {
            assert!(simd(), "libjpeg-turbo was built without SIMD: install nasm, then `cargo clean -p mozjpeg-sys`");
        }
    }

    #[test]
    fn rgb_converts_to_bt601_limited_range() {
        assert_eq!(yuv_of([0, 0, 0]), [16, 128, 128]);
        assert_eq!(yuv_of([255, 255, 255]), [235, 128, 128]);
        let red = yuv_of([255, 0, 0]);
        assert!(red[0].abs_diff(81) <= 1 && red[1].abs_diff(90) <= 1 && red[2].abs_diff(240) <= 1, "{red:?}");
        let mut img = Yuv::from_rgb(&[255, 255, 255, 0, 0, 0], 2, 1);
        let (y, u, ..) = img.planes_mut();
        assert_eq!((y[0], y[1], u[0]), (235, 16, 128));
    }

    #[test]
    fn a_buffer_too_small_is_full_and_the_encoder_is_reusable() {
        let img = card(64, 48);
        let mut enc = Encoder::new();
        let mut out = vec![0u8; 64 * 1024];
        let whole = enc.encode(&img, 90, &mut out).unwrap();
        assert!(whole > 200);
        // Too small: refused, with the size it would have taken (past one scratch buffer too).
        let mut small = [0u8; 200];
        assert_eq!(enc.encode(&img, 90, &mut small), Err(Error::Full { needed: whole }));
        let big = card(640, 480);
        let whole_big = enc.encode(&big, 95, &mut out).unwrap();
        assert!(whole_big > 200 + 2 * SCRATCH, "{whole_big}");
        assert_eq!(enc.encode(&big, 95, &mut small), Err(Error::Full { needed: whole_big }));
        assert_eq!(enc.encode(&img, 90, &mut out).unwrap(), whole);
    }

    #[test]
    fn decodes_scaled_in_the_dct_and_refuses_garbage() {
        let img = card(640, 480);
        let mut out = vec![0u8; 256 * 1024];
        let n = Encoder::new().encode(&img, 80, &mut out).unwrap();
        let mut dec = Decoder::new();
        let mut px = Vec::new();
        assert_eq!(dec.decode(&out[..n], 8, Pixels::Gray, usize::MAX, &mut px).unwrap(), (80, 60));
        assert_eq!(dec.decode(&out[..n], 2, Pixels::Rgb, usize::MAX, &mut px).unwrap(), (320, 240));
        assert_eq!(dec.scale_for(&out[..n], 100).unwrap(), (4, 160, 120));
        assert_eq!(dec.scale_for(&out[..n], 641).unwrap().0, 1);
        assert_eq!(
            dec.decode(&out[..n], 1, Pixels::Gray, 1000, &mut px),
            Err(Error::TooLarge { width: 640, height: 480 })
        );
        assert!(matches!(dec.decode(b"not a jpeg", 8, Pixels::Gray, usize::MAX, &mut px), Err(Error::Codec(_))));
        assert!(matches!(dec.decode(&[], 8, Pixels::Gray, usize::MAX, &mut px), Err(Error::Codec(_))));
        // A header claiming 60000x60000 (a few bytes of a hostile file) is refused up front.
        let mut huge = out[..n].to_vec();
        let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
        huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        assert_eq!(
            dec.decode(&huge, 8, Pixels::Gray, usize::MAX, &mut px),
            Err(Error::TooLarge { width: 60000, height: 60000 })
        );
        assert!(matches!(dec.scale_for(&huge, 64), Err(Error::TooLarge { .. })));
        // Still usable after errors; a truncated JPEG decodes (libjpeg pads it).
        assert_eq!(dec.decode(&out[..n / 2], 8, Pixels::Gray, usize::MAX, &mut px).unwrap(), (80, 60));
    }
}
