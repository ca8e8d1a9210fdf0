//! One camera's H.264 encoder thread (`h264-<camera>`) and what the others see of it.
//!
//! [`Video`] is the shared part: who watches ([`Video::watch`]), the ring of access units, the
//! counters. Capture looks at [`Video::wanted`] once per frame; while somebody watches it
//! claims the encoder's image (an atomic swap: never waits), fills it like a JPEG encoder's
//! and hands it over ([`Stage::submit`]); a camera that delivers JPEGs hands over a copy of
//! the JPEG instead ([`Stage::submit_jpeg`]), which the encoder thread decodes. A frame that finds the encoder busy is skipped for
//! H.264 and counted. The encoder thread encodes, appends to the ring, and is idle again.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{self as channel, Receiver, Sender};

use super::ring::{AuMeta, AuRing};
use super::{Encoder, Settings};
use crate::jpeg::Yuv;
use crate::shutdown::{Broke, Stop};

/// Counters of one camera's H.264, for `/api/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct VideoStats {
    /// Frames encoded.
    pub frames: AtomicU64,
    /// Of them, keyframes.
    pub keyframes: AtomicU64,
    /// Bytes of H.264 written.
    pub bytes: AtomicU64,
    /// Microseconds spent encoding, in all.
    pub encode_us: AtomicU64,
    /// Frames captured while somebody watched but not encoded: the encoder was busy.
    pub skipped: AtomicU64,
    /// Frames that could not be encoded or stored (an error, or larger than the ring).
    pub failed: AtomicU64,
}

/// One camera's H.264 as the other threads see it.
pub struct Video {
    /// The encoded access units.
    pub ring: AuRing,
    /// Counters.
    pub stats: VideoStats,
    /// The encoder in use and why it was chosen, set when capture starts it (and again if it
    /// falls back to software).
    pub encoder: Mutex<String>,
    /// Clients watching now; capture encodes only while this is above 0.
    watching: AtomicU32,
    /// When the last watch ended (monotonic ms; 0: never).
    left_ms: AtomicU64,
    /// A client joined: the next frame is a keyframe.
    want_keyframe: AtomicBool,
    /// When a keyframe was last asked for (monotonic ms; 0: never).
    forced_ms: AtomicU64,
    /// A keyframe was asked for inside the window after the last: made when it ends.
    deferred_keyframe: AtomicBool,
    /// The largest access unit a reader must be able to hold.
    pub max_au_bytes: usize,
}

/// The API's view of a camera's H.264 (`/api/status`, `/metrics`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VideoView {
    /// The encoder in use, and why it was chosen.
    pub encoder: String,
    /// RTSP and WebRTC clients watching now (the encoder runs only while this is above 0).
    pub watchers: u32,
    /// Frames encoded since start; of them keyframes.
    pub frames: u64,
    /// See `frames`.
    pub keyframes: u64,
    /// Bytes of H.264 written since start.
    pub bytes: u64,
    /// Mean encode time per frame, milliseconds (null before the first).
    pub encode_ms_mean: Option<f64>,
    /// Mean bitrate of what was encoded, kbit/s, at the camera's frame rate (null before).
    pub bitrate_kbps_mean: Option<f64>,
    /// Frames not encoded because the encoder was still busy with the one before.
    pub skipped: u64,
    /// Frames that could not be encoded or stored.
    pub failed: u64,
}

/// A client watching; dropping it ends the watch.
pub struct Watch(Arc<Video>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.left_ms.store(crate::clock::mono_ms(), Relaxed);
        self.0.watching.fetch_sub(1, Release);
    }
}

/// Keyframes asked for by clients come at most this often (the periodic ones aside).
pub const FORCED_KEYFRAME_MS: u64 = 1000;

/// The encoder goes on this long after the last client left: a client that comes straight
/// back (ffmpeg's retry over TCP after UDP, go2rtc reconnecting) finds the stream warm.
pub const LINGER_MS: u64 = 3000;

/// The H.264 ring of a camera: four seconds at the bitrate, or two keyframe intervals, whichever
/// is longer (a client that falls behind starts again at a keyframe still in it), 1 to 16 MiB.
pub fn ring_bytes(v: &crate::config::VideoConfig) -> usize {
    let secs = u64::from(v.keyframe_interval_s.max(2) * 2);
    let bytes = u64::from(v.bitrate_kbps) * 1000 / 8 * secs;
    (bytes as usize).clamp(1 << 20, 16 << 20)
}

/// The largest access unit kept, for a ring of `ring_bytes`: a quarter of it (a keyframe of a
/// busy scene).
pub fn max_au_bytes(ring_bytes: usize) -> usize {
    (ring_bytes / 4).max(64 << 10)
}

/// What one RTSP client's buffers take: an access unit and its packets (each packet adds its
/// RTP header, the interleave header and FU-A's two bytes).
pub fn client_bytes(max_au: usize) -> usize {
    max_au + packets_bytes(max_au)
}

/// The packets of an access unit of `max_au` bytes, interleaved.
pub fn packets_bytes(max_au: usize) -> usize {
    max_au + (max_au / (super::rtp::MAX_PAYLOAD - 2) + 8) * (super::rtp::HEADER + 4 + 2) + 256
}

/// OpenH264's working set per pixel, measured: RSS grew 4.5 MB at 640x480 and 10.2 MB at
/// 1280x720 when the first client made the encoder work (docs/rtsp.md).
pub const ENCODER_BYTES_PER_PIXEL: u64 = 15;

impl Video {
    /// The shared part for a ring of `ring_bytes`.
    pub fn new(ring_bytes: usize) -> Video {
        let max_au_bytes = max_au_bytes(ring_bytes);
        Video {
            ring: AuRing::new(ring_bytes, 256),
            stats: VideoStats::default(),
            encoder: Mutex::new("none yet".into()),
            watching: AtomicU32::new(0),
            left_ms: AtomicU64::new(0),
            want_keyframe: AtomicBool::new(false),
            forced_ms: AtomicU64::new(0),
            deferred_keyframe: AtomicBool::new(false),
            max_au_bytes,
        }
    }

    /// Starts a watch: capture encodes from the next frame on (an encoder that was idle
    /// starts with a keyframe).
    pub fn watch(self: &Arc<Self>) -> Watch {
        self.watching.fetch_add(1, Release);
        Watch(Arc::clone(self))
    }

    /// The next frame encoded is a keyframe (a client starts, or fell behind); at most one
    /// forced every [`FORCED_KEYFRAME_MS`], so that clients that PLAY again and again cannot
    /// make every frame a keyframe (four times the bitrate for everyone). A request inside
    /// that window is not lost: it is served when the window ends (a second viewer that
    /// connects just after the first waits at most that long, not a whole keyframe interval).
    pub fn request_keyframe(&self) {
        let now = crate::clock::mono_ms().max(1);
        let last = self.forced_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < FORCED_KEYFRAME_MS {
            self.deferred_keyframe.store(true, Release);
            return;
        }
        if self.forced_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            self.want_keyframe.store(true, Release);
        }
    }

    /// Whether the encoder makes a keyframe now: asked for, or asked for inside the last
    /// window, which has ended.
    fn take_keyframe_request(&self) -> bool {
        if self.want_keyframe.swap(false, Acquire) {
            return true;
        }
        if !self.deferred_keyframe.load(Acquire) {
            return false;
        }
        let now = crate::clock::mono_ms().max(1);
        if now.saturating_sub(self.forced_ms.load(Relaxed)) < FORCED_KEYFRAME_MS {
            return false;
        }
        self.forced_ms.store(now, Relaxed);
        self.deferred_keyframe.swap(false, AcqRel)
    }

    /// Somebody watches, or left less than [`LINGER_MS`] ago (capture's per-frame question).
    pub fn wanted(&self) -> bool {
        if self.watching.load(Acquire) > 0 {
            return true;
        }
        let left = self.left_ms.load(Relaxed);
        left != 0 && crate::clock::mono_ms().saturating_sub(left) < LINGER_MS
    }

    /// Clients watching now.
    pub fn watchers(&self) -> u32 {
        self.watching.load(Relaxed)
    }

    /// The counters, for the API; `fps` turns bytes per frame into a bitrate.
    pub fn view(&self, fps: u32) -> VideoView {
        let st = &self.stats;
        let frames = st.frames.load(Relaxed);
        let bytes = st.bytes.load(Relaxed);
        let per_frame = |v: f64| (frames > 0).then(|| v / frames as f64);
        VideoView {
            encoder: self.encoder.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            watchers: self.watchers(),
            frames,
            keyframes: st.keyframes.load(Relaxed),
            bytes,
            encode_ms_mean: per_frame(st.encode_us.load(Relaxed) as f64 / 1000.0),
            bitrate_kbps_mean: per_frame(bytes as f64 * 8.0 * f64::from(fps) / 1000.0),
            skipped: st.skipped.load(Relaxed),
            failed: st.failed.load(Relaxed),
        }
    }
}

/// What the encoder thread is handed.
struct Job {
    mono_ms: u64,
    captured_at: f64,
    /// The frame is a JPEG in this JPEG slot, of this many bytes, to decode first (else the
    /// image holds the frame).
    jpeg: Option<(usize, usize)>,
}

/// JPEG slots of a camera that delivers JPEGs: two, because pipe sources hand frames over in
/// pairs (one read, two frames) and the second would find a single slot busy.
pub const JPEG_SLOTS: usize = 2;

/// One JPEG handed to the encoder thread.
struct JpegSlot {
    busy: AtomicBool,
    buffer: Mutex<Vec<u8>>,
}

/// Makes an encoder, on the encoder thread.
pub type Make = Box<dyn FnOnce() -> Result<Box<dyn Encoder>, super::EncodeError> + Send>;

/// Encode errors in a row after which an encoder with a fallback is replaced by it.
pub const FAILURES_BEFORE_FALLBACK: u32 = 3;

/// Encode errors in a row after which an encoder without one fails the service.
pub const FAILURES_BEFORE_GIVING_UP: u32 = 30;

/// The encoder thread as capture sees it.
pub struct Stage {
    video: Arc<Video>,
    busy: Arc<AtomicBool>,
    image: Arc<Mutex<Yuv>>,
    /// A JPEG camera's frames, copied for the encoder thread to decode (empty for a raw one).
    jpegs: Arc<[JpegSlot; JPEG_SLOTS]>,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// The encoder's image, claimed for one frame; dropping it without [`Stage::submit`] gives it
/// back.
pub struct Claim<'a> {
    busy: &'a AtomicBool,
    image: Option<MutexGuard<'a, Yuv>>,
}

impl Claim<'_> {
    /// The image to fill.
    pub fn image(&mut self) -> &mut Yuv {
        self.image.as_mut().expect("present until submitted")
    }
}

/// The JPEG buffer, claimed for one frame; dropping it without [`Stage::submit_jpeg`] gives
/// it back.
pub struct JpegClaim<'a> {
    slot: usize,
    busy: &'a AtomicBool,
    buffer: Option<MutexGuard<'a, Vec<u8>>>,
}

impl JpegClaim<'_> {
    /// The buffer to write the JPEG into (the camera's `max_frame_bytes`).
    pub fn buffer(&mut self) -> &mut [u8] {
        self.buffer.as_mut().expect("present until submitted")
    }
}

impl Drop for JpegClaim<'_> {
    fn drop(&mut self) {
        if self.buffer.take().is_some() {
            self.busy.store(false, Release);
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.image.take().is_some() {
            self.busy.store(false, Release);
        }
    }
}

impl Stage {
    /// Starts the `h264-<camera>` thread with the encoder `make` makes (on it) for
    /// `width x height`; `fallback` replaces it if it cannot start or fails
    /// [`FAILURES_BEFORE_FALLBACK`] frames in a row; `jpeg_bytes`: the largest JPEG of a
    /// camera that delivers JPEGs (0: raw frames only).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        camera: &str,
        video: Arc<Video>,
        make: Make,
        fallback: Option<Make>,
        settings: &Settings,
        (width, height): (usize, usize),
        jpeg_bytes: usize,
        stop: &Stop,
    ) -> std::io::Result<Stage> {
        let (jobs, rx) = channel::bounded(JPEG_SLOTS);
        let busy = Arc::new(AtomicBool::new(false));
        let image = Arc::new(Mutex::new(Yuv::new(width, height)));
        // Written, so that their pages are resident from the start.
        let jpegs = Arc::new(std::array::from_fn(|_| JpegSlot {
            busy: AtomicBool::new(false),
            buffer: Mutex::new(vec![0xA5u8; jpeg_bytes]),
        }));
        let run = Run {
            video: Arc::clone(&video),
            busy: Arc::clone(&busy),
            image: Arc::clone(&image),
            jpegs: Arc::clone(&jpegs),
            decoder: None,
            row: Vec::new(),
            last_encode: None,
            last_au_ms: 0,
            jobs: rx,
            stop: stop.clone(),
            au: committed(video.max_au_bytes),
            bitrate_kbps: settings.bitrate_kbps,
            fallback,
            failed_in_a_row: 0,
        };
        let name = format!("h264-{camera}");
        let thread = std::thread::Builder::new().name(name).spawn(move || run.run(make))?;
        Ok(Stage { video, busy, image, jpegs, jobs: Some(jobs), thread: Some(thread) })
    }

    /// The encoder's image, if it is idle and somebody watches.
    pub fn claim(&self) -> Option<Claim<'_>> {
        if !self.video.wanted() {
            return None;
        }
        if self.busy.swap(true, Acquire) {
            self.video.stats.skipped.fetch_add(1, Relaxed);
            return None;
        }
        let image = self.image.lock().unwrap_or_else(|e| e.into_inner());
        Some(Claim { busy: &self.busy, image: Some(image) })
    }

    /// Hands the filled image over, captured at `mono_ms` / `captured_at`.
    pub fn submit(&self, mut claim: Claim<'_>, mono_ms: u64, captured_at: f64) {
        drop(claim.image.take());
        self.send(Job { mono_ms, captured_at, jpeg: None }, &self.busy);
    }

    /// A free JPEG slot, if somebody watches and the camera delivers JPEGs.
    pub fn claim_jpeg(&self) -> Option<JpegClaim<'_>> {
        if !self.video.wanted() || self.jpegs[0].buffer.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return None;
        }
        let Some(slot) = self.jpegs.iter().position(|j| !j.busy.swap(true, Acquire)) else {
            self.video.stats.skipped.fetch_add(1, Relaxed);
            return None;
        };
        let j = &self.jpegs[slot];
        let buffer = j.buffer.lock().unwrap_or_else(|e| e.into_inner());
        Some(JpegClaim { slot, busy: &j.busy, buffer: Some(buffer) })
    }

    /// Hands over the JPEG of `len` bytes written into the claimed buffer: the encoder thread
    /// decodes it, then encodes.
    pub fn submit_jpeg(&self, mut claim: JpegClaim<'_>, len: usize, mono_ms: u64, captured_at: f64) {
        drop(claim.buffer.take());
        self.send(Job { mono_ms, captured_at, jpeg: Some((claim.slot, len)) }, claim.busy);
    }

    fn send(&self, job: Job, busy: &AtomicBool) {
        let sent = self.jobs.as_ref().is_some_and(|j| j.try_send(job).is_ok());
        if !sent {
            // The thread is gone (it failed the service on its way out): give the buffer back.
            busy.store(false, Release);
        }
    }

    /// The shared part.
    pub fn video(&self) -> &Arc<Video> {
        &self.video
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // Closing the job channel ends the thread even when the stop token is not set.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An empty buffer of `capacity` whose pages are resident now (written once), so that RSS
/// does not creep up as frames first fill it.
pub fn committed(capacity: usize) -> Vec<u8> {
    let mut v = vec![0xA5u8; capacity];
    v.clear();
    v
}

/// The encoder thread's state.
struct Run {
    video: Arc<Video>,
    busy: Arc<AtomicBool>,
    image: Arc<Mutex<Yuv>>,
    jpegs: Arc<[JpegSlot; JPEG_SLOTS]>,
    /// When the last frame was encoded (`None`: never).
    last_encode: Option<Instant>,
    /// The capture time given to the last access unit (ms), which the RTP timestamps follow.
    last_au_ms: u64,
    /// For a JPEG camera: made on the first JPEG, with its row buffer.
    decoder: Option<crate::jpeg::Decoder>,
    row: Vec<u8>,
    jobs: Receiver<Job>,
    stop: Stop,
    /// One access unit, never grown.
    au: Vec<u8>,
    bitrate_kbps: u32,
    /// Software, when what auto chose may fail.
    fallback: Option<Make>,
    /// Frames the encoder failed in a row.
    failed_in_a_row: u32,
}

impl Run {
    fn run(mut self, make: Make) {
        let name = std::thread::current().name().unwrap_or("h264").to_string();
        let mut encoder = match make().or_else(|e| self.fall_back(&name, &e.to_string())) {
            Ok(e) => e,
            Err(e) => {
                log::error!("{name}: {e}");
                self.stop.fail(&name, Broke::NotStarted);
                return;
            }
        };
        let choice = self.video.encoder.lock().unwrap_or_else(|e| e.into_inner()).clone();
        log::info!("{name}: H.264 by {choice}, at {} kbit/s while an RTSP or WebRTC client watches", self.bitrate_kbps);
        // Capture owns the sending side: the stage dropped (capture ending, at stop or not)
        // closes the channel and ends this loop, without a timer.
        while let Ok(job) = self.jobs.recv() {
            self.encode(&mut *encoder, &job);
            if self.failed_in_a_row >= FAILURES_BEFORE_FALLBACK && self.fallback.is_some() {
                let why = format!("{} frames in a row failed", self.failed_in_a_row);
                match self.fall_back(&name, &why) {
                    Ok(e) => encoder = e,
                    Err(e) => {
                        log::error!("{name}: {e}");
                        self.stop.fail(&name, Broke::NotStarted);
                        return;
                    }
                }
                self.failed_in_a_row = 0;
            }
            if self.failed_in_a_row >= FAILURES_BEFORE_GIVING_UP {
                // Nothing to fall back to (the encoder was named in the config): a stream that
                // never comes must not look healthy. The service fails (exit 1), and its log
                // says why; systemd starts it again.
                log::error!(
                    "{name}: {} failed {} frames in a row; stopping the service",
                    self.video.encoder.lock().unwrap_or_else(|e| e.into_inner()),
                    self.failed_in_a_row
                );
                self.stop.fail(&name, Broke::Ended);
                return;
            }
        }
    }

    /// Replaces a failed encoder by the fallback, once; says so in the log and the API.
    fn fall_back(&mut self, name: &str, why: &str) -> Result<Box<dyn Encoder>, super::EncodeError> {
        let Some(make) = self.fallback.take() else {
            return Err(super::EncodeError::Start(why.to_string()));
        };
        let mut choice = self.video.encoder.lock().unwrap_or_else(|e| e.into_inner());
        log::warn!("{name}: {choice} failed ({why}); H.264 by software (OpenH264) from now on");
        *choice = format!("software (OpenH264), after {} failed: {why}", choice.split(" (").next().unwrap_or("it"));
        drop(choice);
        // The next frame starts a fresh stream for the clients.
        self.video.want_keyframe.store(true, Release);
        make()
    }

    fn encode(&mut self, encoder: &mut dyn Encoder, job: &Job) {
        // After a rest the encoder's reference pictures are stale: start again on a keyframe.
        let rested = self.last_encode.is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        self.last_encode = Some(Instant::now());
        let force = self.video.take_keyframe_request() || rested;
        let t0 = Instant::now();
        let result = {
            let mut image = self.image.lock().unwrap_or_else(|e| e.into_inner());
            match job.jpeg {
                Some((slot, len)) => {
                    let jpeg = self.jpegs[slot].buffer.lock().unwrap_or_else(|e| e.into_inner());
                    let decoder = self.decoder.get_or_insert_with(crate::jpeg::Decoder::new);
                    match decoder.decode_yuv422(&jpeg[..len.min(jpeg.len())], &mut image, &mut self.row) {
                        Ok(_) => encoder.encode(&image, job.mono_ms, force, &mut self.au),
                        Err(e) => Err(super::EncodeError::Input(format!("its JPEG does not decode: {e}"))),
                    }
                }
                None => encoder.encode(&image, job.mono_ms, force, &mut self.au),
            }
        };
        let stats = &self.video.stats;
        stats.encode_us.fetch_add(t0.elapsed().as_micros() as u64, Relaxed);
        let at = strictly_after(&mut self.last_au_ms, job.mono_ms);
        let meta = AuMeta { captured_mono_ms: at, captured_at: job.captured_at, ..AuMeta::default() };
        match result {
            Ok(e) if self.video.ring.push(&self.au, AuMeta { keyframe: e.keyframe, ..meta }).is_some() => {
                self.failed_in_a_row = 0;
                stats.frames.fetch_add(1, Relaxed);
                stats.keyframes.fetch_add(u64::from(e.keyframe), Relaxed);
                stats.bytes.fetch_add(e.bytes as u64, Relaxed);
            }
            failed => {
                // Lost: the clients would decode garbage until the next keyframe, so ask for one.
                stats.failed.fetch_add(1, Relaxed);
                self.video.want_keyframe.store(true, Release);
                match &failed {
                    // Too large for the ring is the scene's doing, a JPEG that does not decode
                    // the camera's: neither is the encoder's.
                    Err(super::EncodeError::TooLarge(_) | super::EncodeError::Input(_)) | Ok(_) => {}
                    Err(_) => self.failed_in_a_row += 1,
                }
                if let Err(e) = failed {
                    log::debug!("h264: {e}");
                }
            }
        }
        match job.jpeg {
            Some((slot, _)) => self.jpegs[slot].busy.store(false, Release),
            None => self.busy.store(false, Release),
        }
    }
}

/// `mono_ms`, or 1 ms after the last access unit's when it is not later: two frames a pipe
/// delivers together are stamped within the same millisecond, and equal RTP timestamps on
/// successive frames are equal decode times to a client (ffmpeg: "non monotonically increasing
/// dts").
fn strictly_after(last: &mut u64, mono_ms: u64) -> u64 {
    let at = mono_ms.max(*last + 1);
    *last = at;
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::{EncodeError, Encoded};

    /// An encoder that fails every frame, or writes a fixed access unit.
    struct Fake {
        fails: bool,
    }

    impl Encoder for Fake {
        fn encode(&mut self, _: &Yuv, _: u64, _: bool, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
            if self.fails {
                return Err(EncodeError::Frame("the device timed out".into()));
            }
            out.clear();
            out.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88]);
            Ok(Encoded { keyframe: true, bytes: out.len() })
        }
        fn name(&self) -> &'static str {
            "fake"
        }
    }

    fn fake(fails: bool) -> Make {
        Box::new(move || Ok(Box::new(Fake { fails }) as Box<dyn Encoder>))
    }

    /// Feeds `n` frames through `stage`, each once the encoder is idle again.
    fn feed(stage: &Stage, n: u64) {
        for i in 0..n {
            let deadline = Instant::now() + Duration::from_secs(5);
            let claim = loop {
                if let Some(c) = stage.claim() {
                    break c;
                }
                assert!(Instant::now() < deadline, "the encoder stayed busy");
                std::thread::yield_now();
            };
            stage.submit(claim, 1 + i * 33, 0.0);
        }
        // The last frame is done once the image can be claimed again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while stage.claim().is_none() {
            assert!(Instant::now() < deadline, "the encoder stayed busy");
            std::thread::yield_now();
        }
    }

    fn start(make: Make, fallback: Option<Make>, stop: &Stop) -> Stage {
        let video = Arc::new(Video::new(1 << 20));
        *video.encoder.lock().unwrap() = "V4L2 M2M encoder /dev/video11 (fake), chosen by auto".into();
        let settings =
            Settings { bitrate_kbps: 1000, keyframe_interval_s: 2, profile: crate::config::Profile::Baseline, fps: 30 };
        Stage::start("t", video, make, fallback, &settings, (64, 48), 0, stop).unwrap()
    }

    #[test]
    fn an_encoder_that_fails_frames_is_replaced_by_the_fallback_and_says_so() {
        let stop = Stop::new();
        let stage = start(fake(true), Some(fake(false)), &stop);
        let _watch = stage.video().watch();
        feed(&stage, FAILURES_BEFORE_FALLBACK as u64 + 4);
        let v = stage.video().view(30);
        assert_eq!(v.failed, u64::from(FAILURES_BEFORE_FALLBACK));
        assert_eq!(v.frames, 4, "{v:?}");
        assert!(
            v.encoder.starts_with(
                "software (OpenH264), after V4L2 M2M encoder /dev/video11 failed: 3 frames in a row failed"
            ),
            "{}",
            v.encoder
        );
        assert!(!stop.is_set());
    }

    #[test]
    fn jpegs_that_do_not_decode_are_the_cameras_fault_not_the_encoders() {
        let stop = Stop::new();
        let video = Arc::new(Video::new(1 << 20));
        *video.encoder.lock().unwrap() = "V4L2 M2M encoder /dev/video11 (fake), chosen by auto".into();
        let settings =
            Settings { bitrate_kbps: 1000, keyframe_interval_s: 2, profile: crate::config::Profile::Baseline, fps: 30 };
        let stage = Stage::start("t", video, fake(false), Some(fake(false)), &settings, (64, 48), 1024, &stop).unwrap();
        let _watch = stage.video().watch();
        for i in 0..2 * u64::from(FAILURES_BEFORE_FALLBACK) {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut c = loop {
                if let Some(c) = stage.claim_jpeg() {
                    break c;
                }
                assert!(Instant::now() < deadline, "the encoder stayed busy");
                std::thread::yield_now();
            };
            c.buffer()[..8].copy_from_slice(b"not jpeg");
            stage.submit_jpeg(c, 8, 1 + i * 33, 0.0);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while stage.video().view(30).failed < 2 * u64::from(FAILURES_BEFORE_FALLBACK) {
            assert!(Instant::now() < deadline, "{:?}", stage.video().view(30));
            std::thread::yield_now();
        }
        // Counted as failed frames, but the encoder stays: it did nothing wrong.
        assert!(stage.video().view(30).encoder.starts_with("V4L2 M2M"), "{}", stage.video().view(30).encoder);
    }

    #[test]
    fn an_encoder_without_a_fallback_that_keeps_failing_fails_the_service() {
        let stop = Stop::new();
        let stage = start(fake(true), None, &stop);
        let _watch = stage.video().watch();
        feed(&stage, u64::from(FAILURES_BEFORE_GIVING_UP) - 1);
        assert!(!stop.is_set(), "failed before {FAILURES_BEFORE_GIVING_UP} frames");
        // The last one: the thread ends and the service fails; the image is never free again.
        let deadline = Instant::now() + Duration::from_secs(5);
        let claim = loop {
            if let Some(c) = stage.claim() {
                break c;
            }
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        };
        stage.submit(claim, 99_999, 0.0);
        while !stop.is_set() {
            assert!(Instant::now() < deadline, "the service did not fail");
            std::thread::yield_now();
        }
        assert_eq!(stage.video().view(30).failed, u64::from(FAILURES_BEFORE_GIVING_UP));
    }

    #[test]
    fn an_encoder_that_cannot_start_is_replaced_or_fails_the_service() {
        let stop = Stop::new();
        let cannot: Make = Box::new(|| Err(EncodeError::Start("/dev/video11: Permission denied".into())));
        let stage = start(cannot, Some(fake(false)), &stop);
        let _watch = stage.video().watch();
        feed(&stage, 2);
        assert_eq!(stage.video().view(30).frames, 2);
        assert!(stage.video().view(30).encoder.contains("Permission denied"));
        drop(stage);
        assert!(!stop.is_set());
        // Without a fallback (asked for by name) the failure is the service's.
        let cannot: Make = Box::new(|| Err(EncodeError::Start("/dev/video11: Permission denied".into())));
        let stage = start(cannot, None, &stop);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stop.is_set() {
            assert!(Instant::now() < deadline, "the service did not fail");
            std::thread::yield_now();
        }
        drop(stage);
    }

    #[test]
    fn access_unit_times_strictly_increase() {
        let mut last = 0;
        let times: Vec<u64> = [100, 100, 100, 133, 120, 166].iter().map(|&t| strictly_after(&mut last, t)).collect();
        assert_eq!(times, [100, 101, 102, 133, 134, 166]);
    }
}
