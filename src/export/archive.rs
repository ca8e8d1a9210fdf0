//! The `archive` export: one POSIX tar (ustar, by the `tar` crate) holding the range's snapshot files byte for
//! byte, as `<camera>/<yyyy-mm-dd>/<seq>.jpg`, then `manifest.json` describing them.
//! Streamed through a 64 KiB buffer; the manifest is spooled to a scratch file (it can list
//! 100,000 snapshots), so memory does not depend on the range.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use super::{io_failed, Ended, Run};
use crate::index::day_name;

const COPY_BUF: usize = 64 * 1024;

/// Counts what goes through, so the budget can be checked without asking the file.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the archive into `file`; returns its size.
pub fn write(run: &mut Run<'_>, file: File) -> Result<u64, Ended> {
    let mut tar = tar::Builder::new(Counting { inner: BufWriter::with_capacity(COPY_BUF, file), n: 0 });
    let scratch = run.scratch("manifest").map_err(|e| io_failed("create a scratch file", &e))?;
    let mut manifest = BufWriter::new(&scratch);
    let head = serde_json::json!({
        "camjobd": env!("CARGO_PKG_VERSION"),
        "export": run.view.id,
        "camera": run.camera(),
        "from": run.view.from,
        "to": run.view.to,
        "created_at": run.view.created_at,
    });
    // The head object without its closing brace, then the files array, streamed.
    let head = serde_json::to_string(&head).expect("plain data");
    let spool = |e: io::Error| io_failed("write the manifest scratch file", &e);
    write!(manifest, "{},\"files\":[", &head[..head.len() - 1]).map_err(spool)?;
    let (mut done, mut missing) = (0u64, 0u64);
    let camera = run.camera().to_string();
    run.each(|run, _, s| {
        let f = match run.open(s) {
            Ok(f) => f,
            // Retention deleted it after the range was counted: listed as missing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing += 1;
                return run.progress(done, tar.get_ref().n);
            }
            Err(e) => return Err(io_failed(&format!("read snapshot {}", s.seq), &e)),
        };
        let len = f.metadata().map_err(|e| io_failed("read a snapshot's size", &e))?.len();
        let name = format!("{camera}/{}/{}.jpg", day_name(s.day), s.seq);
        let mut h = header(len, s.captured_at as u64);
        tar.append_data(&mut h, &name, Exact { file: f, left: len })
            .map_err(|e| io_failed(&format!("copy snapshot {} into the archive", s.seq), &e))?;
        let entry = serde_json::json!({
            "name": name, "seq": s.seq, "captured_at": s.captured_at, "bytes": len, "change": s.change,
        });
        let sep = if done == 0 { "" } else { "," };
        write!(manifest, "{sep}{entry}").map_err(spool)?;
        done += 1;
        run.progress(done, tar.get_ref().n)
    })?;
    if done == 0 {
        return Err(Ended::Failed("retention deleted every snapshot of the range before it could be read".into()));
    }
    writeln!(manifest, "],\"count\":{done},\"missing\":{missing}}}").map_err(spool)?;
    manifest.into_inner().map_err(|e| spool(e.into_error()))?;
    let mut m: &File = &scratch;
    m.seek(SeekFrom::Start(0)).map_err(spool)?;
    let len = m.metadata().map_err(spool)?.len();
    let write = |e: io::Error| io_failed("write the archive", &e);
    let mut h = header(len, crate::clock::unix_now() as u64);
    tar.append_data(&mut h, "manifest.json", Exact { file: m, left: len }).map_err(write)?;
    // The end of the archive (two zero blocks) is written by `into_inner`.
    let out = tar.into_inner().map_err(write)?;
    let size = out.n;
    run.progress(done, size)?;
    run.publish(done, size);
    let file = out.inner.into_inner().map_err(|e| write(e.into_error()))?;
    file.sync_all().map_err(|e| io_failed("sync the archive", &e))?;
    Ok(size)
}

/// Reads exactly `left` bytes: a file that shrank underneath is an error, not a short entry
/// (tar would pad it and the archive would lie about its size).
struct Exact<R> {
    file: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter while being read"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A ustar header for a regular file of `size` bytes (its name is set by the builder, which
/// adds a GNU long-name entry for a name over 100 bytes).
fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    let _ = h.set_username("camjobd");
    let _ = h.set_groupname("camjobd");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry named `name` with `data`, as `write` makes it, read back by the tar reader.
    fn round_trip(name: &str, data: &[u8]) -> (String, Vec<u8>, u64) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = header(data.len() as u64, 1_795_449_316);
        tar.append_data(&mut h, name, Exact { file: data, left: data.len() as u64 }).unwrap();
        let bytes = tar.into_inner().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut e = archive.entries().unwrap().next().unwrap().unwrap();
        let mut out = Vec::new();
        e.read_to_end(&mut out).unwrap();
        (e.path().unwrap().to_string_lossy().into_owned(), out, e.header().mtime().unwrap())
    }

    #[test]
    fn names_are_whole_even_over_100_bytes() {
        let (name, data, mtime) = round_trip("cam0/2026-11-23/42.jpg", b"jpeg bytes");
        assert_eq!((name.as_str(), &data[..], mtime), ("cam0/2026-11-23/42.jpg", &b"jpeg bytes"[..], 1_795_449_316));
        let long = format!("{}/2026-11-23/18446744073709551615.jpg", "c".repeat(90));
        assert!(long.len() > 100);
        assert_eq!(round_trip(&long, b"x").0, long, "not cut at 100 bytes");
    }

    #[test]
    fn a_file_that_shrank_is_an_error() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = header(10, 0);
        let e = tar.append_data(&mut h, "a.jpg", Exact { file: &b"short"[..], left: 10 }).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
