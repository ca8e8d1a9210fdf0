//! The snapshot files on disk against the index: the start-up scan (temp and empty files
//! deleted, links and odd entries left alone and named) and files deleted outside camjobd.

use std::io;
use std::path::Path;

use crate::index::StoredSnapshot;
use crate::status::{CameraShared, Shared};

/// A listed snapshot's file is gone: deleted outside camjobd (by hand, a cleaner script, a
/// failing card). Drops it from the index, and every other listed file of its day that is gone
/// too, so the counters and lists are right at once, with one event. False when it was not
/// listed any more: retention deletes the entry before the file, so that is the normal race.
pub fn forget_missing(events: &crate::events::EventLog, storage_dir: &Path, cam: &CameraShared, seq: u64) -> bool {
    let Some(first) = cam.stored.remove(seq) else { return false };
    let (mut n, mut bytes) = (1u64, first.bytes);
    let mut same_day = Vec::new();
    cam.stored.of_day(first.day, &mut same_day);
    let day_rel = Path::new(&cam.name).join(crate::index::day_name(first.day).as_str());
    let day_dir = crate::sys::open_dir_beneath(storage_dir, &day_rel);
    for s in same_day {
        let gone = match &day_dir {
            Ok(d) => {
                crate::sys::stat_in(d, &format!("{}.jpg", s.seq)).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            }
            // The whole day directory is gone.
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if gone {
            if let Some(s) = cam.stored.remove(s.seq) {
                n += 1;
                bytes += s.bytes;
            }
        }
    }
    events.error(&cam.name, format_args!(
            "{n} snapshot(s) of {} ({bytes} bytes, seq {seq} among them) were deleted outside camjobd; dropped from the list",
            crate::index::day_name(first.day)
        ),
    );
    true
}

/// One error event naming (the first few of) the links and other odd entries found in `place`
/// and left alone; nothing when there are none.
pub fn report_left_alone(events: &crate::events::EventLog, camera: &str, place: &str, odd: &[impl AsRef<str>]) {
    if odd.is_empty() {
        return;
    }
    let names: Vec<&str> = odd.iter().take(5).map(AsRef::as_ref).collect();
    events.error(camera, format_args!(
            "{} entr(ies) in {place} are links or not regular files and were left alone (not listed, served or deleted): {}",
            odd.len(),
            names.join(", ")
        ),
    );
}

/// Lists the snapshot files left by earlier runs into each camera's index, deleting temp
/// files (a write cut short), empty files (a power cut before writeback) and files beyond
/// `max_files`. Returns the next snapshot seq per camera, so seqs (and ETags) never repeat.
pub fn recover(shared: &Shared) -> Vec<u64> {
    let dir = &shared.config.storage.dir;
    let events = &shared.events;
    shared
        .cameras
        .iter()
        .map(|cam| if cam.config.store.enabled { recover_camera(dir, cam, events) } else { 1 })
        .collect()
}

fn recover_camera(dir: &Path, cam: &CameraShared, events: &crate::events::EventLog) -> u64 {
    use crate::sys::{list_in, open_dir_in, remove_dir_in, remove_in, stat_in, EntryKind};
    let now = crate::clock::unix_now();
    let mut found: Vec<StoredSnapshot> = Vec::new();
    let (mut temps, mut empties) = (0u64, 0u64);
    // Links and other odd entries (planted, or left by another program): never entered,
    // listed or deleted; named in one event. Everything is listed, examined and deleted
    // relative to directory descriptors opened without following a link.
    let mut odd: Vec<String> = Vec::new();
    let root = match crate::sys::open_dir_beneath(dir, Path::new(&cam.name)) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(_) => {
            odd.push(cam.name.clone());
            None
        }
    };
    let days = root.as_ref().and_then(|r| list_in(r).ok()).unwrap_or_default();
    for (name, kind) in days {
        let Some(day) = crate::index::parse_day(&name) else { continue };
        let root = root.as_ref().expect("listed from it");
        let day_dir = match kind {
            EntryKind::Dir => open_dir_in(root, &name),
            _ => Err(io::Error::from_raw_os_error(libc::ELOOP)),
        };
        let Ok(day_dir) = day_dir else {
            odd.push(format!("{}/{name}", cam.name));
            continue;
        };
        for (fname, kind) in list_in(&day_dir).unwrap_or_default() {
            if kind != EntryKind::File {
                odd.push(format!("{}/{name}/{fname}", cam.name));
                continue;
            }
            if fname.ends_with(".tmp") {
                let _ = remove_in(&day_dir, &fname);
                temps += 1;
                continue;
            }
            let Some(seq) = fname.strip_suffix(".jpg").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let Ok(meta) = stat_in(&day_dir, &fname) else { continue };
            if meta.kind != EntryKind::File {
                continue;
            }
            if meta.len == 0 {
                let _ = remove_in(&day_dir, &fname);
                empties += 1;
                continue;
            }
            found.push(StoredSnapshot {
                seq,
                // A file dated in the future (the clock was ahead when it was written, then
                // corrected) counts as written now: it ages out instead of staying forever.
                captured_at: meta.mtime.min(now),
                mono_ms: crate::index::FOUND_AT_START,
                bytes: meta.len,
                width: 0,
                height: 0,
                change: None,
                day,
            });
        }
        // A day emptied by a crash mid-retention.
        let _ = remove_dir_in(root, &name);
    }
    found.sort_by_key(|s| s.seq);
    let extra = found.len().saturating_sub(cam.stored.capacity());
    for s in &found[..extra] {
        let _ = crate::sys::remove_beneath(dir, &crate::index::snapshot_rel(&cam.name, s.day, s.seq));
    }
    report_left_alone(events, &cam.name, "storage.dir", &odd);
    for s in &found[extra..] {
        let _ = cam.stored.push(*s);
    }
    let _ = cam.store.at_start.set(crate::status::AtStart {
        found: (found.len() - extra) as u64,
        newest_seq: found.last().map_or(0, |s| s.seq),
        temp_files_removed: temps,
        empty_files_removed: empties,
        over_max_files_removed: extra as u64,
    });
    if temps + empties + found.len() as u64 > 0 {
        log::info!(
            "{}: found {} snapshots on disk (newest seq {}); removed {temps} temp files, {empties} empty files, {extra} beyond max_files",
            cam.name,
            found.len() - extra,
            found.last().map_or(0, |s| s.seq)
        );
    }
    found.last().map_or(1, |s| s.seq + 1)
}
