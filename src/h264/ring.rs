//! The encoded stream of one camera in fixed memory: a byte ring of access units (Annex B, as
//! the encoder wrote them) that the encoder thread appends to and every RTSP and WebRTC client
//! reads by number. Encode once, read by many: a client copies the access unit it is at into its
//! own buffer (under a short lock) and packetizes it there. A client that falls behind the ring
//! finds its access unit gone and starts again at the newest keyframe.

use std::sync::Mutex;

use tokio::sync::watch;

/// What is known of one access unit.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AuMeta {
    /// Its number (the first is 1).
    pub id: u64,
    /// Capture time on the monotonic clock, milliseconds ([`crate::clock::mono_ms`]).
    pub captured_mono_ms: u64,
    /// Capture time, Unix seconds.
    pub captured_at: f64,
    /// An IDR picture (with SPS and PPS before it): a decoder can start here.
    pub keyframe: bool,
    /// Its length in bytes.
    pub len: usize,
}

/// Why an access unit cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Not written yet.
    NotYet,
    /// Overwritten: the reader fell behind. Start again at this keyframe (0: none kept).
    Gone {
        /// The newest keyframe still in the ring.
        keyframe: u64,
    },
    /// The caller's buffer is smaller than the access unit.
    TooLarge,
}

struct Slot {
    meta: AuMeta,
    offset: usize,
}

struct Inner {
    data: Box<[u8]>,
    slots: Box<[Slot]>,
    /// The number the next access unit gets.
    next: u64,
    /// The oldest access unit still whole in `data`.
    oldest: u64,
    /// Where the next access unit's bytes go.
    head: usize,
    /// The newest keyframe written (0: none).
    keyframe: u64,
    /// The newest SPS and PPS, for SDP (fixed buffers: they are a few bytes).
    sps: heapless::Vec<u8, 256>,
    pps: heapless::Vec<u8, 256>,
}

/// One camera's ring of access units.
pub struct AuRing {
    inner: Mutex<Inner>,
    /// The newest access unit's number: readers wait on it.
    published: watch::Sender<u64>,
}

impl AuRing {
    /// A ring of `bytes` of data and at most `units` access units, allocated (and touched) now.
    pub fn new(bytes: usize, units: usize) -> AuRing {
        let units = units.max(2);
        let slots = (0..units).map(|_| Slot { meta: AuMeta::default(), offset: 0 }).collect();
        AuRing {
            inner: Mutex::new(Inner {
                // Written, not zeroed: zero pages would become resident one by one as access
                // units first reach them, a slow creep of RSS (docs/testing.md, "Soak").
                data: vec![0xA5u8; bytes.max(1)].into_boxed_slice(),
                slots,
                next: 1,
                oldest: 1,
                head: 0,
                keyframe: 0,
                sps: heapless::Vec::new(),
                pps: heapless::Vec::new(),
            }),
            published: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an access unit; returns its number, or `None` when it is larger than the whole
    /// ring (it is dropped; the caller counts it and asks the encoder for a keyframe).
    pub fn push(&self, au: &[u8], meta: AuMeta) -> Option<u64> {
        let id = self.store(au, meta)?;
        self.published.send_replace(id);
        Some(id)
    }

    fn store(&self, au: &[u8], mut meta: AuMeta) -> Option<u64> {
        let mut guard = self.lock();
        let g = &mut *guard;
        if au.len() > g.data.len() {
            return None;
        }
        // Contiguous: an access unit that does not fit before the end starts at 0.
        if g.head + au.len() > g.data.len() {
            g.head = 0;
        }
        let (start, end) = (g.head, g.head + au.len());
        // Every unit whose bytes this one overwrites goes, and with it every older one (the
        // units kept are always the numbers `oldest..next`). After a wrap the oldest unit may
        // lie past `end` while newer ones at the start of the buffer are overwritten: look at
        // them all, not only until the first that survives.
        let units = g.slots.len() as u64;
        let mut cut = g.oldest;
        for id in g.oldest..g.next {
            let s = &g.slots[(id % units) as usize];
            if s.offset < end && start < s.offset + s.meta.len {
                cut = id + 1;
            }
        }
        // And the one whose slot the new unit takes.
        g.oldest = cut.max((g.next + 1).saturating_sub(units));
        g.data[start..end].copy_from_slice(au);
        let id = g.next;
        meta.id = id;
        meta.len = au.len();
        g.slots[(id % units) as usize] = Slot { meta, offset: start };
        g.next += 1;
        g.head = end;
        if meta.keyframe {
            g.keyframe = id;
            for unit in super::nal::units(au) {
                match super::nal::nal_type(unit) {
                    super::nal::SPS => g.sps = heapless::Vec::from_slice(unit).unwrap_or_default(),
                    super::nal::PPS => g.pps = heapless::Vec::from_slice(unit).unwrap_or_default(),
                    _ => {}
                }
            }
        }
        Some(id)
    }

    /// Copies access unit `id` into `out` (cleared first; it must have the capacity, so that
    /// reading never allocates) and returns what is known of it.
    pub fn read(&self, id: u64, out: &mut Vec<u8>) -> Result<AuMeta, Missing> {
        let g = self.lock();
        if id >= g.next {
            return Err(Missing::NotYet);
        }
        if id < g.oldest {
            let keyframe = if g.keyframe >= g.oldest { g.keyframe } else { 0 };
            return Err(Missing::Gone { keyframe });
        }
        let s = &g.slots[(id % g.slots.len() as u64) as usize];
        if s.meta.len > out.capacity() {
            return Err(Missing::TooLarge);
        }
        out.clear();
        out.extend_from_slice(&g.data[s.offset..s.offset + s.meta.len]);
        Ok(s.meta)
    }

    /// The newest keyframe still in the ring (0: none).
    pub fn keyframe(&self) -> u64 {
        let g = self.lock();
        if g.keyframe >= g.oldest {
            g.keyframe
        } else {
            0
        }
    }

    /// The newest keyframe still in the ring and its capture time (monotonic ms).
    pub fn newest_keyframe(&self) -> Option<(u64, u64)> {
        let g = self.lock();
        (g.keyframe != 0 && g.keyframe >= g.oldest)
            .then(|| (g.keyframe, g.slots[(g.keyframe % g.slots.len() as u64) as usize].meta.captured_mono_ms))
    }

    /// The newest access unit's number (0: none yet).
    pub fn newest(&self) -> u64 {
        self.lock().next - 1
    }

    /// The newest SPS and PPS (empty until the first keyframe), into `sps` and `pps`.
    pub fn parameter_sets(&self, sps: &mut Vec<u8>, pps: &mut Vec<u8>) {
        let g = self.lock();
        sps.clear();
        sps.extend_from_slice(&g.sps);
        pps.clear();
        pps.extend_from_slice(&g.pps);
    }

    /// Wakes when an access unit is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(keyframe: bool, fill: u8, len: usize) -> (Vec<u8>, AuMeta) {
        let mut b = vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }];
        if keyframe {
            b = [&[0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0, 0, 0, 1, 0x68, 0xCE][..], &b].concat();
        }
        b.resize(len, fill);
        (b, AuMeta { keyframe, ..AuMeta::default() })
    }

    #[test]
    fn units_are_read_by_number_until_overwritten_then_the_newest_keyframe_is_named() {
        let ring = AuRing::new(1000, 8);
        let mut out = Vec::with_capacity(1000);
        assert_eq!(ring.read(1, &mut out), Err(Missing::NotYet));
        let (k, m) = au(true, 7, 300);
        assert_eq!(ring.push(&k, m), Some(1));
        let (p, m) = au(false, 8, 300);
        assert_eq!(ring.push(&p, m), Some(2));
        let meta = ring.read(1, &mut out).unwrap();
        assert_eq!((meta.id, meta.keyframe, meta.len), (1, true, 300));
        assert_eq!(out, k);
        let mut sps = Vec::new();
        let mut pps = Vec::new();
        ring.parameter_sets(&mut sps, &mut pps);
        assert_eq!((sps.as_slice(), pps.as_slice()), (&[0x67, 0x42, 0xC0, 0x1E][..], &[0x68, 0xCE][..]));
        // 300 + 300 + 300 fits; the fourth wraps to 0 and overwrites the first.
        ring.push(&p, m);
        assert_eq!(ring.read(1, &mut out).map(|m| m.id), Ok(1));
        assert_eq!(ring.push(&p, m), Some(4));
        assert_eq!(ring.read(1, &mut out), Err(Missing::Gone { keyframe: 0 }), "the only keyframe is gone");
        assert_eq!(ring.read(2, &mut out).map(|m| m.id), Ok(2));
        let (k2, mk) = au(true, 9, 200);
        assert_eq!(ring.push(&k2, mk), Some(5));
        assert_eq!(ring.keyframe(), 5);
        assert!(matches!(ring.read(2, &mut out), Err(Missing::Gone { keyframe: 5 })));
        // Larger than the ring: refused; larger than the reader's buffer: said so.
        assert_eq!(ring.push(&vec![0; 1001], m), None);
        let mut small = Vec::with_capacity(10);
        assert_eq!(ring.read(5, &mut small), Err(Missing::TooLarge));
        assert_eq!(ring.newest(), 5);
    }

    #[test]
    fn what_can_be_read_is_what_was_written_whatever_the_sizes() {
        // Units of random sizes, each filled with its own number: a unit read back must be
        // whole and its own (a wrap used to leave overwritten units readable).
        let ring = AuRing::new(1000, 16);
        let mut out = Vec::with_capacity(1000);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut lens = vec![0usize];
        for id in 1..=5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 700) as usize;
            let au = vec![id as u8; len];
            assert_eq!(ring.push(&au, AuMeta::default()), Some(id));
            lens.push(len);
            let mut readable = 0;
            for back in id.saturating_sub(20).max(1)..=id {
                if let Ok(m) = ring.read(back, &mut out) {
                    assert_eq!((m.id, m.len), (back, lens[back as usize]));
                    assert!(out.iter().all(|&b| b == back as u8), "unit {back} read back as another's bytes");
                    readable += 1;
                }
            }
            assert!(readable >= 1, "the newest unit is always readable");
        }
    }

    #[test]
    fn slots_bound_the_count_as_bytes_bound_the_size() {
        let ring = AuRing::new(1 << 20, 4);
        let mut out = Vec::with_capacity(100);
        for _ in 0..6 {
            let (p, m) = au(false, 1, 20);
            ring.push(&p, m);
        }
        assert!(matches!(ring.read(2, &mut out), Err(Missing::Gone { .. })));
        assert_eq!(ring.read(3, &mut out).map(|m| m.id), Ok(3));
        assert_eq!(ring.read(6, &mut out).map(|m| m.id), Ok(6));
        let cap = out.capacity();
        for id in 3..=6 {
            ring.read(id, &mut out).unwrap();
        }
        assert_eq!(out.capacity(), cap, "reading never grows the caller's buffer");
    }
}
