//! The `export-N` worker threads: take the oldest queued export, write its file as `.part`
//! and rename it into place, record how it ended, repeat. A panic inside one export fails
//! that export only; a panic in the loop itself restarts the loop, so a worker never dies.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{ExportState, ExportView, Kind, Trigger};
use super::run::{io_failed, Ended, Run, PAGE};
use super::{archive, timelapse, Exports};
use crate::clock::unix_now;
use crate::index::StoredSnapshot;
use crate::shutdown::Stop;

/// How long an idle worker sleeps before looking at the stop token and the forget timer.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// How often an idle worker forgets old exports.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

impl Exports {
    /// A worker thread's body (`export-N`): takes the oldest queued export, runs it, repeats
    /// until `stop`. A panic outside an export restarts the loop instead of ending the thread.
    pub fn run_worker(&self, n: usize, stop: Stop) {
        if let Err(e) = crate::sys::lower_thread_priority() {
            log::warn!("export-{n}: {e}; exports may compete with capture for the CPU");
        }
        loop {
            match panic::catch_unwind(AssertUnwindSafe(|| self.work(&stop))) {
                Ok(()) => return,
                Err(p) => {
                    self.stats.worker_restarts.fetch_add(1, Relaxed);
                    log::error!(
                        "export-{n}: the worker loop panicked ({}); restarting it",
                        crate::error::panic_message(&*p)
                    );
                    if stop.wait(Duration::from_secs(1)) {
                        return;
                    }
                }
            }
        }
    }

    fn work(&self, stop: &Stop) {
        let mut page = Vec::with_capacity(PAGE);
        let mut last_prune = Instant::now();
        loop {
            if stop.is_set() {
                return;
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                self.prune();
                last_prune = Instant::now();
            }
            let Some((view, cancel)) = self.take_next() else { continue };
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.execute(&view, &cancel, stop, &mut page)));
            page.clear();
            let outcome = match outcome {
                Ok(o) => o,
                Err(p) => {
                    self.stats.panics.fetch_add(1, Relaxed);
                    let msg = crate::error::panic_message(&*p);
                    log::error!("export {}: panicked: {msg}", view.id);
                    Err(Ended::Failed(format!("internal error in the export ({msg}); the worker goes on")))
                }
            };
            self.finish(&view, outcome, stop);
        }
    }

    /// The oldest queued export, now `RUNNING`; waits up to [`IDLE_WAIT`] for one.
    fn take_next(&self) -> Option<(ExportView, Arc<AtomicBool>)> {
        let mut g = self.lock();
        if !g.records.iter().any(|r| r.view.state == ExportState::Queued) {
            g = self.wake.wait_timeout(g, IDLE_WAIT).unwrap_or_else(|e| e.into_inner()).0;
        }
        let r = g.records.iter_mut().find(|r| r.view.state == ExportState::Queued)?;
        if !r.view.start(unix_now()) {
            return None;
        }
        let taken = (r.view.clone(), Arc::clone(&r.cancel));
        drop(g);
        self.save_view(&taken.0);
        self.event(&taken.0, format_args!("export {} running", taken.0.id));
        Some(taken)
    }

    /// Writes the export's file; returns its size.
    fn execute(
        &self,
        view: &ExportView,
        cancel: &AtomicBool,
        stop: &Stop,
        page: &mut Vec<StoredSnapshot>,
    ) -> Result<u64, Ended> {
        let cam = self
            .shared
            .camera_index(&view.camera)
            .map(|i| Arc::clone(&self.shared.cameras[i]))
            .ok_or_else(|| Ended::Failed(format!("camera {:?} is no longer configured", view.camera)))?;
        // Only what existed at the start: progress is then exact and the export ends.
        let last = cam.stored.newest().map_or(0, |s| s.seq);
        let (total, _) = cam.stored.count_range(view.from, view.to, last);
        if total == 0 {
            return Err(Ended::Failed("no stored snapshot is left in the range (retention deleted them)".into()));
        }
        self.update(view.id, |v| {
            v.snapshots = total;
            v.step = "writing".into();
        });
        let name = Self::file_name(view.id, view.kind);
        let part = format!("{name}.part");
        let file = crate::sys::create_in(&self.at, &part).map_err(|e| io_failed("create the export file", &e))?;
        let mut run = Run {
            cam: &cam,
            events: &self.shared.events,
            storage_dir: &self.shared.config.storage.dir,
            exports: &self.at,
            view,
            last,
            total,
            cancel,
            stop,
            max_bytes: self.cfg.max_bytes,
            room: &|bytes| self.make_room(view.id, bytes),
            min_free: self.shared.config.storage.min_free_bytes,
            #[cfg(debug_assertions)]
            panic_at_file: self.panic_at_file,
            max_files_per_s: self.cfg.max_files_per_s,
            started: Instant::now(),
            opened: 0,
            page,
            visited: 0,
            published: Instant::now(),
            percent: 0,
            last_reported: (0, 0),
            progress: &|done, bytes, percent| {
                self.update(view.id, |v| {
                    v.done = done;
                    v.bytes = bytes;
                    v.percent = v.percent.max(percent);
                })
            },
        };
        let written = match view.kind {
            Kind::Archive => archive::write(&mut run, file),
            Kind::Timelapse => timelapse::write(&mut run, file, &self.cfg.timelapse),
        };
        let (done, bytes) = run.last_reported;
        run.publish(done, bytes);
        let result = written.and_then(|n| {
            crate::sys::rename_in(&self.at, &part, &name).map_err(|e| io_failed("rename the export file", &e))?;
            let _ = self.at.sync_all();
            Ok(n)
        });
        if result.is_err() {
            let _ = crate::sys::remove_in(&self.at, &part);
        }
        result
    }

    /// Records how the export ended: its state, the counters, the record on disk, an event.
    fn finish(&self, view: &ExportView, outcome: Result<u64, Ended>, stop: &Stop) {
        let now = unix_now();
        let mut g = self.lock();
        let Some(r) = g.records.iter_mut().find(|r| r.view.id == view.id) else { return };
        let v = &mut r.view;
        let (ended, counter) = match outcome {
            Ok(size) => (v.succeed(size, now), &self.stats.succeeded),
            Err(Ended::Cancelled) if !stop.is_set() => {
                (v.end(Trigger::Cancelled, "cancelled", None, now), &self.stats.cancelled)
            }
            Err(Ended::Cancelled) => {
                let why = "camjobd was stopped during this export; start it again";
                (v.end(Trigger::Interrupted, "interrupted", Some(why.into()), now), &self.stats.failed)
            }
            Err(Ended::Failed(msg)) => (v.end(Trigger::Failed, "failed", Some(msg), now), &self.stats.failed),
        };
        if !ended {
            // Reported as a bug by the state machine; the record is left as it was.
            return;
        }
        counter.fetch_add(1, Relaxed);
        let v = v.clone();
        drop(g);
        self.save_view(&v);
        match v.state {
            ExportState::Succeeded => {
                self.event(&v, format_args!("export {} succeeded: {} snapshots, {} KiB", v.id, v.done, v.bytes >> 10))
            }
            ExportState::Failed => {
                self.event(&v, format_args!("export {} failed: {}", v.id, v.error.as_deref().unwrap_or("?")))
            }
            _ => self.event(&v, format_args!("export {} cancelled", v.id)),
        }
        self.prune();
    }
}
