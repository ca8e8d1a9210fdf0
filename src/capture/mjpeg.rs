//! MJPEG stream splitter: turns a byte stream of concatenated JPEGs into frames.
//!
//! [`Splitter`] owns one staging buffer, allocated once in [`Splitter::new`] and never grown,
//! so splitting allocates nothing per frame. It parses each frame's marker segments instead of
//! searching for `FFD8`/`FFD9`: segment payloads are skipped by their length (an EXIF thumbnail
//! carries its own SOI/EOI), and entropy-coded data is scanned for `0xFF` with `memchr`, where
//! `FF00` and `RSTn` are data and any other marker ends the scan. Scan state is kept between
//! calls, so every byte is looked at a bounded number of times however the input is chunked.
//!
//! Bad input costs one report and a resync, never memory: bytes before an SOI are one
//! [`DropCause::Garbage`] per run, a malformed frame is one `Garbage`, and a frame longer than
//! `max_frame_bytes` is one [`DropCause::Oversize`], discarded as it streams past.
//!
//! Usage: loop on [`Splitter::next`] until it answers [`Next::NeedMore`], then call
//! [`Splitter::fill_from`] once (0 bytes read means end of input) and loop again.

use std::io;

use memchr::memchr;

use crate::capture::DropCause;

/// Bytes of free space kept beyond `max_frame_bytes` so that a read always has room, even when
/// a frame of the maximum size is almost complete.
const READ_CHUNK: usize = 64 * 1024;

/// What [`Splitter::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A complete JPEG, SOI through EOI. Borrowed from the staging buffer: valid until the next
    /// call on the splitter.
    Frame {
        /// The frame's bytes.
        data: &'a [u8],
        /// Width from the frame's SOF segment.
        width: u16,
        /// Height from the frame's SOF segment.
        height: u16,
    },
    /// A frame or a run of bytes was dropped; the splitter has resynchronised.
    Dropped(DropCause),
    /// Everything buffered has been scanned; call [`Splitter::fill_from`].
    NeedMore,
}

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a frame, looking for an SOI.
    Hunt,
    /// Inside a frame's headers, at the position where a marker must start.
    Marker,
    /// Inside a segment payload: `left` bytes to skip, then a marker (or entropy-coded data
    /// when the segment was an SOS header).
    Skip { left: usize, then_entropy: bool },
    /// Inside entropy-coded data after an SOS header.
    Entropy,
}

/// Splits an MJPEG byte stream into JPEG frames in a fixed buffer. See the module docs.
pub struct Splitter {
    /// The staging buffer: `max_frame_bytes + READ_CHUNK` bytes, never reallocated.
    buf: Box<[u8]>,
    /// Largest frame delivered, in bytes.
    max: usize,
    /// `buf[..end]` holds data read so far (what lies before the keep point is dead).
    end: usize,
    /// Next byte to scan.
    pos: usize,
    /// Index of the current frame's SOI; meaningful only inside a frame that is not oversize.
    frame_start: usize,
    state: State,
    /// The current frame passed `max` and has been reported; its bytes are being discarded.
    oversize: bool,
    /// Garbage was skipped since the last report.
    garbage: bool,
    /// Resyncing after a reported drop: the bytes skipped belong to that drop and are not
    /// reported again.
    quiet: bool,
    /// (width, height) from the current frame's SOF.
    dims: Option<(u16, u16)>,
    /// The current frame has had an SOS.
    seen_sos: bool,
}

impl Splitter {
    /// A splitter delivering frames of at most `max_frame_bytes`. Allocates its buffer here
    /// and never again.
    pub fn new(max_frame_bytes: usize) -> Self {
        let cap = max_frame_bytes.saturating_add(READ_CHUNK);
        Splitter {
            buf: vec![0u8; cap].into_boxed_slice(),
            max: max_frame_bytes,
            end: 0,
            pos: 0,
            frame_start: 0,
            state: State::Hunt,
            oversize: false,
            garbage: false,
            quiet: false,
            dims: None,
            seen_sos: false,
        }
    }

    /// The largest frame this splitter delivers.
    pub fn max_frame_bytes(&self) -> usize {
        self.max
    }

    /// Forgets all buffered data and scan state, as if just created (keeps the buffer).
    pub fn reset(&mut self) {
        self.end = 0;
        self.pos = 0;
        self.frame_start = 0;
        self.state = State::Hunt;
        self.oversize = false;
        self.garbage = false;
        self.quiet = false;
        self.dims = None;
        self.seen_sos = false;
    }

    /// True while a frame has started (SOI seen) but not ended. Lets a caller tell "the
    /// stream ended mid-frame" from "the stream ended between frames".
    pub fn in_frame(&self) -> bool {
        self.state != State::Hunt
    }

    /// Reads once from `r` into the buffer's free space, first moving the unconsumed bytes to
    /// the front if the free tail is short. Returns the bytes read; 0 means end of input.
    /// `Interrupted` is retried; other errors (including `WouldBlock` on a non-blocking
    /// reader) are returned as they are.
    ///
    /// Call it only after [`Splitter::next`] answered [`Next::NeedMore`]: that guarantees room.
    pub fn fill_from<R: io::Read>(&mut self, r: &mut R) -> io::Result<usize> {
        let keep = self.keep_from();
        if keep == self.end {
            // Nothing worth keeping: rewind for free.
            self.shift(keep);
        } else if self.buf.len() - self.end < READ_CHUNK && keep > 0 {
            // Move only when the tail is short, so the copy is amortised over many reads.
            self.buf.copy_within(keep..self.end, 0);
            self.shift(keep);
        }
        if self.end == self.buf.len() {
            // Only reachable if the caller skipped draining `next`; reading 0 bytes would
            // look like end of input.
            return Err(io::Error::other("mjpeg splitter buffer full: drain next() until NeedMore before fill_from"));
        }
        let n = read_some(r, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// First byte that must survive a compaction.
    fn keep_from(&self) -> usize {
        if self.state != State::Hunt && !self.oversize {
            self.frame_start
        } else {
            self.pos
        }
    }

    /// Rebases every index after the bytes before `by` were dropped.
    fn shift(&mut self, by: usize) {
        self.end -= by;
        self.pos -= by;
        self.frame_start = self.frame_start.saturating_sub(by);
    }

    /// Notes `n` skipped bytes outside a frame.
    fn skipped(&mut self, n: usize) {
        if n > 0 && !self.quiet {
            self.garbage = true;
        }
    }

    /// Starts a frame at the SOI at `at`.
    fn begin_frame(&mut self, at: usize) {
        self.frame_start = at;
        self.pos = at + 2;
        self.state = State::Marker;
        self.oversize = false;
        self.quiet = false;
        self.dims = None;
        self.seen_sos = false;
    }

    /// A structural error at `at` inside the current frame. Returns the drop to report, or
    /// `None` when the frame was already reported as oversize.
    ///
    /// Resync point: an SOI in header position is taken as the next frame's start (the current
    /// one was truncated). Otherwise scanning resumes just after the bad frame's SOI, since a
    /// broken length may have skipped over the next frame's SOI; the bytes skipped on the way
    /// are part of this drop. An oversize frame's bytes are gone, so it resumes at `at`.
    fn fail(&mut self, at: usize, at_soi: bool) -> Option<DropCause> {
        self.state = State::Hunt;
        self.quiet = true;
        if self.oversize {
            self.oversize = false;
            self.pos = at;
            None
        } else {
            self.pos = if at_soi { at } else { self.frame_start + 2 };
            Some(DropCause::Garbage)
        }
    }

    /// Scans buffered bytes for the next event. Returns at most one frame or drop per call.
    // Not `Iterator::next`: the frame borrows the splitter's buffer (a lending iterator).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Next<'_> {
        loop {
            let scan = match self.state {
                State::Hunt => self.hunt(),
                State::Marker => self.marker(),
                State::Skip { left, then_entropy } => self.skip(left, then_entropy),
                State::Entropy => self.entropy(),
            };
            match scan {
                Scan::Again => {}
                Scan::Out(n) => return n,
                Scan::Done(d) => return done_to_next(d, self),
            }
        }
    }

    /// Looks for an SOI between frames; what it passes over is garbage.
    fn hunt(&mut self) -> Scan {
        let at = match memchr(0xFF, &self.buf[self.pos..self.end]) {
            Some(i) => self.pos + i,
            None => {
                self.skipped(self.end - self.pos);
                self.pos = self.end;
                return Scan::Out(Next::NeedMore);
            }
        };
        self.skipped(at - self.pos);
        if at + 1 >= self.end {
            // Keep the 0xFF: it may be the first half of an SOI.
            self.pos = at;
            return Scan::Out(Next::NeedMore);
        }
        if self.buf[at + 1] != 0xD8 {
            self.skipped(1);
            self.pos = at + 1;
            return Scan::Again;
        }
        self.begin_frame(at);
        if self.garbage {
            self.garbage = false;
            return Scan::Out(Next::Dropped(DropCause::Garbage));
        }
        Scan::Again
    }

    /// Reads the marker at `pos` inside a frame (header segments, before or between scans).
    fn marker(&mut self) -> Scan {
        let mut at = self.pos;
        if at >= self.end {
            return Scan::Out(self.need_more());
        }
        if self.buf[at] != 0xFF {
            return self.fail_scan(at, false);
        }
        // Fill bytes: any number of 0xFF may precede a marker.
        while at + 1 < self.end && self.buf[at + 1] == 0xFF {
            at += 1;
        }
        self.pos = at;
        if at + 1 >= self.end {
            return Scan::Out(self.need_more());
        }
        match self.buf[at + 1] {
            0xD8 => self.fail_scan(at, true),
            0xD9 if self.dims.is_some() && self.seen_sos => self.complete(at + 2).map_or(Scan::Again, Scan::Done),
            0xD9 | 0x00 => self.fail_scan(at, false),
            // TEM and RSTn stand alone: no length follows.
            0x01 | 0xD0..=0xD7 => {
                self.pos = at + 2;
                Scan::Again
            }
            m => self.segment(at, m),
        }
    }

    /// A marker segment with a length: checks it, takes the size from an SOF, skips the rest.
    fn segment(&mut self, at: usize, m: u8) -> Scan {
        if at + 4 > self.end {
            return Scan::Out(self.need_more());
        }
        let len = be16(&self.buf[at + 2..]) as usize;
        let sof = is_sof(m);
        if len < 2 || (sof && len < 8) || (m == 0xDA && self.dims.is_none()) {
            return self.fail_scan(at, false);
        }
        if sof {
            // Need P, Y, X: FF Cn Lh Ll P Yh Yl Xh Xl.
            if at + 9 > self.end {
                return Scan::Out(self.need_more());
            }
            let height = be16(&self.buf[at + 5..]);
            let width = be16(&self.buf[at + 7..]);
            if width == 0 || height == 0 {
                // Height 0 (DNL) is legal JPEG but gives no size to report.
                return self.fail_scan(at, false);
            }
            if self.dims.is_none() {
                self.dims = Some((width, height));
            }
        }
        if m == 0xDA {
            self.seen_sos = true;
        }
        self.pos = at + 2;
        self.state = State::Skip { left: len, then_entropy: m == 0xDA };
        Scan::Again
    }

    /// Skips the rest of a segment, possibly across reads.
    fn skip(&mut self, left: usize, then_entropy: bool) -> Scan {
        let n = left.min(self.end - self.pos);
        self.pos += n;
        if n < left {
            self.state = State::Skip { left: left - n, then_entropy };
            return Scan::Out(self.need_more());
        }
        self.state = if then_entropy { State::Entropy } else { State::Marker };
        Scan::Again
    }

    /// Walks entropy-coded data to the marker that ends the scan.
    fn entropy(&mut self) -> Scan {
        let at = match memchr(0xFF, &self.buf[self.pos..self.end]) {
            Some(i) => self.pos + i,
            None => {
                self.pos = self.end;
                return Scan::Out(self.need_more());
            }
        };
        if at + 1 >= self.end {
            self.pos = at;
            return Scan::Out(self.need_more());
        }
        match self.buf[at + 1] {
            // Stuffed zero and restart markers are part of the scan.
            0x00 | 0xD0..=0xD7 => self.pos = at + 2,
            // Fill byte: the marker, if any, starts at the next 0xFF.
            0xFF => self.pos = at + 1,
            0xD9 => return self.complete(at + 2).map_or(Scan::Again, Scan::Done),
            // Any other marker ends this scan (progressive JPEGs have several).
            _ => {
                self.pos = at;
                self.state = State::Marker;
            }
        }
        Scan::Again
    }

    /// [`Splitter::fail`] as a scan step.
    fn fail_scan(&mut self, at: usize, at_soi: bool) -> Scan {
        self.fail(at, at_soi).map_or(Scan::Again, |c| Scan::Out(Next::Dropped(c)))
    }

    fn complete(&mut self, stop: usize) -> Option<Done> {
        self.state = State::Hunt;
        self.pos = stop;
        if self.oversize {
            // Already reported when it crossed the limit; the stream is in sync again.
            self.oversize = false;
            return None;
        }
        if stop - self.frame_start > self.max {
            return Some(Done::Oversize);
        }
        let (width, height) = self.dims.unwrap_or((0, 0));
        Some(Done::Frame { start: self.frame_start, stop, width, height })
    }

    /// Out of data inside a frame. A frame that has outgrown `max` is reported now and then
    /// discarded as it streams past, so the buffer never has to hold more than `max` bytes.
    fn need_more(&mut self) -> Next<'static> {
        if !self.oversize && self.state != State::Hunt && self.pos - self.frame_start > self.max {
            self.oversize = true;
            return Next::Dropped(DropCause::Oversize);
        }
        Next::NeedMore
    }
}

/// One step of the scan: go on, return something that borrows nothing, or return a frame.
enum Scan {
    Again,
    Out(Next<'static>),
    Done(Done),
}

/// A finished frame, by indices (keeps the borrow of the buffer out of the scan loop).
enum Done {
    Frame { start: usize, stop: usize, width: u16, height: u16 },
    Oversize,
}

fn done_to_next(d: Done, s: &Splitter) -> Next<'_> {
    match d {
        Done::Frame { start, stop, width, height } => Next::Frame { data: &s.buf[start..stop], width, height },
        Done::Oversize => Next::Dropped(DropCause::Oversize),
    }
}

/// SOF0..SOF15, minus the markers in that range that are not frame headers.
fn is_sof(m: u8) -> bool {
    matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// One read into `buf`, retried when a signal interrupts it (`Ok(0)`: the end of the input).
/// Shared by the frame splitters of pipe sources.
pub fn read_some<R: io::Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Appends a marker segment with a correct length field.
    fn seg(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(payload);
    }

    fn app0(out: &mut Vec<u8>) {
        seg(out, 0xE0, b"JFIF\0\x01\x01\x00\x00\x01\x00\x01\x00\x00");
    }

    fn tables(out: &mut Vec<u8>) {
        let mut dqt = vec![0u8];
        dqt.extend_from_slice(&[1u8; 64]);
        seg(out, 0xDB, &dqt);
    }

    fn sof(out: &mut Vec<u8>, marker: u8, w: u16, h: u16) {
        let mut p = vec![8u8];
        p.extend_from_slice(&h.to_be_bytes());
        p.extend_from_slice(&w.to_be_bytes());
        p.extend_from_slice(&[1, 1, 0x11, 0]);
        seg(out, marker, &p);
    }

    fn dht(out: &mut Vec<u8>) {
        // DC and AC table 0: one code of length 1 (symbol 0: DC diff 0 / AC EOB).
        for class in [0x00u8, 0x10] {
            let mut p = vec![class, 1];
            p.extend_from_slice(&[0u8; 15]);
            p.push(0);
            seg(out, 0xC4, &p);
        }
    }

    fn sos(out: &mut Vec<u8>) {
        seg(out, 0xDA, &[1, 1, 0x00, 0, 63, 0]);
    }

    /// A baseline greyscale JPEG of w x h with the given entropy-coded bytes.
    pub(crate) fn jpeg_with(w: u16, h: u16, entropy: &[u8], extra_app: Option<&[u8]>) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        app0(&mut v);
        if let Some(a) = extra_app {
            seg(&mut v, 0xE1, a);
        }
        tables(&mut v);
        sof(&mut v, 0xC0, w, h);
        dht(&mut v);
        sos(&mut v);
        v.extend_from_slice(entropy);
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    /// A decodable-shaped frame: every block is DC 0 + EOB, padded with ones.
    pub(crate) fn jpeg(w: u16, h: u16) -> Vec<u8> {
        let blocks = (w as usize).div_ceil(8) * (h as usize).div_ceil(8);
        let bits = blocks * 2;
        let mut e = vec![0u8; bits.div_ceil(8)];
        let pad = e.len() * 8 - bits;
        let last = e.len() - 1;
        e[last] |= ((1u16 << pad) - 1) as u8;
        jpeg_with(w, h, &e, None)
    }

    /// Entropy data with stuffed bytes, restart markers and fill bytes before a marker.
    fn tricky_entropy() -> Vec<u8> {
        vec![
            0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0x00, 0xFF, 0xD7, 0x78, 0xFF, 0xFF, 0xD1, 0x9A, 0xD8, 0xD9,
            0xFF, 0x00,
        ]
    }

    /// A reader that hands out at most `chunk` bytes per read (and `first` on the first read).
    struct Chunked<'a> {
        data: &'a [u8],
        at: usize,
        chunk: usize,
        first: Option<usize>,
    }

    impl io::Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let want = self.first.take().unwrap_or(self.chunk);
            let n = want.min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[derive(Debug, PartialEq, Clone)]
    enum Ev {
        F(Vec<u8>, u16, u16),
        D(DropCause),
    }

    fn run_reader<R: io::Read>(s: &mut Splitter, r: &mut R) -> Vec<Ev> {
        let mut out = Vec::new();
        loop {
            match s.next() {
                Next::Frame { data, width, height } => out.push(Ev::F(data.to_vec(), width, height)),
                Next::Dropped(c) => out.push(Ev::D(c)),
                Next::NeedMore => {
                    if s.fill_from(r).unwrap() == 0 {
                        return out;
                    }
                }
            }
        }
    }

    fn run(input: &[u8], max: usize, chunk: usize) -> Vec<Ev> {
        let mut s = Splitter::new(max);
        run_reader(&mut s, &mut Chunked { data: input, at: 0, chunk, first: None })
    }

    /// Same result for every chunk size and every split point of the first read.
    fn run_all(input: &[u8], max: usize) -> Vec<Ev> {
        let want = run(input, max, usize::MAX);
        for chunk in 1..=input.len().min(300) {
            assert_eq!(run(input, max, chunk), want, "chunk {chunk}");
        }
        for first in 0..=input.len() {
            let mut s = Splitter::new(max);
            let mut r = Chunked { data: input, at: 0, chunk: usize::MAX, first: Some(first) };
            // A first read of 0 would mean EOF; start with one fill of the split instead.
            if first == 0 {
                r.first = Some(1);
            }
            assert_eq!(run_reader(&mut s, &mut r), want, "split at {first}");
        }
        want
    }

    fn f(v: &[u8], w: u16, h: u16) -> Ev {
        Ev::F(v.to_vec(), w, h)
    }

    #[test]
    fn single_and_consecutive_frames() {
        let a = jpeg(16, 8);
        let b = jpeg_with(640, 480, &tricky_entropy(), None);
        let mut input = a.clone();
        input.extend_from_slice(&b);
        input.extend_from_slice(&a);
        let ev = run_all(&input, 4096);
        assert_eq!(ev, vec![f(&a, 16, 8), f(&b, 640, 480), f(&a, 16, 8)]);
    }

    #[test]
    fn garbage_before_and_between_frames_is_one_drop_per_run() {
        let a = jpeg(8, 8);
        let mut input = b"hello\xFF\xFF\x00garbage\xFF".to_vec();
        input.extend_from_slice(&a);
        input.extend_from_slice(b"\x00\x01\x02\xFF\xD9\xFF");
        input.extend_from_slice(&a);
        input.extend_from_slice(&a);
        input.extend_from_slice(b"\xFF\xE0");
        input.extend_from_slice(&a);
        input.extend_from_slice(b"trailing garbage at EOF");
        let ev = run_all(&input, 4096);
        let g = Ev::D(DropCause::Garbage);
        let a8 = f(&a, 8, 8);
        assert_eq!(ev, vec![g.clone(), a8.clone(), g.clone(), a8.clone(), a8.clone(), g, a8]);
    }

    #[test]
    fn exif_thumbnail_inside_app1_is_skipped() {
        let thumb = jpeg(8, 8);
        let mut app1 = b"Exif\0\0MM\0*".to_vec();
        app1.extend_from_slice(&thumb);
        app1.extend_from_slice(b"\xFF\xD9\xFF\xD8tail");
        let outer = jpeg_with(320, 240, &tricky_entropy(), Some(&app1));
        let mut input = outer.clone();
        input.extend_from_slice(&outer);
        let ev = run_all(&input, 4096);
        assert_eq!(ev, vec![f(&outer, 320, 240), f(&outer, 320, 240)]);
    }

    #[test]
    fn fill_bytes_standalone_markers_and_progressive_scans() {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xFF, 0xFF];
        // The last FF above is the start of APP0 after fill bytes.
        v.pop();
        app0(&mut v);
        v.extend_from_slice(&[0xFF, 0x01]); // TEM
        tables(&mut v);
        sof(&mut v, 0xC2, 1920, 1080);
        dht(&mut v);
        sos(&mut v);
        v.extend_from_slice(&tricky_entropy());
        dht(&mut v); // ends the first scan
        sos(&mut v);
        v.extend_from_slice(&[0x01, 0xFF, 0x00, 0x02]);
        v.push(0xFF); // one fill byte before a marker inside entropy data
        seg(&mut v, 0xFE, b"comment \xFF\xD9 inside");
        sos(&mut v);
        v.extend_from_slice(&[0x03]);
        v.extend_from_slice(&[0xFF, 0xD9]);
        let ev = run_all(&v, 4096);
        assert_eq!(ev, vec![f(&v, 1920, 1080)]);
    }

    #[test]
    fn eoi_after_a_segment_ends_a_frame_with_a_scan() {
        let mut v = jpeg(8, 8);
        v.truncate(v.len() - 2);
        seg(&mut v, 0xFE, b"note");
        v.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(run_all(&v, 4096), vec![f(&v, 8, 8)]);
    }

    #[test]
    fn truncated_frame_then_good_frame() {
        let good = jpeg(24, 16);
        let g = Ev::D(DropCause::Garbage);
        // SOI, APP0, then a new SOI where a marker should be.
        let mut input = vec![0xFF, 0xD8];
        app0(&mut input);
        input.extend_from_slice(&good);
        assert_eq!(run_all(&input, 4096), vec![g.clone(), f(&good, 24, 16)]);

        // Cut in the middle of entropy-coded data.
        let mut input = jpeg_with(8, 8, &[1, 2, 3, 4, 5, 6, 7, 8], None);
        input.truncate(input.len() - 5);
        input.extend_from_slice(&good);
        assert_eq!(run_all(&input, 4096), vec![g.clone(), f(&good, 24, 16)]);

        // Cut inside a segment whose length then reaches into the next frame.
        let mut input = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x60, b'J', b'F'];
        input.extend_from_slice(&good);
        input.extend_from_slice(&good);
        assert_eq!(run_all(&input, 4096), vec![g.clone(), f(&good, 24, 16), f(&good, 24, 16)]);
    }

    #[test]
    fn structural_errors_are_garbage() {
        let good = jpeg(8, 8);
        let g = Ev::D(DropCause::Garbage);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // Segment length below 2.
        cases.push(vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0, 0, 0]);
        // A byte that is not 0xFF where a marker must be.
        cases.push(vec![0xFF, 0xD8, 0x12, 0x34]);
        // FF00 in header position.
        cases.push(vec![0xFF, 0xD8, 0xFF, 0x00]);
        // No SOF before SOS.
        let mut v = vec![0xFF, 0xD8];
        app0(&mut v);
        sos(&mut v);
        v.extend_from_slice(&[1, 2, 0xFF, 0xD9]);
        cases.push(v);
        // EOI with no SOF at all.
        let mut v = vec![0xFF, 0xD8];
        app0(&mut v);
        v.extend_from_slice(&[0xFF, 0xD9]);
        cases.push(v);
        // Zero width.
        let mut v = vec![0xFF, 0xD8];
        sof(&mut v, 0xC0, 0, 8);
        cases.push(v);
        // SOF too short to hold a size.
        let mut v = vec![0xFF, 0xD8];
        seg(&mut v, 0xC0, &[8, 0]);
        cases.push(v);
        for (i, bad) in cases.iter().enumerate() {
            let mut input = bad.clone();
            input.extend_from_slice(&good);
            assert_eq!(run_all(&input, 4096), vec![g.clone(), f(&good, 8, 8)], "case {i}");
        }
    }

    #[test]
    fn dht_jpg_dac_are_not_sof() {
        assert!(is_sof(0xC0) && is_sof(0xC2) && is_sof(0xCF) && is_sof(0xC3));
        assert!(!is_sof(0xC4) && !is_sof(0xC8) && !is_sof(0xCC) && !is_sof(0xDA));
    }

    #[test]
    fn oversize_frame_then_good_frame() {
        let max = 1000;
        let good = jpeg(8, 8);
        // Entropy data far larger than the whole buffer (max + READ_CHUNK).
        let big_entropy: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let big = jpeg_with(4000, 3000, &big_entropy, None);
        let mut input = good.clone();
        input.extend_from_slice(&big);
        input.extend_from_slice(&good);
        let want = vec![f(&good, 8, 8), Ev::D(DropCause::Oversize), f(&good, 8, 8)];
        for chunk in [1, 7, 4096, 100_000, usize::MAX] {
            assert_eq!(run(&input, max, chunk), want, "chunk {chunk}");
        }

        // Oversize through big segments (the skip path), then truncated by a new SOI.
        let mut big = vec![0xFF, 0xD8];
        for _ in 0..4 {
            seg(&mut big, 0xE2, &vec![0xAB; 65_000]);
        }
        let mut input = big.clone();
        input.extend_from_slice(&good);
        for chunk in [1, 13, 65_536, usize::MAX] {
            assert_eq!(run(&input, max, chunk), vec![Ev::D(DropCause::Oversize), f(&good, 8, 8)]);
        }

        // A frame just over the limit, all in the buffer at once.
        let g2 = jpeg_with(8, 8, &vec![0u8; max], None);
        let mut input = g2.clone();
        input.extend_from_slice(&good);
        assert_eq!(run_all(&input, max), vec![Ev::D(DropCause::Oversize), f(&good, 8, 8)]);
        // And exactly at the limit it is delivered.
        let exact = jpeg_with(8, 8, &vec![0u8; max - (g2.len() - max)], None);
        assert_eq!(exact.len(), max);
        assert_eq!(run(&exact, max, 3), vec![f(&exact, 8, 8)]);
    }

    #[test]
    fn large_frame_one_byte_at_a_time_is_linear() {
        // Quadratic rescanning would take minutes here.
        let e: Vec<u8> = (0..300_000u32).map(|i| (i % 250) as u8).collect();
        let big = jpeg_with(100, 100, &e, None);
        let mut input = big.clone();
        input.extend_from_slice(&big);
        let t = std::time::Instant::now();
        assert_eq!(run(&input, 1 << 20, 1), vec![f(&big, 100, 100), f(&big, 100, 100)]);
        assert!(t.elapsed().as_secs() < 10);
    }

    #[test]
    fn eof_mid_frame_yields_nothing() {
        let a = jpeg(8, 8);
        for cut in 1..a.len() {
            let mut input = a.clone();
            input.extend_from_slice(&a[..cut]);
            let mut s = Splitter::new(4096);
            let ev = run_reader(&mut s, &mut Chunked { data: &input, at: 0, chunk: 5, first: None });
            assert_eq!(ev, vec![f(&a, 8, 8)], "cut {cut}");
            assert_eq!(s.in_frame(), cut >= 2, "cut {cut}");
        }
    }

    #[test]
    fn many_frames_keep_the_buffer_fixed() {
        let a = jpeg(64, 48);
        let mut input = Vec::new();
        for _ in 0..2000 {
            input.extend_from_slice(&a);
        }
        let mut s = Splitter::new(a.len());
        let cap = s.buf.len();
        let ev = run_reader(&mut s, &mut Chunked { data: &input, at: 0, chunk: 333, first: None });
        assert_eq!(ev.len(), 2000);
        assert!(ev.iter().all(|e| *e == f(&a, 64, 48)));
        assert_eq!(s.buf.len(), cap);
    }

    #[test]
    fn reset_forgets_partial_data() {
        let a = jpeg(8, 8);
        let mut s = Splitter::new(4096);
        let mut r = &a[..10];
        s.fill_from(&mut r).unwrap();
        assert_eq!(s.next(), Next::NeedMore);
        s.reset();
        assert!(!s.in_frame());
        let mut r = &a[..];
        assert_eq!(run_reader(&mut s, &mut r), vec![f(&a, 8, 8)]);
    }
}
