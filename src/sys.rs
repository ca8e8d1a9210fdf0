//! Small operating-system calls that std does not offer, each behind a safe function: free
//! space on a filesystem, physical memory and the scheduling priority of the calling thread.
//! The only other `unsafe` is in the capture backends and [`crate::jpeg`].

use std::path::Path;

/// This machine's physical memory in bytes (`None` if the kernel does not say).
pub fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system constants.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: all-zero bytes are a valid statvfs value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is a valid, writable
    // statvfs the call fills in.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (r == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Puts the calling thread (only it: on Linux a thread has its own nice value and I/O
/// priority) at the lowest CPU priority (nice 19) and in the idle I/O class, so that it runs
/// only when capture, HTTP and the store have nothing to do. Returns what could not be done;
/// lowering one's own priority needs no privilege, so that is normally nothing.
pub fn lower_thread_priority() -> Result<(), String> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // SAFETY: plain integer arguments; PRIO_PROCESS with a thread id changes only that thread.
    let nice = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
    // ioprio_set(IOPRIO_WHO_PROCESS = 1, tid, IOPRIO_CLASS_IDLE (3) << IOPRIO_CLASS_SHIFT (13)).
    // SAFETY: plain integer arguments; an unknown syscall only returns ENOSYS.
    let io = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, tid, 3 << 13) };
    match (nice, io) {
        (0, 0) => Ok(()),
        _ => Err(format!(
            "could not lower the export thread's priority (nice: {nice}, ioprio: {io}): {}",
            std::io::Error::last_os_error()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_real_directory() {
        assert!(free_bytes(Path::new(".")).is_some());
        assert!(free_bytes(Path::new("/no/such/dir")).is_none());
    }

    #[test]
    fn priority_is_lowered_for_this_thread_only() {
        // SAFETY: getpriority with PRIO_PROCESS and 0 reads the calling thread's nice value.
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        std::thread::spawn(|| {
            lower_thread_priority().unwrap();
            // SAFETY: getpriority with PRIO_PROCESS and 0 reads the calling thread's nice value.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(nice, 19);
        })
        .join()
        .unwrap();
        // SAFETY: as above. (The test may itself run niced, as the cross tests do.)
        let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(ours, before, "the calling thread keeps its own priority");
    }
}
