//! The error policy, written down once.
//!
//! - Start-up problems are [`Error`]s: a config error exits 2 and names the key path;
//!   anything else exits 1 with a sentence that says how to fix it on the board.
//! - After start-up no input is fatal: a camera error becomes a job state with a reason
//!   (see `status`), a bad request becomes a JSON error, a bad frame is dropped and counted.
//!   Only a bug is: a core thread that panics fails the service (exit 1; see
//!   [`crate::shutdown`] for the policy).
//! - Hot paths use small local enums (`capture::SourceError`), never this type.

use std::fmt;
use std::io;
use std::path::Path;

use crate::config::ConfigError;

/// A start-up error.
#[derive(Debug)]
pub enum Error {
    /// Bad config: exit status 2.
    Config(ConfigError),
    /// Bad command line: exit status 2.
    Usage(String),
    /// Anything else that stops the service from starting: exit status 1.
    Fatal(String),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) => 2,
            Error::Fatal(_) => 1,
        }
    }

    /// A storage error with a hint that fits the failure.
    pub fn storage(path: &Path, what: &str, e: io::Error) -> Error {
        Error::Fatal(format!("cannot {what} at {}: {e}{}", path.display(), storage_hint(&e)))
    }
}

/// What to do about a storage error on the board, as "; ..." (empty when nothing useful).
pub fn storage_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "; give the service user write access to storage.dir (under systemd, StateDirectory=camjobd does this)"
        }
        io::ErrorKind::ReadOnlyFilesystem => "; the filesystem is read-only: pick a writable storage.dir",
        _ if e.raw_os_error() == Some(libc::ENOSPC) => "; the disk is full: free space or pick another storage.dir",
        _ if e.raw_os_error() == Some(libc::ELOOP) => {
            "; a directory on the way in storage.dir is a link, and camjobd never writes through links: move it away (camjobd makes a real one)"
        }
        _ => "",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "config error: {e}"),
            Error::Usage(m) => write!(f, "{m}"),
            Error::Fatal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

/// The message of a caught panic (`&str` or `String` payloads; anything else is named as such).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}
