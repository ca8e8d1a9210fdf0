//! The encoder against fake devices: a bcm2835-like multi-planar one (strides rounded up, rows
//! to 16, SPS/PPS in a buffer of their own), a single-planar one, ones that lack H.264, refuse
//! controls or never answer; and the 4:2:0 copy against a known picture.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::encoder::{take, Taken};
use super::*;
use crate::config::Profile;
use crate::h264::{nal, EncodeError, Encoded, Encoder, Settings};
use crate::jpeg::Yuv;

const SPS_PPS: [u8; 14] = [0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1F, 0, 0, 0, 1, 0x68, 0xCE];
const MJPG: u32 = u32::from_le_bytes(*b"MJPG");
const RGB3: u32 = u32::from_le_bytes(*b"RGB3");

/// What a fake device is like.
#[derive(Clone)]
struct Spec {
    caps: u32,
    capture_formats: Vec<u32>,
    output_formats: Vec<u32>,
    /// bytesperline is the width rounded up to this.
    stride_align: u32,
    /// Buffer rows are the height rounded up to this.
    row_align: u32,
    /// SPS/PPS come once, in a buffer of their own, and never again (bcm2835-codec's first
    /// buffer; camjobd must put them before every IDR itself).
    header_apart: bool,
    /// Controls answered EINVAL.
    refuse: Vec<u32>,
    /// Never returns an encoded buffer.
    silent: bool,
    /// Bytes of each encoded picture.
    payload: usize,
    /// The largest picture it takes (it clamps larger ones, as drivers do).
    max: (u32, u32),
    /// STREAMON of CAPTURE fails.
    refuse_streamon: bool,
    /// The first picture's H.264 comes only when the second picture is queued.
    late_once: bool,
}

fn bcm2835() -> Spec {
    Spec {
        caps: cap::M2M_MPLANE | cap::STREAMING,
        capture_formats: vec![H264, MJPG],
        output_formats: vec![YUV420, NV12, RGB3],
        stride_align: 32,
        row_align: 16,
        header_apart: true,
        refuse: Vec::new(),
        silent: false,
        payload: 600,
        max: (1920, 1088),
        refuse_streamon: false,
        late_once: false,
    }
}

#[derive(Default)]
struct Fake {
    spec: Option<Spec>,
    /// Every call, in order (`S_FMT 10 YU12 1366x766`); shared, to be read after a drop.
    calls: Arc<Mutex<Vec<String>>>,
    out_format: Option<Format>,
    /// Buffers of [OUTPUT, CAPTURE].
    mem: [Vec<Vec<u8>>; 2],
    /// OUTPUT buffers encoded, to be dequeued.
    done_out: VecDeque<usize>,
    /// CAPTURE buffers queued, empty.
    empty: VecDeque<usize>,
    /// CAPTURE buffers filled: (index, bytes, flags, timestamp).
    filled: VecDeque<(usize, usize, u32, u64)>,
    /// The timestamp of the picture being encoded.
    stamp_us: u64,
    /// With `late_once`: the first picture's H.264, held back.
    held: Option<VecDeque<(usize, usize, u32, u64)>>,
    streaming: [bool; 2],
    i_period: u32,
    since_idr: u32,
    force: bool,
    header_sent: bool,
    /// The last picture queued, as the device saw it.
    picture: Vec<u8>,
}

impl Fake {
    fn new(spec: Spec) -> Fake {
        Fake { spec: Some(spec), ..Fake::default() }
    }
    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
    fn spec(&self) -> &Spec {
        self.spec.as_ref().unwrap()
    }
    fn side(q: Queue) -> usize {
        usize::from(q.side == Side::Capture)
    }
    /// Puts `bytes` in the next empty CAPTURE buffer.
    fn emit(&mut self, bytes: &[u8], flags: u32) {
        let Some(i) = self.empty.pop_front() else { return };
        let buf = &mut self.mem[1][i];
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.filled.push_back((i, n, flags, self.stamp_us));
    }
    /// "Encodes" the picture in OUTPUT buffer `i`.
    fn encode(&mut self, i: usize) {
        self.picture = self.mem[0][i].clone();
        self.done_out.push_back(i);
        let spec = self.spec().clone();
        if spec.silent {
            return;
        }
        let idr = !self.header_sent || self.force || (self.i_period > 0 && self.since_idr + 1 >= self.i_period);
        self.force = false;
        self.since_idr = if idr { 0 } else { self.since_idr + 1 };
        let mut au = Vec::new();
        // The SPS says the picture's width (in macroblocks), so that headers of streams of
        // different sizes differ.
        let mut header = SPS_PPS;
        header[7] = (self.out_format.map_or(0, |f| f.width) / 16) as u8;
        if idr && !self.header_sent && spec.header_apart {
            self.emit(&header, 0);
        } else if idr && !spec.header_apart {
            au.extend_from_slice(&header);
        }
        self.header_sent = true;
        au.extend_from_slice(&[0, 0, 0, 1, if idr { 0x65 } else { 0x41 }]);
        au.resize(au.len() + spec.payload, 0xAB);
        // The picture's time (ms, low byte) last, so a test can tell whose H.264 it got.
        au.push((self.stamp_us / 1000) as u8);
        self.emit(&au, if idr { FLAG_KEYFRAME } else { 0 });
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl Device for Fake {
    fn caps(&mut self) -> io::Result<Caps> {
        Ok(Caps { driver: "fake".into(), card: "fake-encode".into(), device_caps: self.spec().caps })
    }
    fn formats(&mut self, q: Queue) -> io::Result<Vec<u32>> {
        self.log(format!("ENUM_FMT {}", q.buf_type()));
        Ok(if q.side == Side::Capture {
            self.spec().capture_formats.clone()
        } else {
            self.spec().output_formats.clone()
        })
    }
    fn set_format(&mut self, q: Queue, want: &Format) -> io::Result<Format> {
        self.log(format!("S_FMT {} {} {}x{}", q.buf_type(), fourcc_name(want.fourcc), want.width, want.height));
        let s = self.spec().clone();
        if q.side == Side::Capture {
            let fourcc = if s.capture_formats.contains(&want.fourcc) { want.fourcc } else { s.capture_formats[0] };
            return Ok(Format { fourcc, bytesperline: 0, planes: 1, ..*want });
        }
        let fourcc = if s.output_formats.contains(&want.fourcc) { want.fourcc } else { s.output_formats[0] };
        let (w, h) = (want.width.min(s.max.0), want.height.min(s.max.1));
        let bpl = w.next_multiple_of(s.stride_align);
        let rows = h.next_multiple_of(s.row_align);
        let f = Format { fourcc, width: w, height: rows, bytesperline: bpl, sizeimage: bpl * rows * 3 / 2, planes: 1 };
        self.out_format = Some(f);
        Ok(f)
    }
    fn set_crop(&mut self, q: Queue, width: u32, height: u32) -> io::Result<()> {
        self.log(format!("S_SELECTION {} {width}x{height}", q.buf_type()));
        Ok(())
    }
    fn set_fps(&mut self, q: Queue, fps: u32) -> io::Result<()> {
        self.log(format!("S_PARM {} {fps}", q.buf_type()));
        Ok(())
    }
    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        if self.spec().refuse.contains(&id) {
            return Err(einval());
        }
        match id {
            cid::H264_I_PERIOD => self.i_period = value as u32,
            cid::FORCE_KEY_FRAME => self.force = true,
            _ => {}
        }
        Ok(())
    }
    fn buffers(&mut self, q: Queue, count: u32) -> io::Result<Vec<usize>> {
        self.log(format!("REQBUFS {} {count}", q.buf_type()));
        let len = match q.side {
            Side::Output => self.out_format.map_or(0, |f| f.sizeimage as usize),
            Side::Capture => 64 << 10,
        };
        let side = Fake::side(q);
        self.mem[side] = vec![vec![0; len]; count as usize];
        if q.side == Side::Capture {
            self.empty.clear();
            self.filled.clear();
        } else {
            self.done_out.clear();
        }
        Ok(vec![len; count as usize])
    }
    fn memory(&mut self, q: Queue, index: usize) -> &mut [u8] {
        self.mem[Fake::side(q)].get_mut(index).map_or(&mut [], |b| &mut b[..])
    }
    fn queue(&mut self, q: Queue, index: usize, bytesused: usize, stamp_us: u64) -> io::Result<()> {
        assert!(index < self.mem[Fake::side(q)].len(), "QBUF of buffer {index} that does not exist");
        match q.side {
            Side::Capture => self.empty.push_back(index),
            Side::Output => {
                assert!(self.streaming[0], "a picture queued before STREAMON");
                assert!(bytesused > 0);
                self.stamp_us = stamp_us;
                if let Some(held) = self.held.as_mut().filter(|h| !h.is_empty()) {
                    // The late H.264 comes out before the new picture's.
                    let late: Vec<_> = held.drain(..).collect();
                    let now: Vec<_> = self.filled.drain(..).collect();
                    self.filled.extend(late);
                    self.filled.extend(now);
                }
                self.encode(index);
                if self.spec().late_once && self.held.is_none() {
                    self.held = Some(self.filled.drain(..).collect());
                }
            }
        }
        Ok(())
    }
    fn dequeue(&mut self, q: Queue) -> io::Result<Option<Dequeued>> {
        Ok(match q.side {
            Side::Output => self.done_out.pop_front().map(|index| Dequeued {
                index,
                offset: 0,
                bytesused: 0,
                flags: 0,
                stamp_us: 0,
            }),
            Side::Capture => self.filled.pop_front().map(|(index, bytesused, flags, stamp_us)| Dequeued {
                index,
                offset: 0,
                bytesused,
                flags,
                stamp_us,
            }),
        })
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.filled.is_empty() {
            std::thread::sleep(timeout);
        }
        Ok(())
    }
    fn stream(&mut self, q: Queue, on: bool) -> io::Result<()> {
        self.log(format!("{} {}", if on { "STREAMON" } else { "STREAMOFF" }, q.buf_type()));
        if on && q.side == Side::Capture && self.spec().refuse_streamon {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        self.streaming[Fake::side(q)] = on;
        if q.side == Side::Capture && on {
            // A new stream begins with SPS/PPS and an IDR.
            (self.header_sent, self.since_idr) = (false, 0);
        }
        Ok(())
    }
}

fn settings() -> Settings {
    Settings { bitrate_kbps: 2000, keyframe_interval_s: 1, profile: Profile::Baseline, fps: 10 }
}

/// A picture whose every sample says where it is.
fn picture(w: usize, h: usize) -> Yuv {
    let mut img = Yuv::new(w, h);
    let (y, u, v, ys, cs) = img.planes_mut();
    for r in 0..h {
        for c in 0..w {
            y[r * ys + c] = (r * 7 + c * 3) as u8;
        }
        for c in 0..w / 2 {
            u[r * cs + c] = (r * 5 + c) as u8;
            v[r * cs + c] = (r * 11 + c * 2 + 1) as u8;
        }
    }
    img.pad_edges();
    img
}

/// An encoder on a fake, through `check` like `find` does.
fn open(spec: Spec, size: (usize, usize)) -> Result<M2m<Fake>, EncodeError> {
    let mut dev = Fake::new(spec);
    let found = check(&mut dev, Path::new("/dev/video11")).map_err(|w| EncodeError::Start(w.to_string()))?;
    M2m::with_device(dev, found, &settings(), size)
}

fn types(au: &[u8]) -> Vec<u8> {
    nal::units(au).map(nal::nal_type).collect()
}

fn dev<D: Device>(m: &mut M2m<D>) -> &mut D {
    m.device()
}

#[test]
fn a_bcm2835_like_encoder_is_negotiated_fed_and_stopped() {
    let (w, h) = (1366, 766);
    let mut m = open(bcm2835(), (w, h)).unwrap();
    assert_eq!(m.found().raw, Raw::I420);
    assert!(m.found().mplane);
    let img = picture(w, h);
    let mut out = Vec::with_capacity(64 << 10);
    let mut keyframes = Vec::new();
    for i in 0..25u64 {
        let e = m.encode(&img, i * 100, i == 13, &mut out).unwrap();
        assert_eq!(e.bytes, out.len());
        let t = types(&out);
        if e.keyframe {
            keyframes.push(i);
            // The header came once, apart: camjobd puts it before every IDR.
            assert_eq!(t, [nal::SPS, nal::PPS, nal::IDR], "frame {i}");
            assert_eq!(out[7], (1366 / 16) as u8);
        } else {
            assert_eq!(t, [1], "frame {i}");
        }
    }
    // The first, every 10 (1 s at 10 fps), and the one asked for.
    assert_eq!(keyframes, [0, 10, 13, 23]);
    assert!(m.refused.is_empty(), "{:?}", m.refused);
    let log = Arc::clone(&dev(&mut m).calls);
    let calls = log.lock().unwrap().clone();
    let at = |c: &str| calls.iter().position(|x| x == c).unwrap_or_else(|| panic!("no {c} in {calls:?}"));
    // CAPTURE's format before OUTPUT's; the padded rows cropped; both streaming.
    assert!(at("S_FMT 9 H264 1366x766") < at("S_FMT 10 YU12 1366x766"));
    assert!(at("S_SELECTION 10 1366x766") < at("STREAMON 10"));
    assert!(at("STREAMON 10") < at("STREAMON 9"));
    assert!(calls.contains(&"S_PARM 10 10".to_string()));
    // The picture as the device got it: rows of 1376 bytes, 768 rows, U then V.
    let d = dev(&mut m);
    let (bpl, rows) = (1376, 768);
    let p = &d.picture;
    let (y, u, _, ys, cs) = img.planes();
    for (r, c) in [(0, 0), (1, 1365), (765, 17), (400, 1000)] {
        assert_eq!(p[r * bpl + c], y[r * ys + c], "Y at {r},{c}");
    }
    // The two rows the driver added repeat the last one.
    assert_eq!(p[767 * bpl + 5], y[765 * ys + 5]);
    for (r, c) in [(0, 0), (10, 682), (382, 3)] {
        assert_eq!(p[bpl * rows + r * (bpl / 2) + c], u[2 * r * cs + c], "U at {r},{c}");
    }
    // Another size: set up again, and the new stream's header goes before its IDR, not the
    // one kept from the old stream.
    let e = m.encode(&picture(640, 480), 2500, false, &mut out).unwrap();
    assert!(e.keyframe);
    assert_eq!((types(&out), out[7]), (vec![nal::SPS, nal::PPS, nal::IDR], 40));
    // Dropped: both streams off and their buffers freed, and nothing after.
    drop(m);
    let calls = log.lock().unwrap();
    assert_eq!(calls[calls.len() - 4..], ["STREAMOFF 10", "REQBUFS 10 0", "STREAMOFF 9", "REQBUFS 9 0"]);
}

#[test]
fn a_single_planar_nv12_encoder_with_inline_headers() {
    let spec = Spec {
        caps: cap::M2M | cap::STREAMING,
        output_formats: vec![NV12],
        stride_align: 64,
        row_align: 1,
        header_apart: false,
        ..bcm2835()
    };
    let mut m = open(spec, (320, 240)).unwrap();
    assert_eq!((m.found().raw, m.found().mplane), (Raw::Nv12, false));
    let mut out = Vec::with_capacity(16 << 10);
    let img = picture(320, 240);
    let e = m.encode(&img, 0, false, &mut out).unwrap();
    assert!(e.keyframe);
    // Its own SPS/PPS: not doubled.
    assert_eq!(types(&out), [nal::SPS, nal::PPS, nal::IDR]);
    assert!(!m.encode(&img, 100, false, &mut out).unwrap().keyframe);
    // NV12: U and V interleaved after 240 rows of 320 bytes (64 | 320: no padding).
    let (_, u, v, _, cs) = img.planes();
    let p = &dev(&mut m).picture;
    assert_eq!(&p[320 * 240 + 2 * 320..][..4], &[u[4 * cs], v[4 * cs], u[4 * cs + 1], v[4 * cs + 1]]);
    // Single-planar buffer types only (1, 2); no crop (nothing was padded).
    let calls = dev(&mut m).calls.lock().unwrap().clone();
    let single = |c: &String| c.split(' ').nth(1).is_none_or(|t| t == "1" || t == "2");
    assert!(calls.iter().all(|c| single(c) && !c.starts_with("S_SELECTION")), "{calls:?}");
    // A new picture size: set up again.
    let big = picture(640, 480);
    assert!(m.encode(&big, 200, false, &mut out).unwrap().keyframe);
    let calls = dev(&mut m).calls.lock().unwrap().clone();
    assert!(calls.contains(&"STREAMOFF 2".to_string()) && calls.contains(&"S_FMT 2 NV12 640x480".to_string()));
}

#[test]
fn devices_that_are_not_h264_encoders_are_refused_with_the_reason() {
    let p = Path::new("/dev/video0");
    let camera = Spec { caps: 0x0000_0001 | cap::STREAMING, ..bcm2835() };
    let w = check(&mut Fake::new(camera), p).unwrap_err();
    assert!(matches!(w, Why::NotM2m { .. }));
    assert!(w.to_string().contains("is not a memory-to-memory codec"), "{w}");
    let decoder = Spec { capture_formats: vec![YUV420], output_formats: vec![H264], ..bcm2835() };
    let w = check(&mut Fake::new(decoder), p).unwrap_err();
    assert_eq!(w.to_string(), "/dev/video0 (fake-encode) is a memory-to-memory device that does not make H.264");
    let rgb_only = Spec { output_formats: vec![RGB3], ..bcm2835() };
    let w = check(&mut Fake::new(rgb_only), p).unwrap_err();
    assert!(w.to_string().ends_with("takes neither YUV420 nor NV12 (it takes RGB3)"), "{w}");
    let camera = Why::NotM2m { path: p.into(), card: "cam".into() };
    let all = Why::NoneFits(vec![camera.clone(), w, Why::Denied(p.into()), camera]).to_string();
    assert!(all.contains("bcm2835-codec") && all.contains("video group"), "{all}");
    assert!(all.contains("(it takes RGB3)") && all.ends_with("; 2 others are not memory-to-memory codecs"), "{all}");
}

#[test]
fn a_refused_picture_or_start_says_what_and_leaves_nothing_allocated() {
    let e = open(bcm2835(), (2592, 1944)).err().unwrap();
    assert_eq!(
        e.to_string(),
        "cannot start the H.264 encoder: the encoder fake-encode refused 2592x1944 YUV420: it set 1920x1088 with rows of 1920 bytes"
    );
    let mut dev = Fake::new(Spec { refuse_streamon: true, ..bcm2835() });
    let log = Arc::clone(&dev.calls);
    let found = check(&mut dev, Path::new("/dev/video11")).unwrap();
    let e = M2m::with_device(dev, found, &settings(), (640, 480)).err().unwrap();
    assert!(
        e.to_string().ends_with("refused to start its output (STREAMON): Cannot allocate memory (os error 12)"),
        "{e}"
    );
    // The half-done set-up was undone: formats can be set again.
    let calls = log.lock().unwrap();
    assert_eq!(calls[calls.len() - 4..], ["STREAMOFF 10", "REQBUFS 10 0", "STREAMOFF 9", "REQBUFS 9 0"]);
}

#[test]
fn refused_controls_are_logged_and_the_stream_goes_on() {
    let spec = Spec { refuse: vec![cid::REPEAT_SEQ_HEADER, cid::H264_LEVEL, cid::H264_I_PERIOD], ..bcm2835() };
    let mut m = open(spec, (320, 240)).unwrap();
    assert_eq!(m.refused.len(), 3, "{:?}", m.refused);
    let mut out = Vec::with_capacity(16 << 10);
    let img = picture(320, 240);
    let keys: Vec<bool> = (0..21).map(|i| m.encode(&img, i * 100, false, &mut out).unwrap().keyframe).collect();
    // Without I_PERIOD the device never makes one by itself: camjobd forces them at the period.
    let at: Vec<usize> = keys.iter().enumerate().filter(|k| *k.1).map(|k| k.0).collect();
    assert_eq!(at, [0, 10, 20]);
    // A driver without FORCE_KEY_FRAME: asked for, logged, no error.
    let spec = Spec { refuse: vec![cid::FORCE_KEY_FRAME], ..bcm2835() };
    let mut m = open(spec, (320, 240)).unwrap();
    m.encode(&img, 0, false, &mut out).unwrap();
    assert!(!m.encode(&img, 100, true, &mut out).unwrap().keyframe);
    assert_eq!(m.refused.len(), 1);
}

#[test]
fn an_encoder_that_never_answers_is_a_deadline_error_not_a_hang() {
    let mut m = open(Spec { silent: true, ..bcm2835() }, (320, 240)).unwrap();
    m.deadline = Duration::from_millis(100);
    let mut out = Vec::with_capacity(16 << 10);
    let img = picture(320, 240);
    let t = Instant::now();
    let e = m.encode(&img, 0, false, &mut out).unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
    assert!(matches!(&e, EncodeError::Frame(m) if m.contains("no H.264 within 100 ms")), "{e}");
}

#[test]
fn the_late_h264_of_a_frame_that_missed_its_deadline_is_dropped_not_given_to_the_next() {
    let mut m = open(Spec { late_once: true, ..bcm2835() }, (320, 240)).unwrap();
    m.deadline = Duration::from_millis(50);
    let mut out = Vec::with_capacity(16 << 10);
    let img = picture(320, 240);
    assert!(m.encode(&img, 0, false, &mut out).is_err(), "the first frame's H.264 is late");
    // The second frame gets its own H.264, not the first's late one; so do the next.
    for i in 1..5u64 {
        m.encode(&img, i * 33, false, &mut out).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(out.last(), Some(&((i * 33) as u8)), "frame {i} was given another frame's H.264");
    }
    assert_eq!(dev(&mut m).empty.len() + dev(&mut m).filled.len(), 4, "every H.264 buffer went back");
}

#[test]
fn an_access_unit_larger_than_out_is_refused_and_out_is_not_grown() {
    let mut m = open(Spec { payload: 5000, ..bcm2835() }, (320, 240)).unwrap();
    let img = picture(320, 240);
    let mut small = Vec::with_capacity(1000);
    let e = m.encode(&img, 0, false, &mut small).unwrap_err();
    assert_eq!(e, EncodeError::TooLarge(SPS_PPS.len() + 5 + 5000 + 1));
    assert_eq!(small.capacity(), 1000);
    // Every H.264 buffer went back to the driver: the next frames still come.
    let mut out = Vec::with_capacity(16 << 10);
    for i in 1..10 {
        assert!(m.encode(&img, i * 100, false, &mut out).is_ok(), "frame {i}");
    }
    assert_eq!(dev(&mut m).empty.len() + dev(&mut m).filled.len(), 4);
}

#[test]
fn header_only_buffers_are_kept_and_put_before_idrs_without_their_own() {
    let (mut header, mut mismatch) = (Vec::with_capacity(64), false);
    let mut out = Vec::with_capacity(256);
    assert_eq!(take(&SPS_PPS, 0, &mut header, &mut mismatch, &mut out).unwrap(), Taken::Nothing);
    let idr = [0, 0, 0, 1, 0x65, 1, 2];
    let e = take(&idr, FLAG_KEYFRAME, &mut header, &mut mismatch, &mut out).unwrap();
    assert_eq!(e, Taken::Frame(Encoded { keyframe: true, bytes: 21 }));
    assert_eq!(out, [&SPS_PPS[..], &idr].concat());
    // A P frame: as it is; a flag that disagrees with the NAL units is noted, the NAL units win.
    let p = [0, 0, 0, 1, 0x41, 9];
    assert_eq!(
        take(&p, FLAG_KEYFRAME, &mut header, &mut mismatch, &mut out).unwrap(),
        Taken::Frame(Encoded { keyframe: false, bytes: 6 })
    );
    assert!(mismatch);
    // An empty buffer is no frame.
    assert_eq!(take(&[], 0, &mut header, &mut mismatch, &mut out).unwrap(), Taken::Nothing);
}

/// Checks a 4:2:0 copy of `img` against the picture, sample by sample.
fn check_copy(img: &Yuv, l: &Layout, dst: &[u8]) {
    let (y, u, v, ys, cs) = img.planes();
    let (w, h) = (img.width(), img.height());
    for r in 0..l.rows {
        for c in 0..w {
            assert_eq!(dst[r * l.stride + c], y[r.min(h - 1) * ys + c], "Y {r},{c}");
        }
    }
    let crows = l.rows.div_ceil(2);
    let luma = l.stride * l.rows;
    for r in 0..crows {
        let s = (2 * r).min(h - 1) * cs;
        for c in 0..w / 2 {
            let (du, dv) = match l.raw {
                Raw::I420 => {
                    let cst = l.stride / 2;
                    (dst[luma + r * cst + c], dst[luma + cst * crows + r * cst + c])
                }
                Raw::Nv12 => (dst[luma + r * l.stride + 2 * c], dst[luma + r * l.stride + 2 * c + 1]),
            };
            assert_eq!((du, dv), (u[s + c], v[s + c]), "{:?} chroma {r},{c}", l.raw);
        }
    }
}

#[test]
fn the_420_copy_follows_an_odd_stride_and_padded_rows() {
    let (w, h) = (22, 9);
    let img = picture(w, h);
    for raw in [Raw::I420, Raw::Nv12] {
        // Rows of 37 bytes, 12 rows: nothing a picture size would give.
        let (stride, rows) = (37u32, 12u32);
        let size = Layout { raw, width: w, height: h, stride: 37, rows: 12, bytes: 0 }.needed() as u32;
        let got = Format {
            fourcc: raw.fourcc(),
            width: w as u32,
            height: rows,
            bytesperline: stride,
            sizeimage: size,
            planes: 1,
        };
        let l = Layout::new(raw, &got, w, h).unwrap();
        let mut dst = vec![0xEE; l.bytes];
        copy_420(&img, &l, &mut dst, None);
        check_copy(&img, &l, &dst);
        // A driver that gave less than the picture needs is refused.
        let short = Format { sizeimage: size - 1, ..got };
        assert!(Layout::new(raw, &short, w, h).unwrap_err().contains("smaller than"));
        let two_planes = Format { planes: 2, ..got };
        assert!(Layout::new(raw, &two_planes, w, h).is_err());
    }
}

#[test]
fn levels_follow_the_picture_rate_and_bitrate() {
    assert_eq!(level_name(level_for(640, 480, 30, 2000)), "3.0");
    assert_eq!(level_name(level_for(1280, 720, 30, 4000)), "3.1");
    assert_eq!(level_name(level_for(1920, 1080, 30, 8000)), "4.0");
    assert_eq!(level_name(level_for(1920, 1080, 30, 25_000)), "4.1");
    assert_eq!(level_name(level_for(1920, 1080, 60, 8000)), "4.2");
}

#[test]
fn video_nodes_are_listed_in_number_order() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["video10", "video2", "video0", "videox", "media0", "video11"] {
        std::fs::write(dir.path().join(n), b"").unwrap();
    }
    let names: Vec<String> =
        video_nodes(dir.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["video0", "video2", "video10", "video11"]);
}

#[cfg(feature = "v4l2")]
#[test]
fn a_configured_device_that_is_missing_or_not_v4l2_says_so() {
    let w = find(Some(Path::new("/nonexistent/video11"))).unwrap_err();
    assert_eq!(w, Why::Missing("/nonexistent/video11".into()));
    assert!(w.to_string().contains("bcm2835-codec") && w.to_string().contains("video.device null"), "{w}");
    // A node that is no V4L2 device: QUERYCAP through the real ioctl path fails cleanly.
    let file = tempfile::NamedTempFile::new().unwrap();
    let w = find(Some(file.path())).unwrap_err();
    // ENOTTY from a kernel; qemu-user (the cross tests) answers an ioctl it does not know
    // with ENOSYS.
    assert!(matches!(&w, Why::Io(_, e) if e.contains("os error 25") || e.contains("os error 38")), "{w}");
}

#[cfg(not(feature = "v4l2"))]
#[test]
fn without_v4l2_there_is_no_hardware_encoder() {
    assert_eq!(find(None), Err(Why::NotBuilt));
    let e = super::open(Path::new("/dev/video11"), &settings(), (640, 480)).err().unwrap();
    assert!(e.to_string().contains("without V4L2"), "{e}");
}

#[test]
fn full_range_samples_are_squeezed_into_the_limited_range_as_they_are_copied() {
    let t = super::layout::Squeeze::new();
    let mut img = Yuv::with_sampling(32, 16, crate::jpeg::Sampling::S420);
    {
        let (y, u, v, ys, cs) = img.planes_mut();
        for r in 0..16 {
            y[r * ys..r * ys + 32].copy_from_slice(&[0, 255, 128, 64].repeat(8));
        }
        for r in 0..8 {
            u[r * cs..r * cs + 16].copy_from_slice(&[0, 255, 128, 64].repeat(4));
            v[r * cs..r * cs + 16].copy_from_slice(&[255; 16]);
        }
    }
    let got = Format { fourcc: Raw::I420.fourcc(), width: 32, height: 16, bytesperline: 32, sizeimage: 768, planes: 1 };
    let l = Layout::new(Raw::I420, &got, 32, 16).unwrap();
    let mut dst = vec![0u8; l.needed()];
    copy_420(&img, &l, &mut dst, Some(&t));
    assert_eq!(dst[..4], [16, 235, 126, 71], "luma");
    assert_eq!(dst[512..516], [16, 240, 128, 72], "Cb");
    assert_eq!(dst[512 + 128], 240, "Cr");
    copy_420(&img, &l, &mut dst, None);
    assert_eq!(dst[..4], [0, 255, 128, 64], "untouched without it");
}
