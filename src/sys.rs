//! Small operating-system calls that std does not offer, each behind a safe function: free
//! space on a filesystem, physical memory, opening, listing, creating and deleting files under a
//! directory without following links, the scheduling priority of the calling thread,
//! whether the clock is synchronised, how far a TCP client has read, the control group's
//! limits, and the shape of the C allocator ([`settle_allocator`]).
//! Calls rustix wraps safely go through it; `unsafe` is left for what it does not have
//! (`TCP_INFO`, `adjtimex`, `ioprio_set`, `mallopt`). The only other `unsafe` is in the
//! capture backends and [`crate::jpeg`].

use std::fs::File;
use std::io;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// This machine's physical memory in bytes (`None` if the kernel does not say).
pub fn physical_memory() -> Option<u64> {
    let info = rustix::system::sysinfo();
    // c_ulong: 32 bits on armv7, where the conversion is not useless.
    #[allow(clippy::useless_conversion)]
    let bytes = u64::from(info.totalram).saturating_mul(u64::from(info.mem_unit.max(1)));
    (bytes > 0).then_some(bytes)
}

/// How far a TCP connection's client has got with what was written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpProgress {
    /// Bytes the client has acknowledged since the connection opened (only ever grows).
    pub acked: u64,
    /// Everything written has been sent, and all but at most the last segment acknowledged
    /// (a client may hold back its acknowledgement of a lone segment: delayed ACK, up to 200 ms
    /// on Windows).
    pub drained: bool,
    /// The connection can still carry data to the client (not reset or closed).
    pub open: bool,
}

/// [`TcpProgress`] of the TCP socket `fd`, in one `getsockopt(TCP_INFO)` (`None` if it is not
/// one, or the kernel is older than 4.6 and has no byte counts).
pub fn tcp_progress(fd: std::os::fd::RawFd) -> Option<TcpProgress> {
    // SAFETY: a plain C struct of integers, for the kernel to fill.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; getsockopt writes at most that and sets `len`.
    let r = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast::<libc::c_void>(), &mut len)
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes) + std::mem::size_of::<u32>();
    if r != 0 || (len as usize) < needed {
        return None;
    }
    Some(TcpProgress {
        acked: info.tcpi_bytes_acked,
        drained: info.tcpi_unacked <= 1 && info.tcpi_notsent_bytes == 0,
        // ESTABLISHED, or CLOSE_WAIT: the client closed its side but may still read.
        open: matches!(info.tcpi_state, 1 | 8),
    })
}

/// The local address of socket `fd`: for an accepted connection, the address the client
/// reached this machine on.
pub fn local_addr(fd: std::os::fd::RawFd) -> Option<std::net::SocketAddr> {
    // SAFETY: the caller's connection keeps `fd` open for this call; it is only borrowed here,
    // never closed.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
}

/// The limits of the control group this process runs in (systemd's `MemoryMax=` and
/// `TasksMax=` for a service), the smallest along the hierarchy; `None` where there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `memory.max` (v2) or `memory.limit_in_bytes` (v1), in bytes.
    pub memory: Option<u64>,
    /// `pids.max`: tasks (processes and threads) the group may hold.
    pub tasks: Option<u64>,
}

/// Reads [`CgroupLimits`] from `/proc/self/cgroup` and `/sys/fs/cgroup` (v2, or v1's memory
/// and pids controllers).
pub fn cgroup_limits() -> CgroupLimits {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    cgroup_limits_in(Path::new("/sys/fs/cgroup"), &own)
}

/// [`cgroup_limits`] for a `/proc/self/cgroup` text and a cgroup mount at `root`.
pub fn cgroup_limits_in(root: &Path, own: &str) -> CgroupLimits {
    // The smallest value of `file` in `dir` and its ancestors up to `top`.
    let smallest = |top: &Path, group: &str, file: &str| -> Option<u64> {
        let mut dir = top.join(group.trim_start_matches('/'));
        let mut min: Option<u64> = None;
        loop {
            let v = std::fs::read_to_string(dir.join(file)).ok().and_then(|t| t.trim().parse::<u64>().ok());
            // v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
            if let Some(v) = v.filter(|&v| v < 1 << 60) {
                min = Some(min.map_or(v, |m| m.min(v)));
            }
            if dir == top || !dir.pop() || !dir.starts_with(top) {
                return min;
            }
        }
    };
    let mut limits = CgroupLimits::default();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(group)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.is_empty() {
            // v2 (on a hybrid system its hierarchy holds no controllers: the v1 lines count).
            let v2 =
                CgroupLimits { memory: smallest(root, group, "memory.max"), tasks: smallest(root, group, "pids.max") };
            if v2 != CgroupLimits::default() {
                return v2;
            }
        }
        for c in controllers.split(',') {
            match c {
                "memory" => limits.memory = smallest(&root.join("memory"), group, "memory.limit_in_bytes"),
                "pids" => limits.tasks = smallest(&root.join("pids"), group, "pids.max"),
                _ => {}
            }
        }
    }
    limits
}

/// This machine's host name as the kernel has it (`None` if it cannot be read or is empty).
pub fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(raw.trim().to_string()).filter(|h| !h.is_empty())
}

/// The glibc malloc settings camjobd runs with (docs/operations.md, "Fixed memory"): one arena for every
/// thread, no per-thread caches and no fast bins (a freed chunk merges with its free
/// neighbours at once), a fixed mmap threshold of 32 KiB, and a heap that is never trimmed and
/// grows by what it needs (no top pad, so a large buffer is not carved from a spare top).
/// With glibc's defaults each thread that allocates gets a heap of its own (12 with one camera
/// and MQTT), each thread keeps a cache of up to 7 freed chunks in each of 64 size classes (a
/// chunk allocated on one thread and freed on another, such as a connection's task, lands in
/// the freeing thread's cache), and the mmap threshold rises to the largest buffer freed so
/// far (the 146 KiB page that `/api/events?limit=256` reserves then lives in a heap); under API
/// polling RSS grew in steps of 4-16 KiB for as long as a soak ran while the live heap stayed
/// flat (docs/testing.md, "Soak"). With these settings one heap holds only small objects, whatever is
/// freed is reusable by every thread at once, every larger buffer is a mapping of its own,
/// returned when freed, and the heap keeps its high-water mark ([`HEAP_RESERVE`]).
pub const MALLOC_TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0:\
glibc.malloc.mmap_threshold=32768:glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=0";

/// Puts glibc's allocator in the shape of [`MALLOC_TUNABLES`]; call first thing in `main`,
/// before any thread exists. glibc reads its per-thread cache setting only when a program
/// starts (`GLIBC_TUNABLES`), so when that variable is unset this executes the binary again
/// (its own path, same arguments, same process id) with it set, once: the second start finds
/// it set and returns. A `GLIBC_TUNABLES` given by the caller is left as it is (to tune, or
/// to run under a tool that must not see an exec). If the exec fails, the rest is still
/// applied (`mallopt`) and the reason is returned; the caches stay.
pub fn settle_allocator() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "GLIBC_TUNABLES";
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Ok(());
    }
    if std::env::var_os(VAR).is_some() {
        return Ok(());
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    // The binary's own path (not /proc/self/exe, which would name the process `exe`).
    let err = match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe).arg0(arg0).args(args).env(VAR, MALLOC_TUNABLES).exec(),
        Err(e) => e,
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets parameters of the allocator, which takes its own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MXFAST, 0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 0);
    }
    Err(format!("could not restart with {VAR}={MALLOC_TUNABLES} ({err}); per-thread malloc caches stay on"))
}

/// Heap committed once the service has started ([`commit_heap`]): touched once and never given
/// back, like the frame pool, so RSS does not step up each time a stall, a burst of requests or
/// of live-view clients sets a new high-water mark of the heap within this size (it rose by up
/// to 300 KiB after start-up in 25-minute soaks without it); a heap that outgrew it would grow
/// RSS again, visibly.
pub const HEAP_RESERVE: usize = 1 << 20;

/// Fills and frees [`HEAP_RESERVE`] bytes in 16 KiB blocks (below the mmap threshold, so they
/// come from the heap; not zeroed, as calloc would leave fresh pages untouched), each followed
/// by an 8-byte fence that is kept for good (64 of them, 2 KiB with their list): the freed
/// blocks cannot merge into one large free block, so they serve small objects only and a buffer
/// of 32 KiB or more still gets a mapping of its own rather than a slice of the reserve. Their
/// pages stay resident, as [`MALLOC_TUNABLES`] never trims the heap. Call once the service has
/// started: a buffer allocated for good at start-up (a frame copy) would otherwise take the
/// reserve for itself.
pub fn commit_heap() {
    const BLOCK: usize = 16 << 10;
    let mut blocks = Vec::with_capacity(HEAP_RESERVE / BLOCK);
    let mut fences = Vec::with_capacity(HEAP_RESERVE / BLOCK);
    for _ in 0..HEAP_RESERVE / BLOCK {
        blocks.push(vec![0xa5u8; BLOCK]);
        fences.push(Box::new(0u64));
    }
    drop(std::hint::black_box(blocks));
    std::mem::forget(fences);
}

/// Bytes available to unprivileged users on the filesystem holding the open directory `at`.
pub fn free_bytes_at(at: &File) -> Option<u64> {
    let st = rustix::fs::fstatvfs(at).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether the kernel's clock is synchronised (an NTP client such as systemd-timesyncd or
/// chrony has disciplined it since boot): `adjtimex` reports `TIME_ERROR` until then. `None`
/// if the call fails.
pub fn clock_synchronized() -> Option<bool> {
    // SAFETY: a plain C struct; zero (modes 0) asks adjtimex to read, not to change anything.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable timex for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    (state >= 0).then_some(state != libc::TIME_ERROR)
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Puts the calling thread (only it: on Linux a thread has its own nice value and I/O
/// priority) at the lowest CPU priority (nice 19) and in the idle I/O class, so that it runs
/// only when capture, HTTP and the store have nothing to do. Returns what could not be done;
/// lowering one's own priority needs no privilege, so that is normally nothing.
pub fn lower_thread_priority() -> Result<(), PriorityError> {
    let tid = rustix::thread::gettid();
    // A thread id with PRIO_PROCESS changes only that thread.
    let nice = rustix::process::setpriority_process(Some(tid), 19);
    // ioprio_set(IOPRIO_WHO_PROCESS = 1, tid, IOPRIO_CLASS_IDLE (3) << IOPRIO_CLASS_SHIFT (13)).
    // SAFETY: plain integer arguments; an unknown syscall only returns ENOSYS.
    let io = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, tid.as_raw_nonzero().get(), 3 << 13) };
    let io_err = (io != 0).then(io::Error::last_os_error);
    match (nice, io_err) {
        (Ok(()), None) => Ok(()),
        (nice, io_err) => Err(PriorityError { nice: nice.err().map(io::Error::from), ioprio: io_err }),
    }
}

/// [`lower_thread_priority`] failed: what each of the two calls said (`None`: done).
#[derive(Debug)]
pub struct PriorityError {
    /// setpriority (nice 19).
    pub nice: Option<io::Error>,
    /// ioprio_set (the idle I/O class).
    pub ioprio: Option<io::Error>,
}

impl std::fmt::Display for PriorityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let said = |e: &Option<io::Error>| e.as_ref().map_or("done".to_string(), ToString::to_string);
        write!(
            f,
            "could not lower the export thread's priority (nice 19: {}; idle I/O class: {})",
            said(&self.nice),
            said(&self.ioprio)
        )
    }
}

/// Opens `rel` (a relative path of plain names) under `dir` for reading, without following a
/// symbolic link anywhere below `dir` and without leaving it (the kernel's `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; on kernels before 5.6, one `openat` with
/// `O_NOFOLLOW` per component), and only if it is a regular file: a link planted in
/// `storage.dir` is refused (`ELOOP`), and so is a FIFO or device (opened non-blocking, so it
/// cannot hang the caller). `dir` itself may be a link: that is the administrator's choice.
pub fn open_regular_beneath(dir: &Path, rel: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    regular_only(open_beneath(File::open(dir)?, rel, flags)?)
}

fn regular_only(file: File) -> io::Result<File> {
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    Ok(file)
}

/// Deletes the file `rel` under `dir` without following a link on the way: a day directory
/// replaced by a link to elsewhere is refused (`ELOOP`), never entered; a link in place of the
/// file is removed itself, not what it points to.
pub fn remove_beneath(dir: &Path, rel: &Path) -> io::Result<()> {
    let name = rel.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let base = File::open(dir)?;
    let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => open_beneath(base, p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC)?,
        None => base,
    };
    remove_in(&parent, name.to_str().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?)
}

/// Opens the directory `rel` under `dir` without following a link on the way (see
/// [`open_regular_beneath`]); for creating, renaming and syncing files inside it.
pub fn open_dir_beneath(dir: &Path, rel: &Path) -> io::Result<File> {
    open_beneath(File::open(dir)?, rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC)
}

/// Opens the regular file `rel` under the open directory `at` for reading (see
/// [`open_regular_beneath`]).
pub fn open_regular_in(at: &File, rel: &str) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    regular_only(open_beneath(at.try_clone()?, Path::new(rel), flags)?)
}

/// Opens the directory `name` in the open directory `at` without following a link.
pub fn open_dir_in(at: &File, name: &str) -> io::Result<File> {
    open_beneath(at.try_clone()?, Path::new(name), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC)
}

/// Opens (creating if needed) the regular file `name` in `at` for appending and reading; a
/// link there is refused (`ELOOP`), a FIFO or device refused as not a regular file, and so is
/// a file with more than one name (a hard link planted to a file elsewhere).
pub fn open_append_in(at: &File, name: &str) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let flags = OFlags::RDWR
        | OFlags::APPEND
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::NOCTTY
        | OFlags::CLOEXEC;
    let file = regular_only(File::from(rustix::fs::openat(at, name, flags, FILE_MODE)?))?;
    if file.metadata()?.nlink() > 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "has more than one name (a hard link)"));
    }
    Ok(file)
}

/// What a directory entry is, as seen without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Link,
    /// A FIFO, socket or device.
    Other,
}

/// The entries of the open directory `at` (without `.` and `..`), each with its kind as the
/// directory says it (`lstat` where the filesystem does not say): nothing is followed. Names
/// that are not UTF-8 are skipped (camjobd never writes one).
pub fn list_in(at: &File) -> io::Result<Vec<(String, EntryKind)>> {
    use rustix::fs::{AtFlags, FileType};
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(at)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if name == "." || name == ".." {
            continue;
        }
        let mut t = entry.file_type();
        if t == FileType::Unknown {
            t = match rustix::fs::statat(at, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            };
        }
        let kind = match t {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Link,
            _ => EntryKind::Other,
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

/// What [`stat_in`] tells about a directory entry, without following it.
#[derive(Clone, Copy, Debug)]
pub struct FileMeta {
    /// Regular file, directory, link or other.
    pub kind: EntryKind,
    /// Size in bytes.
    pub len: u64,
    /// Last modification, Unix seconds.
    pub mtime: f64,
}

/// `fstatat(at, name, AT_SYMLINK_NOFOLLOW)`: a link is described, not followed.
pub fn stat_in(at: &File, name: &str) -> io::Result<FileMeta> {
    use rustix::fs::FileType;
    let st = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Link,
        _ => EntryKind::Other,
    };
    // `mtime()`: signed on every target (the raw field is unsigned on 32-bit ARM).
    let mtime = st.st_mtime as f64 + st.st_mtime_nsec as f64 / 1e9;
    Ok(FileMeta { kind, len: st.st_size as u64, mtime })
}

/// Removes the empty directory `name` in the open directory `at` (a link there is not
/// removed: `ENOTDIR`).
pub fn remove_dir_in(at: &File, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(at, name, rustix::fs::AtFlags::REMOVEDIR)?)
}

/// Sets the modification time of the regular file `name` in `at` (a link is not followed):
/// a snapshot redated after a wall-clock jump keeps its corrected time across restarts.
pub fn set_mtime_in(at: &File, name: &str, unix_s: f64) -> io::Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps};
    let t = Timespec { tv_sec: unix_s.floor() as _, tv_nsec: ((unix_s - unix_s.floor()) * 1e9) as _ };
    Ok(rustix::fs::utimensat(
        at,
        name,
        &Timestamps { last_access: t, last_modification: t },
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `syncfs`: writes back everything pending on the filesystem holding the open `at` (one
/// flush for many metadata changes, such as re-stamped mtimes).
pub fn sync_filesystem(at: &File) -> io::Result<()> {
    Ok(rustix::fs::syncfs(at)?)
}

/// Writes `name` in the open directory `at` as a temp file (`<name>.<n>.tmp`) + rename, so a
/// reader sees the old or the new content, never part of it; with `durable`, the file and the
/// directory are fsynced. Each call has its own temp name: two threads saving the same record
/// at once must not unlink or interleave into each other's temp file.
pub fn write_atomic_in(at: &File, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = format!("{name}.{}.tmp", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut f = create_in(at, &tmp)?;
    let written = io::Write::write_all(&mut f, bytes).and_then(|_| if durable { f.sync_all() } else { Ok(()) });
    if let Err(e) = written.and_then(|_| rename_in(at, &tmp, name)) {
        let _ = remove_in(at, &tmp);
        return Err(e);
    }
    if durable {
        at.sync_all()?;
    }
    Ok(())
}

/// Files camjobd creates: rw-r--r-- (before the umask).
const FILE_MODE: Mode = Mode::from_raw_mode(0o644);

/// Creates the regular file `name` in the open directory `at` for writing (and reading back),
/// as a new file: a link or file already there (a stale temp file, or something planted: a hard link would be
/// truncated by an ordinary create) is unlinked first, never opened.
pub fn create_in(at: &File, name: &str) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..2 {
        match rustix::fs::openat(at, name, flags, FILE_MODE) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(rustix::io::Errno::EXIST) => remove_in(at, name)?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Renames `from` to `to`, both in the open directory `at` (atomic, as `rename`).
pub fn rename_in(at: &File, from: &str, to: &str) -> io::Result<()> {
    Ok(rustix::fs::renameat(at, from, at, to)?)
}

/// Makes the directory `name` in the open directory `at`; one that exists already is fine
/// (whether it is a real directory is checked when it is opened beneath).
pub fn mkdir_in(at: &File, name: &str) -> io::Result<()> {
    match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` in the open directory `at` (a link is removed itself).
pub fn remove_in(at: &File, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(at, name, AtFlags::empty())?)
}

/// Opens `rel` (plain names only) relative to the directory `base` with `flags`, following no
/// link and never leaving `base`.
fn open_beneath(base: File, rel: &Path, flags: OFlags) -> io::Result<File> {
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        let what = format!("{}: not a plain relative path", rel.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(&base, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::NOSYS) => open_walk(base, rel, flags),
        Err(e) => Err(e.into()),
    }
}

/// `open_regular_beneath` for kernels without `openat2`: each directory opened with
/// `O_NOFOLLOW | O_DIRECTORY` relative to the last, then the file with `O_NOFOLLOW`.
fn open_walk(mut at: File, rel: &Path, flags: OFlags) -> io::Result<File> {
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.next() {
        let last = parts.peek().is_none();
        let f = if last { flags } else { OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC } | OFlags::NOFOLLOW;
        at = match rustix::fs::openat(&at, c.as_os_str(), f, Mode::empty()) {
            Ok(fd) => File::from(fd),
            // A link (or a file) where a directory should be: O_DIRECTORY | O_NOFOLLOW says
            // ENOTDIR; report it as openat2 does, a link not followed.
            Err(rustix::io::Errno::NOTDIR) if !last || flags.contains(OFlags::DIRECTORY) => {
                return Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_v2_take_the_smallest_up_the_tree_and_v1_reads_its_controllers() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let svc = root.join("system.slice/camjobd.service");
        std::fs::create_dir_all(&svc).unwrap();
        std::fs::write(svc.join("memory.max"), "268435456\n").unwrap();
        std::fs::write(svc.join("pids.max"), "max\n").unwrap();
        std::fs::write(root.join("system.slice/pids.max"), "64\n").unwrap();
        std::fs::write(root.join("system.slice/memory.max"), "max\n").unwrap();
        let v2 = cgroup_limits_in(root, "0::/system.slice/camjobd.service\n");
        assert_eq!(v2, CgroupLimits { memory: Some(256 << 20), tasks: Some(64) });
        assert_eq!(cgroup_limits_in(root, "0::/\n"), CgroupLimits::default());
        let mem = root.join("memory/system.slice/camjobd.service");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "536870912\n").unwrap();
        std::fs::write(root.join("memory/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let pids = root.join("pids/system.slice/camjobd.service");
        std::fs::create_dir_all(&pids).unwrap();
        std::fs::write(pids.join("pids.max"), "100\n").unwrap();
        // A hybrid system lists its v2 hierarchy last, without controllers.
        let v1 = cgroup_limits_in(
            root,
            "12:pids:/system.slice/camjobd.service\n4:memory:/system.slice/camjobd.service\n1:name=systemd:/x\n0::/\n",
        );
        assert_eq!(v1, CgroupLimits { memory: Some(512 << 20), tasks: Some(100) });
    }

    #[test]
    fn opens_regular_files_beneath_and_refuses_links_fifos_and_escapes() {
        let guard = tempfile::tempdir().unwrap();
        let dir = guard.path();
        std::fs::create_dir_all(dir.join("cam/day")).unwrap();
        std::fs::write(dir.join("cam/day/1.jpg"), b"jpeg").unwrap();
        std::fs::write(dir.join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), dir.join("cam/day/2.jpg")).unwrap();
        std::os::unix::fs::symlink(dir.join("cam/day"), dir.join("cam/linked")).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, dir.join("cam/day/3.jpg"), Mode::from_raw_mode(0o600)).unwrap();
        let read = |rel: &str| {
            open_regular_beneath(dir, Path::new(rel)).map(|mut f| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut f, &mut s).unwrap();
                s
            })
        };
        assert_eq!(read("cam/day/1.jpg").unwrap(), "jpeg");
        assert_eq!(read("cam/day/2.jpg").unwrap_err().raw_os_error(), Some(libc::ELOOP), "a linked file");
        assert_eq!(read("cam/linked/1.jpg").unwrap_err().raw_os_error(), Some(libc::ELOOP), "a linked directory");
        assert_eq!(read("cam/day/3.jpg").unwrap_err().kind(), io::ErrorKind::InvalidData, "a FIFO, refused at once");
        assert_eq!(read("../outside").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(read("cam/day/9.jpg").unwrap_err().kind(), io::ErrorKind::NotFound);
        // The walk used on old kernels refuses the same links.
        let walk = |rel: &str| open_walk(File::open(dir).unwrap(), Path::new(rel), OFlags::RDONLY | OFlags::NOFOLLOW);
        assert!(walk("cam/day/1.jpg").is_ok());
        assert_eq!(walk("cam/day/2.jpg").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(walk("cam/linked/1.jpg").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        // Deleting through a linked directory is refused; a link itself is removed, not its target.
        assert_eq!(remove_beneath(dir, Path::new("cam/linked/1.jpg")).unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert!(dir.join("cam/day/1.jpg").exists());
        remove_beneath(dir, Path::new("cam/day/2.jpg")).unwrap();
        assert!(dir.join("outside").exists() && !dir.join("cam/day/2.jpg").exists());
        remove_beneath(dir, Path::new("cam/day/1.jpg")).unwrap();
        assert!(!dir.join("cam/day/1.jpg").exists());
        // A new file never opens what is there: a hard link to a file outside is replaced, not
        // truncated.
        std::fs::hard_link(dir.join("outside"), dir.join("cam/day/4.tmp")).unwrap();
        let day = open_dir_beneath(dir, Path::new("cam/day")).unwrap();
        std::io::Write::write_all(&mut create_in(&day, "4.tmp").unwrap(), b"new").unwrap();
        assert_eq!(std::fs::read(dir.join("outside")).unwrap(), b"secret");
        assert_eq!(std::fs::read(dir.join("cam/day/4.tmp")).unwrap(), b"new");
    }

    #[test]
    fn atomic_writes_of_one_name_from_many_threads_never_fail_or_mix() {
        let guard = tempfile::tempdir().unwrap();
        let dir = guard.path();
        let at = std::sync::Arc::new(File::open(dir).unwrap());
        let writers: Vec<_> = (0..8u8)
            .map(|t| {
                let at = std::sync::Arc::clone(&at);
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        write_atomic_in(&at, "1.json", &[b'a' + t; 4096], false).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let bytes = std::fs::read(dir.join("1.json")).unwrap();
        assert!(bytes.len() == 4096 && bytes.iter().all(|&b| b == bytes[0]), "a mixed record");
        assert_eq!(list_in(&at).unwrap(), vec![("1.json".to_string(), EntryKind::File)], "no temp file left");
    }

    #[test]
    fn free_space_of_a_real_directory() {
        assert!(free_bytes(Path::new(".")).is_some());
        assert!(free_bytes(Path::new("/no/such/dir")).is_none());
    }

    #[test]
    fn priority_is_lowered_for_this_thread_only() {
        // PRIO_PROCESS with 0 reads the calling thread's nice value.
        let nice = || rustix::process::getpriority_process(None).unwrap();
        let before = nice();
        std::thread::spawn(move || {
            lower_thread_priority().unwrap();
            assert_eq!(nice(), 19);
        })
        .join()
        .unwrap();
        // (The test may itself run niced, as the cross tests do.)
        let ours = nice();
        assert_eq!(ours, before, "the calling thread keeps its own priority");
    }
}
