//! Retention: each camera's budget (bytes, files, age), the budget of all cameras together,
//! and free space on the filesystem. The oldest snapshot goes first; a camera's newest is kept.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::writer::Store;
use crate::index::snapshot_path;

impl Store {
    /// Deletes camera `i`'s oldest snapshot. False when there is nothing to delete.
    pub(super) fn delete_oldest(&mut self, i: usize) -> bool {
        let cam = &self.shared.cameras[i];
        let Some(old) = cam.stored.pop_oldest() else { return false };
        let dir = &self.shared.config.storage.dir;
        let path = snapshot_path(dir, &cam.name, old.day, old.seq);
        // Never through a day directory replaced by a link: only files under storage.dir go.
        match crate::sys::remove_beneath(dir, &crate::index::snapshot_rel(&cam.name, old.day, old.seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                cam.store.errors.fetch_add(1, Relaxed);
                log::warn!("{}: cannot delete {}: {e}", cam.name, path.display());
            }
        }
        cam.store.deleted.fetch_add(1, Relaxed);
        // The last file of a day takes its directory with it.
        if cam.stored.oldest().is_none_or(|next| next.day != old.day) {
            if let Ok(cam_dir) = crate::sys::open_dir_beneath(dir, Path::new(&cam.name)) {
                let _ = crate::sys::remove_dir_in(&cam_dir, &crate::index::day_name(old.day));
            }
            if self.cams[i].made_day == Some(old.day) {
                self.cams[i].made_day = None;
            }
        }
        true
    }

    /// Camera `i`'s own budget: bytes, files (kept by the index capacity), age. The newest
    /// file is always kept, so the budget is exceeded by at most that one file.
    pub(super) fn retain(&mut self, i: usize) {
        let cam = Arc::clone(&self.shared.cameras[i]);
        let c = &cam.config.store;
        // Ages against the wall clock the jump detector just read, so that the index and "now"
        // are on the same side of a jump (NTP may step the clock during a slow write).
        self.watch_clock();
        let now = self.clock.last_wall();
        loop {
            let (files, bytes) = cam.stored.usage();
            let Some(oldest) = cam.stored.oldest() else { break };
            let too_old = c.max_age_s.is_some_and(|a| now - oldest.captured_at > a as f64);
            if files == 0 || (files == 1 && !too_old) || (bytes <= c.max_bytes && !too_old) {
                break;
            }
            self.delete_oldest(i);
        }
    }

    /// The budget of all cameras together: the oldest snapshot anywhere goes first.
    pub(super) fn retain_total(&mut self) {
        let max = self.shared.config.storage.max_bytes;
        loop {
            let total: u64 = self.shared.cameras.iter().map(|c| c.stored.usage().1).sum();
            if total <= max {
                break;
            }
            let Some(i) = self.oldest_camera() else { break };
            self.delete_oldest(i);
        }
    }

    /// The camera whose oldest snapshot is the oldest of all, among those with more than one.
    fn oldest_camera(&self) -> Option<usize> {
        let cams = &self.shared.cameras;
        (0..cams.len()).filter(|&i| cams[i].stored.usage().0 > 1).min_by(|&a, &b| {
            let t = |i: usize| cams[i].stored.oldest().map_or(f64::MAX, |s| s.captured_at);
            t(a).total_cmp(&t(b))
        })
    }

    /// Low free space (other programs, other data): give back our oldest snapshots.
    pub(super) fn check_free_space(&mut self) {
        let min = self.shared.config.storage.min_free_bytes;
        let dir = self.shared.config.storage.dir.clone();
        let Some(free) = crate::sys::free_bytes(&dir) else { return };
        if free >= min {
            return;
        }
        let (mut n, mut freed) = (0u64, 0u64);
        while crate::sys::free_bytes(&dir).is_some_and(|f| f < min) {
            let Some(i) = self.oldest_camera() else { break };
            freed += self.shared.cameras[i].stored.oldest().map_or(0, |s| s.bytes);
            self.delete_oldest(i);
            n += 1;
        }
        self.shared.events.error(
            "",
            format_args!(
                "free space {} MiB is below storage.min_free_bytes {} MiB: deleted the {n} oldest snapshots ({} MiB)",
                free >> 20,
                min >> 20,
                freed >> 20
            ),
        );
    }
}
