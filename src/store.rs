//! What camjobd keeps in `storage.dir`:
//! - the job id counter (`state_file`), written atomically;
//! - kept snapshots, `<camera>/<yyyy-mm-dd>/<seq>.jpg`, written by the `store` thread
//!   (`writer`) from a short bounded queue (full → the snapshot is dropped and counted, capture
//!   never waits), each as temp file + rename, within per-camera and total budgets enforced on
//!   every write (`retention`); their change scores (`change`);
//! - the event journal (`journal`), flushed by the same thread;
//! - at start, the files of earlier runs read back into each camera's index (`recover`).

pub mod change;
pub mod journal;
mod recover;
mod retention;
mod state_file;
mod writer;

use std::sync::Arc;

use crate::config::Config;
use crate::frame::Frame;

pub use recover::{forget_missing, recover, report_left_alone};
pub use state_file::StateFile;
pub use writer::Store;

/// A kept snapshot on its way to disk. Holding it holds a pool buffer, so the queue is short.
pub struct StoreItem {
    /// Index into `Shared::cameras`.
    pub camera: usize,
    /// The frame; dropped as soon as its bytes are written.
    pub frame: Arc<Frame>,
}

/// Queue length between capture and the store: each queued snapshot holds a pool buffer, so
/// three buffers are always left: one for capture, the newest snapshot and the live view's
/// newest frame.
pub fn queue_len(config: &Config) -> usize {
    let min_pool = config.cameras.iter().map(|c| c.frame_buffers).min().unwrap_or(4);
    min_pool.saturating_sub(3).max(1)
}
