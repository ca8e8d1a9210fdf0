//! Start-up: what earlier runs left in `storage.dir/exports/` becomes the list again. Partial
//! files (a crash cut them short) are deleted and their exports listed as `FAILED`, finished
//! exports are listed again, queued ones are queued again, and the id counter goes on past
//! every id seen on disk, so that a download link never fetches another export.

use std::io;
use std::sync::Arc;

use super::record::{ExportState, ExportView, Trigger};
use super::{Exports, Record, NEXT_ID};
use crate::clock::unix_now;
use crate::error::Error;
use crate::sys::EntryKind;

/// How far ahead of everything on disk the next id jumps when `next_id` exists but cannot be
/// read: ids of exports already forgotten (pruned) leave no trace, and must not come back.
const ID_GAP_AFTER_DAMAGE: u64 = 1 << 20;

/// What the exports directory holds, read once.
struct Scan {
    /// Readable records, in no order.
    found: Vec<ExportView>,
    /// The largest id any name carries (records, data and part files, planted links).
    max_id: u64,
    /// Partial and temporary files deleted.
    reaped: usize,
}

impl Exports {
    /// Lists what earlier runs left and sets the id counter. Before the workers start.
    pub(super) fn recover(&self) -> Result<(), Error> {
        let entries = crate::sys::list_in(&self.at).map_err(|e| Error::storage(&self.dir, "list the exports", e))?;
        let Scan { found, max_id, reaped } = self.scan(&entries);
        let fixed = self.relist(found);
        self.remove_unlisted(&entries);
        let next = self.read_next_id(max_id)?;
        self.lock().next_id = next;
        for id in fixed {
            self.save(id);
        }
        self.shared.startup.export_partials_deleted.store(reaped as u64, std::sync::atomic::Ordering::Relaxed);
        let removed = self.prune();
        let g = self.lock();
        let queued = g.records.iter().filter(|r| r.view.state == ExportState::Queued).count();
        if reaped > 0 || !g.records.is_empty() {
            log::info!(
                "exports: {} listed ({queued} queued again), {reaped} partial file(s) deleted, {removed} over budget removed",
                g.records.len()
            );
        }
        Ok(())
    }

    /// Reads the records, deletes partial files and unreadable records, and notes every id.
    fn scan(&self, entries: &[(String, EntryKind)]) -> Scan {
        let mut scan = Scan { found: Vec::new(), max_id: 0, reaped: 0 };
        let mut odd: Vec<&str> = Vec::new();
        for (name, kind) in entries {
            let name = name.as_str();
            // Every name that is an id counts (an unreadable record, a data or part file, a
            // planted link): no id seen on disk is handed out again.
            if let Some(id) = name.split('.').next().and_then(|n| n.parse::<u64>().ok()) {
                scan.max_id = scan.max_id.max(id);
            }
            if *kind != EntryKind::File {
                // A link, directory or FIFO: not camjobd's; never read, followed or deleted.
                odd.push(name);
                continue;
            }
            if name.ends_with(".part") || name.ends_with(".tmp") {
                let _ = crate::sys::remove_in(&self.at, name);
                scan.reaped += 1;
                continue;
            }
            if let Some(id) = name.strip_suffix(".json").and_then(|s| s.parse::<u64>().ok()) {
                let read = crate::sys::open_regular_in(&self.at, name).and_then(|mut f| {
                    let mut b = Vec::new();
                    io::Read::read_to_end(&mut f, &mut b).map(|_| b)
                });
                match read.ok().and_then(|b| serde_json::from_slice::<ExportView>(&b).ok()) {
                    Some(v) if v.id == id => scan.found.push(v),
                    _ => {
                        log::warn!("exports: {} is unreadable; removed it", self.dir.join(name).display());
                        let _ = crate::sys::remove_in(&self.at, name);
                    }
                }
            }
        }
        crate::store::report_left_alone(&self.shared.events, "", "storage.dir/exports", &odd);
        scan
    }

    /// Lists the records again, oldest first, settling the ones a crash cut short against
    /// their files. Returns the ids whose record changed (to be written back).
    fn relist(&self, mut found: Vec<ExportView>) -> Vec<u64> {
        let now = unix_now();
        found.sort_by_key(|v| v.id);
        let mut fixed = Vec::new();
        for mut v in found {
            let data = Self::file_name(v.id, v.kind);
            match (v.state, self.size_of(&data)) {
                (ExportState::Succeeded, Some(n)) => v.bytes = n,
                // Renamed into place but the crash came before the record said so: the file
                // is complete (it is renamed only after its last byte).
                (ExportState::Running, Some(n)) => {
                    v.succeed(n, now);
                    fixed.push(v.id);
                }
                (ExportState::Running, None) => {
                    let why = "camjobd stopped during this export; the partial file was deleted";
                    v.end(Trigger::Interrupted, "interrupted", Some(why.into()), now);
                    fixed.push(v.id);
                }
                (ExportState::Queued, _) => {}
                (ExportState::Succeeded, None) => {
                    log::warn!("exports: the file of export {} is gone; forgetting it", v.id);
                    let _ = crate::sys::remove_in(&self.at, &format!("{}.json", v.id));
                    continue;
                }
                (ExportState::Failed | ExportState::Cancelled, _) => {
                    let _ = crate::sys::remove_in(&self.at, &data);
                }
            }
            let mut g = self.lock();
            if g.is_full() {
                // More on disk than the config now allows (it was lowered): the oldest go.
                if let Some(old) = g.records.pop_front() {
                    drop(g);
                    self.remove_files(&old.view);
                    g = self.lock();
                }
            }
            g.records.push_back(Record { view: v, cancel: Arc::default() });
        }
        fixed
    }

    /// Deletes data files nobody lists (their record was deleted by hand): they only take
    /// budget.
    fn remove_unlisted(&self, entries: &[(String, EntryKind)]) {
        for (name, kind) in entries {
            let Some((id, ext)) = name.split_once('.') else { continue };
            let Ok(id) = id.parse::<u64>() else { continue };
            let listed = self.lock().records.iter().any(|r| r.view.id == id);
            if *kind == EntryKind::File && matches!(ext, "tar" | "gif") && !listed {
                log::warn!("exports: {} has no record; removed it", self.dir.join(name).display());
                let _ = crate::sys::remove_in(&self.at, name);
            }
        }
    }

    /// The next export id: the counter on disk, never at or below `max_id`, and far past it
    /// when the counter is damaged.
    fn read_next_id(&self, max_id: u64) -> Result<u64, Error> {
        let read = crate::sys::open_regular_in(&self.at, NEXT_ID).and_then(io::read_to_string);
        let damaged = |what: &str| {
            let next = max_id.saturating_add(1).saturating_add(ID_GAP_AFTER_DAMAGE);
            log::warn!("exports: next_id is {what}; continuing at {next} so that no id comes back");
            next
        };
        Ok(match read {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(n) => n.max(max_id.saturating_add(1)),
                Err(_) => damaged(&format!("damaged ({} bytes that are not a number)", text.len())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => max_id.saturating_add(1),
            // A link or FIFO planted in its place: never read; replaced at the next export.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.kind() == io::ErrorKind::InvalidData => {
                damaged("not a regular file (a link or something planted there)")
            }
            Err(e) => return Err(Error::storage(&self.dir.join(NEXT_ID), "read the export id counter", e)),
        })
    }
}
