//! Pipe source: a child process whose stdout is an MJPEG byte stream (or raw I420 frames of a
//! known size, [`PipeOpener::with_i420`]).
//!
//! [`PipeOpener`] spawns the configured argv (no shell) in its own process group. The source it
//! returns owns the child, the read ends of its stdout and stderr, a [`Splitter`] holding the
//! only frame staging buffer, and a fixed 512-byte tail of stderr used to explain failures.
//! Both pipes are non-blocking and waited on with `poll(2)`, so a read never takes longer than
//! the caller's `wait`. After open, reading frames allocates nothing; only error paths do.
//!
//! The child exiting or closing its stdout is fatal: the error names the command, its exit
//! status and its last line of stderr. Dropping the source signals the whole process group
//! (SIGTERM, a short grace, then SIGKILL) and reaps the child, so a `sh -c` loop and its
//! children die together and no zombie is left behind.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::capture::i420::I420Frames;
use crate::capture::mjpeg::{Next, Splitter};
use crate::capture::{Delivers, Dest, DropCause, Opener, Read, Source, SourceError};
use crate::config::PipeConfig;

/// After stdout hits EOF, how long to wait for the child to exit before saying it merely
/// closed its stdout (the exit and the EOF are not observed atomically).
const EXIT_GRACE: Duration = Duration::from_millis(250);
/// How long a dropped child gets to exit on SIGTERM before its group gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(100);
/// How long drop waits for the killed child before leaving the reaping to a helper thread
/// (only a child stuck in the kernel, e.g. in a wedged camera driver, takes that long).
const REAP_WAIT: Duration = Duration::from_secs(2);
/// Longest single poll; between slices a quiet child is checked for having exited.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Bytes of stderr kept for error messages.
const STDERR_TAIL: usize = 512;
/// Bounds the stderr reads done in one go, so a child spamming stderr cannot hold a read.
const STDERR_READS: usize = 8;

/// Turns what a known command wrote to stderr before failing into a reason that says what to
/// do (`None`: nothing recognised, the last line is quoted as is).
pub type Explain = fn(&str) -> Option<&'static str>;

/// Opens a [`Source`] that runs a command and splits its stdout into JPEG frames.
pub struct PipeOpener {
    config: PipeConfig,
    max_frame_bytes: usize,
    explain: Option<Explain>,
    label: Option<String>,
    /// Raw I420 frames of this size instead of MJPEG.
    i420: Option<(usize, usize)>,
}

impl PipeOpener {
    /// An opener for `config.command`, delivering frames of at most `max_frame_bytes`.
    pub fn new(config: PipeConfig, max_frame_bytes: usize) -> Self {
        PipeOpener { config, max_frame_bytes, explain: None, label: None, i420: None }
    }

    /// The command writes raw I420 frames of `width x height` (both even), delivered as raw
    /// pixels ([`Delivers::Yuv`]).
    pub fn with_i420(mut self, width: usize, height: usize) -> Self {
        self.i420 = Some((width, height));
        self
    }

    /// Failures are explained by `explain` from the command's stderr, and messages name the
    /// command as `label` (`rpicam-vid`) rather than `pipe command "<path>"`.
    pub fn with_explainer(mut self, explain: Explain, label: String) -> Self {
        self.explain = Some(explain);
        self.label = Some(label);
        self
    }
}

impl Opener for PipeOpener {
    fn open(&mut self, job_id: u64, _saved: &crate::controls::Saved) -> Result<Box<dyn Source>, SourceError> {
        let argv = &self.config.command;
        let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
            return Err(SourceError::fatal("pipe command is empty; set cameras[N].source.command to an argv array"));
        };
        let mut cmd = Command::new(program);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // systemd's notify socket is camjobd's to use, not the camera command's.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            // Own process group: one kill(-pgid) reaches the command and everything it starts.
            .process_group(0);
        // camjobd's own malloc settings (one arena, no caches) would slow a multi-threaded
        // camera program such as rpicam-vid; settings the user gave are passed on.
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v == crate::sys::MALLOC_TUNABLES) {
            cmd.env_remove("GLIBC_TUNABLES");
        }
        // If camjobd dies without dropping the source (SIGKILL, a second Ctrl-C, the OOM
        // killer), the kernel kills the command, so it cannot keep the camera busy for the
        // next start. The signal follows the spawning thread, which is the capture thread:
        // it lives as long as the camera does.
        let parent = rustix::process::getpid();
        // SAFETY: the closure runs in the forked child before exec and makes only the prctl
        // and getppid system calls, which are async-signal-safe; it allocates nothing (the
        // error is a constant) and touches no locks.
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
                // The parent may have died before prctl took effect.
                if rustix::process::getppid() != Some(parent) {
                    return Err(io::Error::from(io::ErrorKind::BrokenPipe));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| spawn_error(program, &e))?;
        let pid = rustix::process::Pid::from_child(&child);
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("stdout and stderr were configured as pipes");
        };
        // Built before anything else can fail, so that every later error kills the child.
        let source = PipeSource {
            child: Some(child),
            pid,
            stdout,
            stderr: Some(stderr),
            framing: match self.i420 {
                Some((w, h)) => Framing::I420(I420Frames::new(w, h)),
                None => Framing::Mjpeg(Splitter::new(self.max_frame_bytes)),
            },
            tail: StderrTail::new(),
            argv0: program.clone(),
            stdout_eof_at: None,
            failed: None,
            explain: self.explain,
            label: self.label.clone().unwrap_or_else(|| format!("pipe command \"{program}\"")),
        };
        // Non-blocking, so that a read after `poll` can never block.
        rustix::io::ioctl_fionbio(&source.stdout, true).map_err(|e| source.io_error("stdout", &e.into()))?;
        grow_pipe(&source.stdout);
        if let Some(err) = &source.stderr {
            rustix::io::ioctl_fionbio(err, true).map_err(|e| source.io_error("stderr", &e.into()))?;
        }
        log::info!("job {job_id}: started pipe command {argv:?} (pid {pid})");
        Ok(Box::new(source))
    }
}

/// Pipe capacity we ask for: several frames, so one wake-up and one read usually carry a
/// whole frame or more (the default 64 KiB holds less than one 100 KB frame).
const PIPE_BYTES: usize = 1 << 20;

/// Enlarges the pipe, best effort: the kernel caps it at `/proc/sys/fs/pipe-max-size` for
/// unprivileged users, and a smaller pipe only costs more wake-ups.
fn grow_pipe(fd: impl std::os::fd::AsFd) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(fd, PIPE_BYTES) {
        log::debug!("pipe capacity stays at the default: {e}");
    }
}

/// A fatal error that says what to fix.
fn spawn_error(program: &str, e: &io::Error) -> SourceError {
    let why = match e.kind() {
        io::ErrorKind::NotFound => {
            "not found; install it or give the full path in cameras[N].source.command".to_string()
        }
        io::ErrorKind::PermissionDenied => "permission denied; check that it is an executable file".to_string(),
        _ => e.to_string(),
    };
    SourceError::fatal(format!("cannot start pipe command \"{program}\": {why}"))
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Status(i32),
    Signal(i32),
}

/// The last [`STDERR_TAIL`] bytes the child wrote to stderr, in a fixed ring.
struct StderrTail {
    ring: heapless::HistoryBuf<u8, STDERR_TAIL>,
}

impl StderrTail {
    fn new() -> Self {
        StderrTail { ring: heapless::HistoryBuf::new() }
    }

    fn push(&mut self, data: &[u8]) {
        self.ring.extend_from_slice(data);
    }

    /// Everything held, oldest first (allocates; error path only).
    fn text(&self) -> String {
        let bytes: Vec<u8> = self.ring.oldest_ordered().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last non-empty line, for an error message (allocates; error path only).
    fn last_line(&self) -> String {
        let text = self.text();
        // Progress output often uses '\r'; either ends a line.
        let line = text.split(['\n', '\r']).map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
        line.chars().filter(|c| !c.is_control()).collect()
    }
}

/// A running pipe command. See the module docs.
struct PipeSource {
    /// `None` only once drop has handed it on.
    child: Option<Child>,
    /// The child's pid, which is also its process group id (`process_group(0)`).
    pid: rustix::process::Pid,
    stdout: ChildStdout,
    /// `None` after stderr reached EOF.
    stderr: Option<ChildStderr>,
    framing: Framing,
    tail: StderrTail,
    argv0: String,
    /// When stdout reached EOF.
    stdout_eof_at: Option<Instant>,
    /// Sticky: once fatal, every read answers the same error.
    failed: Option<SourceError>,
    explain: Option<Explain>,
    /// How messages name the command.
    label: String,
}

/// How the command's stdout is cut into frames.
enum Framing {
    /// JPEGs, SOI to EOI.
    Mjpeg(Splitter),
    /// Raw I420 frames of one size.
    I420(I420Frames),
}

impl Framing {
    /// The next whole frame put into `dst`, if one is staged (`None`: read more).
    fn next(&mut self, dst: &mut Option<Dest<'_>>) -> Option<Read> {
        match self {
            Framing::Mjpeg(splitter) => match splitter.next() {
                Next::Frame { data, width, height } => {
                    let (width, height) = (u32::from(width), u32::from(height));
                    Some(match dst.take() {
                        None | Some(Dest::Discard | Dest::Yuv(_)) => Read::Consumed,
                        Some(Dest::Jpeg(d)) if d.len() < data.len() => Read::Dropped(DropCause::Oversize),
                        Some(Dest::Jpeg(d)) => {
                            d[..data.len()].copy_from_slice(data);
                            Read::Frame { len: data.len(), width, height }
                        }
                    })
                }
                Next::Dropped(cause) => Some(Read::Dropped(cause)),
                Next::NeedMore => None,
            },
            Framing::I420(frames) if frames.ready() => Some(match dst.take() {
                Some(Dest::Yuv(target)) => match target.image() {
                    Some(img) => {
                        frames.take(Some(img));
                        Read::Raw
                    }
                    None => {
                        frames.take(None);
                        Read::Consumed
                    }
                },
                _ => {
                    frames.take(None);
                    Read::Consumed
                }
            }),
            Framing::I420(_) => None,
        }
    }

    fn fill_from<R: io::Read>(&mut self, r: &mut R) -> io::Result<usize> {
        match self {
            Framing::Mjpeg(s) => s.fill_from(r),
            Framing::I420(f) => f.fill_from(r),
        }
    }
}

impl Source for PipeSource {
    fn delivers(&self) -> Delivers {
        match self.framing {
            Framing::Mjpeg(_) => Delivers::Jpeg,
            Framing::I420(_) => Delivers::Yuv,
        }
    }

    fn read(&mut self, dst: Dest<'_>, wait: Duration) -> Result<Read, SourceError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let start = Instant::now();
        let deadline = start.checked_add(wait).unwrap_or(start + Duration::from_secs(86_400));
        // Look at the pipes at least once even when `wait` is zero.
        let mut looked = false;
        let mut dst = Some(dst);
        loop {
            if let Some(read) = self.framing.next(&mut dst) {
                return Ok(read);
            }
            let now = Instant::now();
            if looked && now >= deadline {
                return Ok(Read::Timeout);
            }
            looked = true;
            let remaining = deadline.saturating_duration_since(now);

            if let Some(eof_at) = self.stdout_eof_at {
                // Buffered frames are used up and no more can come.
                self.drain_stderr();
                if let Some(exit) = self.exit_status() {
                    return Err(self.fail(Some(exit)));
                }
                if eof_at.elapsed() >= EXIT_GRACE {
                    return Err(self.fail(None));
                }
                std::thread::sleep(remaining.min(Duration::from_millis(5)));
                continue;
            }

            // Sliced, so that a child that exits while something else holds its stdout open
            // is noticed promptly even under a long `wait`.
            let (out_ready, err_ready) = self.poll(remaining.min(POLL_SLICE))?;
            if err_ready {
                self.read_stderr();
            }
            if out_ready {
                match self.framing.fill_from(&mut self.stdout) {
                    Ok(0) => self.stdout_eof_at = Some(Instant::now()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        let err = self.io_error("stdout", &e);
                        self.failed = Some(err.clone());
                        return Err(err);
                    }
                }
            } else if !err_ready {
                // Quiet pipes: the child may have exited while something else holds stdout.
                if let Some(exit) = self.exit_status() {
                    return Err(self.fail(Some(exit)));
                }
            }
        }
    }
}

impl PipeSource {
    /// Waits up to `timeout` for stdout or stderr to be readable (or closed).
    fn poll(&mut self, timeout: Duration) -> Result<(bool, bool), SourceError> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&self.stdout, PollFlags::IN)];
        let mut both;
        // stderr is polled too while it is open.
        let fds: &mut [PollFd<'_>] = match &self.stderr {
            Some(err) => {
                both = [PollFd::new(&self.stdout, PollFlags::IN), PollFd::new(err, PollFlags::IN)];
                &mut both
            }
            None => &mut fds,
        };
        let wait = Timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos().into() };
        match rustix::event::poll(fds, Some(&wait)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok((false, false)),
            Err(e) => return Err(self.io_error("poll", &e.into())),
        }
        let ready = |f: &PollFd<'_>| f.revents().intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR);
        Ok((ready(&fds[0]), fds.get(1).is_some_and(ready)))
    }

    /// One non-blocking read of stderr into the tail; notes EOF. Returns the bytes read.
    fn read_stderr(&mut self) -> usize {
        use std::io::Read as _;
        let Some(err) = self.stderr.as_mut() else {
            return 0;
        };
        let mut chunk = [0u8; 512];
        loop {
            match err.read(&mut chunk) {
                Ok(0) => self.stderr = None,
                Ok(n) => {
                    self.tail.push(&chunk[..n]);
                    return n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: nothing more now. Other errors: stderr only explains failures.
                Err(_) => {}
            }
            return 0;
        }
    }

    /// Reads what stderr has buffered (bounded), so an error can quote the last line.
    fn drain_stderr(&mut self) {
        for _ in 0..STDERR_READS {
            if self.stderr.is_none() {
                return;
            }
            if self.read_stderr() == 0 && self.stderr.is_some() {
                return; // nothing was read
            }
        }
    }

    /// The child's exit, if it has exited, without reaping it: the zombie keeps its pid (and
    /// so the process group id) from being reused until drop has signalled the group.
    fn exit_status(&self) -> Option<Exit> {
        use rustix::process::{WaitId, WaitIdOptions};
        // WNOWAIT: only reports on our own child and leaves it waitable.
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        let status = rustix::process::waitid(WaitId::Pid(self.pid), options).ok()??;
        match (status.exit_status(), status.terminating_signal()) {
            (Some(n), _) => Some(Exit::Status(n)),
            (None, Some(s)) => Some(Exit::Signal(s)),
            (None, None) => None,
        }
    }

    /// Records and returns the fatal error for the child having gone (`exit`) or having closed
    /// its stdout while still running (`None`).
    fn fail(&mut self, exit: Option<Exit>) -> SourceError {
        self.drain_stderr();
        let what = match exit {
            Some(Exit::Status(n)) => format!("exited with status {n}"),
            Some(Exit::Signal(s)) => format!("was killed by signal {s}"),
            None => "closed its stdout".to_string(),
        };
        let line = self.tail.last_line();
        let mut message = format!("{} {what}", self.label);
        match self.explain.and_then(|f| f(&self.tail.text())) {
            Some(why) => {
                message.push_str(": ");
                message.push_str(why);
                if !line.is_empty() {
                    message.push_str(&format!(" (it said: {line})"));
                }
            }
            None if !line.is_empty() => {
                message.push_str(": ");
                message.push_str(&line);
            }
            None => {}
        }
        log::warn!("{message}");
        let err = SourceError::fatal(message);
        self.failed = Some(err.clone());
        err
    }

    fn io_error(&self, what: &str, e: &io::Error) -> SourceError {
        SourceError::fatal(format!("pipe command \"{}\": {what} failed: {e}", self.argv0))
    }

    /// Sends `sig` to the child's whole process group, and to the child itself in case it
    /// left the group.
    fn signal_group(&self, sig: rustix::process::Signal) {
        // The child is not reaped before drop's final wait, so `pid` (and the group id equal
        // to it) still belongs to our child or its zombie and cannot have been reused by an
        // unrelated process.
        let _ = rustix::process::kill_process_group(self.pid, sig);
        let _ = rustix::process::kill_process(self.pid, sig);
    }

    /// Polls for the child's exit for up to `limit`.
    fn wait_exit(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if self.exit_status().is_some() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Most background reaper threads at once (children stuck in the kernel after SIGKILL).
const MAX_REAPERS: usize = 2;
static REAPERS: AtomicUsize = AtomicUsize::new(0);

impl Drop for PipeSource {
    fn drop(&mut self) {
        // TERM first lets a camera tool release the device cleanly; KILL then takes whatever
        // is left of the group (including children that ignore TERM).
        if self.exit_status().is_none() {
            self.signal_group(rustix::process::Signal::TERM);
            self.wait_exit(TERM_GRACE);
        }
        self.signal_group(rustix::process::Signal::KILL);
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.wait_exit(REAP_WAIT) {
            let _ = child.wait();
        } else {
            // Stuck in uninterruptible sleep: reap it later rather than stall the capture
            // thread; it dies as soon as the kernel lets go.
            log::warn!(
                "pipe command \"{}\" (pid {}) did not die on SIGKILL; reaping it in the background",
                self.argv0,
                self.pid
            );
            // Bounded: beyond MAX_REAPERS stuck children, the rest stay zombies until exit.
            if REAPERS.fetch_add(1, Ordering::AcqRel) >= MAX_REAPERS {
                REAPERS.fetch_sub(1, Ordering::AcqRel);
                log::warn!(
                    "{MAX_REAPERS} reaper threads already wait on stuck children; leaving pid {} unreaped",
                    self.pid
                );
                return;
            }
            let spawned = std::thread::Builder::new().name("pipe-reaper".into()).spawn(move || {
                let _ = child.wait();
                REAPERS.fetch_sub(1, Ordering::AcqRel);
            });
            if let Err(e) = spawned {
                REAPERS.fetch_sub(1, Ordering::AcqRel);
                log::warn!("cannot start a reaper thread: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::mjpeg::tests::{jpeg, jpeg_with};

    /// A file `name` in a temporary directory, as a shell word.
    fn file(dir: &tempfile::TempDir, name: &str) -> String {
        dir.path().join(name).to_str().unwrap().to_string()
    }

    fn sh(script: &str, max: usize) -> Result<Box<dyn Source>, SourceError> {
        let cmd = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        PipeOpener::new(PipeConfig { command: cmd }, max).open(1, &Default::default())
    }

    fn alive(pid: libc::pid_t) -> bool {
        // Signal 0 only checks for existence and permission.
        rustix::process::Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
    }

    /// Gone, or a zombie waiting for a reaper that is not us (an orphaned grandchild).
    fn dead(pid: libc::pid_t) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => !alive(pid),
            Ok(s) => s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')),
        }
    }

    fn wait_for_file(p: &str) -> String {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(s) = std::fs::read_to_string(p) {
                if s.ends_with('\n') {
                    return s.trim().to_string();
                }
            }
            assert!(Instant::now() < until, "{p} never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn frames_arrive_with_length_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = jpeg(640, 480);
        let b = jpeg_with(32, 24, &[1, 0xFF, 0x00, 2, 0xFF, 0xD3, 3], None);
        std::fs::write(file(&dir, "a.jpg"), &a).unwrap();
        std::fs::write(file(&dir, "b.jpg"), &b).unwrap();
        let script =
            format!("printf 'junk'; while :; do cat '{}' '{}'; done", file(&dir, "a.jpg"), file(&dir, "b.jpg"));
        let mut src = sh(&script, 4096).unwrap();
        let mut dst = vec![0u8; 4096];
        let w = Duration::from_secs(5);
        assert_eq!(src.read(Dest::Jpeg(&mut dst), w).unwrap(), Read::Dropped(DropCause::Garbage));
        for _ in 0..50 {
            assert_eq!(
                src.read(Dest::Jpeg(&mut dst), w).unwrap(),
                Read::Frame { len: a.len(), width: 640, height: 480 }
            );
            assert_eq!(&dst[..a.len()], &a[..]);
            assert_eq!(src.read(Dest::Jpeg(&mut dst), w).unwrap(), Read::Frame { len: b.len(), width: 32, height: 24 });
            assert_eq!(&dst[..b.len()], &b[..]);
        }
        assert_eq!(src.read(Dest::Discard, w).unwrap(), Read::Consumed);
        let mut small = [0u8; 10];
        assert_eq!(src.read(Dest::Jpeg(&mut small), w).unwrap(), Read::Dropped(DropCause::Oversize));
    }

    #[test]
    fn oversize_frames_are_dropped_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let big = jpeg_with(100, 100, &vec![7u8; 300_000], None);
        let good = jpeg(8, 8);
        std::fs::write(file(&dir, "big.jpg"), &big).unwrap();
        std::fs::write(file(&dir, "good.jpg"), &good).unwrap();
        let script = format!("while :; do cat '{}' '{}'; done", file(&dir, "big.jpg"), file(&dir, "good.jpg"));
        let mut src = sh(&script, 10_000).unwrap();
        let mut dst = vec![0u8; 10_000];
        let w = Duration::from_secs(5);
        for _ in 0..5 {
            assert_eq!(src.read(Dest::Jpeg(&mut dst), w).unwrap(), Read::Dropped(DropCause::Oversize));
            assert_eq!(
                src.read(Dest::Jpeg(&mut dst), w).unwrap(),
                Read::Frame { len: good.len(), width: 8, height: 8 }
            );
        }
    }

    #[test]
    fn child_exit_is_fatal_with_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let a = jpeg(8, 8);
        std::fs::write(file(&dir, "a.jpg"), &a).unwrap();
        let script = format!("cat '{}'; echo 'camera: no device' >&2; exit 3", file(&dir, "a.jpg"));
        let mut src = sh(&script, 4096).unwrap();
        let w = Duration::from_secs(5);
        // The frame written before the exit is still delivered.
        assert_eq!(src.read(Dest::Discard, w).unwrap(), Read::Consumed);
        let e = src.read(Dest::Discard, w).unwrap_err();
        assert!(e.fatal);
        assert_eq!(e.message, "pipe command \"sh\" exited with status 3: camera: no device");
        // Sticky.
        assert_eq!(src.read(Dest::Discard, w).unwrap_err(), e);
    }

    #[test]
    fn killed_child_and_closed_stdout_are_fatal() {
        let mut src = sh("kill -9 $$", 4096).unwrap();
        let e = src.read(Dest::Discard, Duration::from_secs(5)).unwrap_err();
        assert!(e.fatal && e.message.contains("was killed by signal 9"), "{}", e.message);

        let mut src = sh("exec >&-; echo 'stdout closed' >&2; sleep 30", 4096).unwrap();
        let e = src.read(Dest::Discard, Duration::from_secs(5)).unwrap_err();
        assert!(e.fatal);
        assert_eq!(e.message, "pipe command \"sh\" closed its stdout: stdout closed");
    }

    #[test]
    fn child_exit_is_seen_while_a_grandchild_holds_stdout() {
        let mut src = sh("sleep 30 & exit 4", 4096).unwrap();
        let e = src.read(Dest::Discard, Duration::from_secs(5)).unwrap_err();
        assert!(e.fatal && e.message.contains("exited with status 4"), "{}", e.message);
    }

    #[test]
    fn missing_command_is_fatal_and_named() {
        let cmd = vec!["camjobd-no-such-command".to_string(), "-o".to_string()];
        let e = PipeOpener::new(PipeConfig { command: cmd }, 4096).open(1, &Default::default()).err().unwrap();
        assert!(e.fatal);
        assert_eq!(
            e.message,
            "cannot start pipe command \"camjobd-no-such-command\": not found; install it or \
             give the full path in cameras[N].source.command"
        );
        let e = PipeOpener::new(PipeConfig { command: vec![] }, 4096).open(1, &Default::default()).err().unwrap();
        assert!(e.fatal && e.message.contains("empty"));
        let e =
            PipeOpener::new(PipeConfig { command: vec!["/".into()] }, 4096).open(1, &Default::default()).err().unwrap();
        assert!(e.fatal && e.message.starts_with("cannot start pipe command \"/\""), "{}", e.message);
    }

    #[test]
    fn read_without_data_times_out_within_wait() {
        let mut src = sh("sleep 30", 4096).unwrap();
        for wait_ms in [0u64, 50, 200] {
            let wait = Duration::from_millis(wait_ms);
            let t = Instant::now();
            assert_eq!(src.read(Dest::Discard, wait).unwrap(), Read::Timeout);
            let took = t.elapsed();
            assert!(took >= wait, "{took:?} < {wait:?}");
            // Generous: the machine may be busy with other tests.
            assert!(took < wait + Duration::from_millis(250), "{took:?} for {wait:?}");
        }
    }

    #[test]
    fn trickling_garbage_still_times_out() {
        let mut src = sh("while :; do printf x; sleep 0.01; done", 4096).unwrap();
        let t = Instant::now();
        assert_eq!(src.read(Dest::Discard, Duration::from_millis(150)).unwrap(), Read::Timeout);
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn drop_kills_the_group_and_reaps() {
        let dir = tempfile::tempdir().unwrap();
        let a = jpeg(8, 8);
        std::fs::write(file(&dir, "a.jpg"), &a).unwrap();
        let gc = file(&dir, "gc");
        let script = format!(
            "sleep 1000 & echo $! > '{gc}.tmp'; mv '{gc}.tmp' '{gc}'; while :; do cat '{}'; done",
            file(&dir, "a.jpg")
        );
        let mut opener = PipeOpener::new(PipeConfig { command: vec!["sh".into(), "-c".into(), script] }, 4096);
        let mut src = opener.open(1, &Default::default()).unwrap();
        assert_eq!(src.read(Dest::Discard, Duration::from_secs(5)).unwrap(), Read::Consumed);
        let grandchild: libc::pid_t = wait_for_file(&gc).parse().unwrap();
        // The child's pid is its process group id: the grandchild's group.
        let pgid = rustix::process::getpgid(rustix::process::Pid::from_raw(grandchild)).unwrap().as_raw_nonzero().get();
        let own = rustix::process::getpgid(None).unwrap().as_raw_nonzero().get();
        assert!(pgid > 0 && alive(pgid) && alive(grandchild));
        assert_ne!(pgid, own);
        drop(src);
        // Reaped: not even a zombie is left.
        let gone = rustix::process::test_kill_process(rustix::process::Pid::from_raw(pgid).unwrap());
        assert_eq!(gone, Err(rustix::io::Errno::SRCH));
        let until = Instant::now() + Duration::from_secs(2);
        while !dead(grandchild) {
            assert!(Instant::now() < until, "grandchild {grandchild} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn drop_kills_children_that_ignore_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pids = file(&dir, "pids");
        let script = format!(
            "trap '' TERM; sleep 1000 & echo $$ $! > '{pids}.tmp'; mv '{pids}.tmp' '{pids}'; \
             while :; do sleep 1; done"
        );
        let src = sh(&script, 4096).unwrap();
        let s = wait_for_file(&pids);
        let v: Vec<libc::pid_t> = s.split_whitespace().map(|p| p.parse().unwrap()).collect();
        let t = Instant::now();
        drop(src);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(!alive(v[0]));
        let until = Instant::now() + Duration::from_secs(2);
        while !dead(v[1]) {
            assert!(Instant::now() < until, "grandchild survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn stderr_tail_keeps_the_last_line() {
        let mut t = StderrTail::new();
        assert_eq!(t.last_line(), "");
        t.push(b"first\nsecond\r\n\n");
        assert_eq!(t.last_line(), "second");
        let long = vec![b'a'; 2000];
        t.push(&long);
        t.push(b"\nfinal \x1b[0mline\n");
        assert_eq!(t.last_line(), "final [0mline");
        assert_eq!(t.ring.len(), STDERR_TAIL);
    }
}
