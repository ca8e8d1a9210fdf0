//! The `storage` section (the data directory, fsync policy, the global budget, the event
//! journal) and each camera's retention (`cameras[].store`), which spends that budget.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Checker;

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The data directory; created if missing.
    pub dir: PathBuf,
    /// When snapshot files (and the event journal) are fsynced: `always` (the default: file
    /// and directory fsynced before a snapshot is listed, so a listed snapshot survives a
    /// power cut) or `never` (the kernel writes back within ~30 s; a power cut loses every
    /// snapshot of those seconds, listed or not; fewer bytes written to the card). Measured
    /// by `scripts/power-cut-test.sh`: see docs/testing.md, "Power cuts".
    pub fsync: FsyncPolicy,
    /// Budget for all cameras' snapshots together, in bytes.
    pub max_bytes: u64,
    /// Below this much free space on the filesystem, the oldest snapshots are deleted.
    pub min_free_bytes: u64,
    /// The event journal.
    pub journal: JournalConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("camjobd-data"),
            fsync: FsyncPolicy::Always,
            max_bytes: 1 << 30,
            min_free_bytes: 64 << 20,
            journal: JournalConfig::default(),
        }
    }
}

/// The event journal (`storage.dir/journal/`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Pending events are written at least this often.
    pub batch_ms: u64,
    /// ... or as soon as this many are pending.
    pub batch_events: usize,
    /// A journal file is rotated at this size.
    pub max_file_bytes: u64,
    /// Most journal files kept; the oldest is deleted on rotation.
    pub max_files: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig { batch_ms: 5_000, batch_events: 64, max_file_bytes: 1 << 20, max_files: 8 }
    }
}

/// See [`StorageConfig::fsync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Never fsync snapshots.
    Never,
    /// Fsync every snapshot and its directory.
    Always,
}

/// Per-camera snapshot storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Write kept snapshots to `storage.dir/<camera>/<yyyy-mm-dd>/<seq>.jpg`.
    pub enabled: bool,
    /// This camera's budget in bytes.
    pub max_bytes: u64,
    /// Most snapshot files kept for this camera (also the size of its in-memory index).
    pub max_files: usize,
    /// Snapshots older than this are deleted; null keeps them until the budget needs room.
    pub max_age_s: Option<u64>,
    /// `all` writes every kept snapshot; `changed` only those whose change score reaches
    /// `change_threshold`, plus one every `keepalive_s` (a static scene costs few writes).
    pub keep: KeepPolicy,
    /// Change score (0–100, % of full scale on a 32x24 grayscale thumbnail) that counts as a
    /// change: emits a `change` event and passes the `changed` policy.
    pub change_threshold: f32,
    /// With `keep: changed`, a snapshot is written at least this often anyway.
    pub keepalive_s: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            max_bytes: 256 << 20,
            max_files: 10_000,
            max_age_s: Some(7 * 86_400),
            keep: KeepPolicy::All,
            change_threshold: 2.0,
            keepalive_s: 60,
        }
    }
}

/// See [`StoreConfig::keep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepPolicy {
    /// Write every kept snapshot.
    All,
    /// Write changed snapshots and keepalives only.
    Changed,
}

/// Directories camjobd keeps in `storage.dir` for itself; a camera's snapshots go into a
/// directory named after the camera, so these names are not camera names.
pub const RESERVED_NAMES: [&str; 2] = ["exports", "journal"];

/// Directories that must not be `storage.dir` (camjobd writes its state, journal and exports
/// there and deletes old files in it): the root, system directories, and shared scratch space
/// anyone can plant links in.
const SYSTEM_DIRS: [&str; 17] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys", "/tmp",
    "/usr", "/var", "/var/tmp",
];

/// `dir` with `.` and `..` resolved by name (no file system access), so `/usr/..` is `/`.
fn lexical(dir: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dir.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

impl StorageConfig {
    /// Range-checks the section, the journal included.
    pub(super) fn validate(&self, v: &mut Checker) {
        const DIR: &str = "storage.dir";
        v.check(DIR, !self.dir.as_os_str().is_empty(), "must not be empty");
        let dir = lexical(&self.dir);
        if SYSTEM_DIRS.iter().any(|d| dir == Path::new(d)) {
            v.fail(
                DIR,
                format!(
                    "{} is a system or shared directory; camjobd writes and deletes files there: use a directory of its own, e.g. /var/lib/camjobd",
                    self.dir.display()
                ),
            );
        }
        v.range("storage.max_bytes", self.max_bytes, 1 << 20, u64::MAX);
        // min_free_bytes takes any u64 (0: never delete for free space), so it has no check.
        let j = &self.journal;
        v.range("storage.journal.batch_ms", j.batch_ms, 100, 3_600_000);
        // Pending events wait in the event ring: a batch of at most half of it is written before
        // the ring overwrites them.
        v.range("storage.journal.batch_events", j.batch_events, 1, crate::events::EVENT_CAPACITY as u64 / 2);
        v.range("storage.journal.max_file_bytes", j.max_file_bytes, 4096, 1 << 30);
        v.range("storage.journal.max_files", j.max_files, 2, 1000);
    }
}

impl StoreConfig {
    /// Range-checks one camera's retention (keys relative to `cameras[i].store`).
    pub(super) fn validate(&self, v: &mut Checker) {
        v.range("max_bytes", self.max_bytes, 64 << 10, u64::MAX);
        v.range("max_files", self.max_files, 1, 1_000_000);
        let t = self.change_threshold;
        v.check("change_threshold", t > 0.0 && t <= 100.0, "must be > 0 and <= 100 (percent)");
        v.range("keepalive_s", self.keepalive_s, 1, 86_400);
        v.range_some("max_age_s", self.max_age_s, 1, u64::MAX);
    }
}
