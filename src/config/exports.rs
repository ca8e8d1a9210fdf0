//! The `exports` section: background export jobs (archives and timelapses of stored
//! snapshots), their queue, workers and disk budget.

use serde::{Deserialize, Serialize};

use super::Checker;

/// Export jobs: `storage.dir/exports/`, a bounded queue, fixed workers, their own budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportsConfig {
    /// Worker threads (`export-N`); each runs one export at a time, at low CPU and I/O priority.
    pub max_concurrent: usize,
    /// Exports waiting for a worker; one more is refused with 503.
    pub max_queued: usize,
    /// Finished exports listed (and, when they succeeded, kept on disk); the oldest goes first.
    pub history: usize,
    /// Budget for all export files together; the oldest finished ones are deleted to stay under
    /// it, and an export that alone would exceed it fails.
    pub max_bytes: u64,
    /// Failed and cancelled exports are forgotten after this long (finished files stay until
    /// `history` or `max_bytes` needs room).
    pub forget_after_s: u64,
    /// Most snapshot files an export reads per second; null is as fast as the low priority
    /// allows. A limit keeps a slow SD card free for the store while a long export runs.
    pub max_files_per_s: Option<u32>,
    /// Timelapse defaults and caps.
    pub timelapse: TimelapseConfig,
    /// Formerly a test hook (it moved to a debug-only environment variable). Still accepted
    /// and ignored, so a config saved from an older `--check-config`, which printed
    /// `"panic_at_file": null`, keeps starting; no longer printed.
    #[serde(skip_serializing, rename = "panic_at_file", deserialize_with = "ignore")]
    pub retired_panic_at_file: (),
}

/// Reads any value and forgets it (a retired key: nothing of it is kept, so two configs that
/// differ only in it are equal and print the same).
fn ignore<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| ())
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            max_concurrent: 1,
            max_queued: 4,
            history: 20,
            max_bytes: 512 << 20,
            forget_after_s: 3_600,
            max_files_per_s: None,
            timelapse: TimelapseConfig::default(),
            retired_panic_at_file: (),
        }
    }
}

/// Timelapse output: an animated GIF, which every browser plays in an `<img>`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimelapseConfig {
    /// Frames are scaled down to at most this width (aspect ratio kept).
    pub width: u32,
    /// Most frames in one timelapse; longer ranges are sampled evenly.
    pub max_frames: u32,
    /// Default playback rate (a request may ask for another, 1 to 50).
    pub fps: u32,
}

impl Default for TimelapseConfig {
    fn default() -> Self {
        TimelapseConfig { width: 480, max_frames: 600, fps: 10 }
    }
}

impl ExportsConfig {
    /// Range-checks the section.
    pub(super) fn validate(&self, v: &mut Checker) {
        v.range("exports.max_concurrent", self.max_concurrent, 1, 4);
        v.range("exports.max_queued", self.max_queued, 1, 64);
        v.range("exports.history", self.history, 1, 1000);
        v.range("exports.max_bytes", self.max_bytes, 1 << 20, u64::MAX);
        v.range("exports.forget_after_s", self.forget_after_s, 1, 30 * 86_400);
        let t = &self.timelapse;
        v.range("exports.timelapse.width", t.width, 16, 1920);
        v.range("exports.timelapse.max_frames", t.max_frames, 2, 10_000);
        v.range("exports.timelapse.fps", t.fps, 1, 50);
        v.range_some("exports.max_files_per_s", self.max_files_per_s, 1, 100_000);
    }
}
