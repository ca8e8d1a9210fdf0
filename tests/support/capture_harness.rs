//! Shared by `tests/alloc.rs` and `examples/bench_capture.rs` (included with `#[path]`):
//! a counting global allocator that counts only on the watched (capture) thread, on the
//! encoder threads it starts (`enc<N>-<camera>`, `h264-<camera>`) and on the RTSP server's
//! thread (`rtsp`), and a helper that runs one real capture loop
//! on such a thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use camjobd::config::{CameraConfig, Config};
use camjobd::job::capture::{Action, CaptureLoop, Order, Orders};
use camjobd::shutdown::Stop;
use camjobd::status::Shared;

/// Counts allocations on threads that set [`WATCHED`]; allocates with the system allocator.
pub struct Counting;

thread_local! {
    /// Set on the capture thread only; allocations elsewhere (test harness, reader) are ignored.
    pub static WATCHED: Cell<bool> = const { Cell::new(false) };
}
/// Allocations (and reallocations) on watched threads.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes requested by those.
pub static BYTES: AtomicU64 = AtomicU64::new(0);
/// Kernel thread id of the capture thread, for its CPU time.
pub static CAPTURE_TID: AtomicU64 = AtomicU64::new(0);

/// True on an encoder thread or the RTSP server's: its kernel name is `enc<digit>...`,
/// `h264-...` or `rtsp` (read without allocating; a test thread named `encoding_...` is not
/// one).
fn on_encoder_thread() -> bool {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer passed.
    let ok = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0;
    ok && (name.starts_with(b"enc") && name[3].is_ascii_digit()
        || name.starts_with(b"h264-")
        || name.starts_with(b"rtsp\0"))
}

fn count(bytes: usize) {
    if WATCHED.with(|w| w.get()) || on_encoder_thread() {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(bytes as u64, Relaxed);
    }
}

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: p came from System.alloc with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

/// Runs the real capture loop for `camera` on a watched thread and orders job 1 to run.
pub fn start_capture(camera: CameraConfig, stop: &Stop) -> (Arc<Shared>, JoinHandle<()>) {
    let config = Config { cameras: vec![camera], ..Config::default() };
    let (tx, _rx) = crossbeam_channel::bounded(4);
    let shared = Arc::new(Shared::new(config, tx));
    let cam = Arc::clone(&shared.cameras[0]);
    let orders = Arc::new(Orders::default());
    let opener = camjobd::capture::opener(&cam.config);
    let lp = CaptureLoop::new(Arc::clone(&shared.events), cam, Arc::clone(&orders), opener, stop.clone());
    let t = std::thread::Builder::new()
        .name("capture-test".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            CAPTURE_TID.store(unsafe { libc::gettid() } as u64, Relaxed);
            WATCHED.with(|w| w.set(true));
            lp.run()
        })
        .unwrap();
    orders.post(Order { job_id: 1, attempt: 0, max_frames: None, action: Action::Run { not_before: None } });
    (shared, t)
}
