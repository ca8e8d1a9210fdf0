//! The event journal: the event log appended to `storage.dir/journal/events-<n>.jsonl`, one
//! JSON object per line, written in batches (SD cards wear per write, not per byte), rotated
//! by size with a bounded number of files. The `store` thread pulls new events from the
//! in-memory ring, so nobody else ever waits for this file.
//!
//! Reading skips lines that do not parse — a power cut can leave a torn last line — and the
//! writer starts a fresh line after one, so the damage stays on that line.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::JournalConfig;
use crate::events::{Event, EventKind, EventLog, MAX_PAGE};

/// The journal directory inside `storage.dir`.
pub fn dir(storage: &Path) -> PathBuf {
    storage.join("journal")
}

/// Journal files are numbered up to this (a billion rotations); a planted name beyond it is
/// ignored, so the number can always go up.
const MAX_NUMBER: u32 = 999_999_999;

fn file_name(n: u32) -> String {
    format!("events-{n:06}.jsonl")
}

/// Journal file numbers present, ascending, and whether each is a regular file (a link or
/// anything else planted under a journal name is never read, appended to or deleted).
fn numbers(at: &File) -> Vec<(u32, bool)> {
    let mut v: Vec<(u32, bool)> = crate::sys::list_in(at)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, kind)| {
            let n: u32 = name.strip_prefix("events-")?.strip_suffix(".jsonl")?.parse().ok()?;
            // Only names camjobd writes: `events-7.jsonl` beside `events-000007.jsonl` would
            // be one number for two files.
            (file_name(n) == name && n <= MAX_NUMBER).then_some((n, kind == crate::sys::EntryKind::File))
        })
        .collect();
    v.sort_unstable();
    v
}

/// Opens (creating it if needed) `storage/journal`, refusing a link in its place.
fn open_dir(storage: &Path, create: bool) -> io::Result<File> {
    if create {
        fs::create_dir_all(storage)?;
        crate::sys::mkdir_in(&File::open(storage)?, "journal")?;
    }
    crate::sys::open_dir_beneath(storage, Path::new("journal"))
}

/// Appends events in batches.
pub struct Journal {
    /// `storage.dir/journal`, open.
    at: File,
    config: JournalConfig,
    fsync: bool,
    /// The file being appended to, and its number and size.
    file: File,
    number: u32,
    size: u64,
    /// The seq of the last event written (events are numbered per process).
    last_seq: u64,
    last_flush: Instant,
    /// Reused for every batch.
    buf: Vec<u8>,
    page: Vec<Event>,
}

impl Journal {
    /// Opens the newest journal file for appending (or the first one).
    pub fn open(storage: &Path, config: JournalConfig, fsync: bool) -> io::Result<Journal> {
        let at = open_dir(storage, true)?;
        // The newest file, or the one after it when that is not a regular file.
        let number = match numbers(&at).last() {
            Some(&(n, true)) => n,
            Some(&(n, false)) => n + 1,
            None => 1,
        };
        let (file, size) = open_append(&at, &file_name(number))?;
        // Both buffers written once now, so that their memory is resident from the start
        // rather than page by page as batches reach new sizes (docs/testing.md, "Soak").
        let mut buf = vec![b' '; 64 * 1024];
        buf.clear();
        let mut page = vec![crate::events::filler(); MAX_PAGE];
        page.clear();
        Ok(Journal { at, config, fsync, file, number, size, last_seq: 0, last_flush: Instant::now(), buf, page })
    }

    /// Writes pending events when a batch is due: `batch_events` are waiting, or the oldest
    /// has waited `batch_ms`, or `force` (shutdown). Returns the events written.
    pub fn flush(&mut self, events: &EventLog, force: bool) -> io::Result<usize> {
        let waiting = events.newest().saturating_sub(self.last_seq);
        // State changes are rare and are what a restart needs: they do not wait for a batch.
        let due = waiting >= self.config.batch_events as u64
            || events.last_state_seq() > self.last_seq
            || (waiting > 0 && (force || self.last_flush.elapsed() >= Duration::from_millis(self.config.batch_ms)));
        if !due {
            return Ok(0);
        }
        self.last_flush = Instant::now();
        self.buf.clear();
        self.page.clear();
        let mut written = 0;
        loop {
            let before = self.last_seq;
            self.page.clear();
            events.page(before, MAX_PAGE, &mut self.page);
            if self.page.is_empty() {
                break;
            }
            if let Some(first) = self.page.first() {
                if first.seq > before + 1 && before > 0 {
                    // The ring overwrote events before they were written: say so in the file.
                    let lost = first.seq - before - 1;
                    let note = serde_json::json!({"seq": before + 1, "at": first.at, "kind": EventKind::Info,
                        "camera": "", "job_id": null, "state": null,
                        "message": format!("{lost} events were overwritten in memory before they reached the journal")});
                    serde_json::to_writer(&mut self.buf, &note).map_err(io::Error::other)?;
                    self.buf.push(b'\n');
                }
            }
            for e in &self.page {
                serde_json::to_writer(&mut self.buf, e).map_err(io::Error::other)?;
                self.buf.push(b'\n');
                self.last_seq = e.seq;
                written += 1;
            }
        }
        self.file.write_all(&self.buf)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        self.size += self.buf.len() as u64;
        if self.size >= self.config.max_file_bytes {
            self.rotate()?;
        }
        Ok(written)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.number >= MAX_NUMBER {
            // Only a planted name gets here: begin again at 1 without the old files, whose
            // numbers would sort after the new ones.
            log::warn!("journal: file numbers are used up; starting again at 1 without the old files");
            for (n, regular) in numbers(&self.at) {
                if regular {
                    let _ = crate::sys::remove_in(&self.at, &file_name(n));
                }
            }
            self.number = 0;
        }
        self.number += 1;
        let (file, size) = open_append(&self.at, &file_name(self.number))?;
        self.file = file;
        self.size = size;
        let all: Vec<u32> = numbers(&self.at).into_iter().filter(|(_, regular)| *regular).map(|(n, _)| n).collect();
        let excess = all.len().saturating_sub(self.config.max_files);
        for n in &all[..excess] {
            let _ = crate::sys::remove_in(&self.at, &file_name(*n));
        }
        Ok(())
    }
}

/// Opens for appending; after a torn last line, starts a new line first.
fn open_append(at: &File, name: &str) -> io::Result<(File, u64)> {
    let mut file = crate::sys::open_append_in(at, name)?;
    let mut size = file.metadata()?.len();
    if size > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            size += 1;
        }
    }
    Ok((file, size))
}

/// Every event in the journal, oldest first, and the number of lines that did not parse.
pub fn read(storage: &Path) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut bad = 0;
    let Ok(at) = open_dir(storage, false) else { return (events, bad) };
    for (n, regular) in numbers(&at) {
        if !regular {
            log::warn!("journal: {} is not a regular file (a link or something planted there); not read", file_name(n));
            continue;
        }
        let read = crate::sys::open_regular_in(&at, &file_name(n)).and_then(|mut f| {
            let mut b = Vec::new();
            f.read_to_end(&mut b).map(|_| b)
        });
        let Ok(text) = read else { continue };
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Event>(line) {
                Ok(e) => events.push(e),
                Err(_) => bad += 1,
            }
        }
    }
    (events, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::JobState;

    /// A fresh directory for one test (removed when the guard drops).
    fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
        let guard = tempfile::Builder::new().prefix(&format!("camjobd-journal-{name}")).tempdir().unwrap();
        let p = guard.path().join("journal");
        (guard, p)
    }

    fn cfg() -> JournalConfig {
        JournalConfig { batch_ms: 60_000, batch_events: 10, max_file_bytes: 4096, max_files: 3 }
    }

    #[test]
    fn batches_rotation_and_torn_lines() {
        let (_guard, dir) = tmp("batch");
        let log = EventLog::default();
        let mut j = Journal::open(&dir, cfg(), false).unwrap();
        for i in 0..9 {
            log.push(EventKind::Info, "cam0", None, None, format_args!("event {i}"));
        }
        assert_eq!(j.flush(&log, false).unwrap(), 0, "9 < batch_events and batch_ms not elapsed");
        log.push(EventKind::Info, "cam0", None, None, format_args!("event 9"));
        assert_eq!(j.flush(&log, false).unwrap(), 10, "batch_events reached");
        log.push_state("cam0", 7, JobState::Failed, Some("gone"), format_args!("job 7 FAILED"));
        assert_eq!(j.flush(&log, false).unwrap(), 1, "a state change is written at once");
        let (events, bad) = read(&dir);
        assert_eq!((events.len(), bad), (11, 0));
        assert_eq!(events[10].reason.as_deref(), Some("gone"));
        assert_eq!(events[10].state, Some(JobState::Failed));

        // A torn last line is skipped, and the next batch starts on a line of its own.
        let last = dir.join("journal").join(file_name(j.number));
        fs::OpenOptions::new().append(true).open(&last).unwrap().write_all(b"{\"seq\": 11, \"at\": 1.0, \"ki").unwrap();
        drop(j);
        let mut j = Journal::open(&dir, cfg(), false).unwrap();
        log.push(EventKind::Info, "cam0", None, None, format_args!("after the cut"));
        j.last_seq = 11;
        assert_eq!(j.flush(&log, true).unwrap(), 1);
        let (events, bad) = read(&dir);
        assert_eq!((events.len(), bad), (12, 1));
        assert_eq!(events[11].message.as_str(), "after the cut");

        // Rotation keeps at most max_files files.
        for i in 0..400 {
            log.push(EventKind::Info, "cam0", None, None, format_args!("filler {i} {}", "x".repeat(60)));
            j.flush(&log, true).unwrap();
        }
        let n = numbers(&j.at);
        assert!(n.len() <= 3, "{n:?}");
        let total: u64 =
            n.iter().map(|(k, _)| fs::metadata(dir.join("journal").join(file_name(*k))).unwrap().len()).sum();
        assert!(total <= 3 * (4096 + 512), "{total}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overwritten_events_are_noted() {
        let (_guard, dir) = tmp("lost");
        let log = EventLog::default();
        let mut j = Journal::open(&dir, cfg(), false).unwrap();
        log.push(EventKind::Info, "", None, None, format_args!("first"));
        j.flush(&log, true).unwrap();
        for i in 0..(crate::events::EVENT_CAPACITY + 20) {
            log.push(EventKind::Info, "", None, None, format_args!("e{i}"));
        }
        j.flush(&log, true).unwrap();
        let (events, _) = read(&dir);
        assert!(events.iter().any(|e| e.message.contains("20 events were overwritten")), "{:?}", events.get(1));
        fs::remove_dir_all(&dir).unwrap();
    }
}
