//! The `archive` export: one POSIX tar (ustar) holding the range's snapshot files byte for
//! byte, as `<camera>/<yyyy-mm-dd>/<seq>.jpg`, then `manifest.json` describing them.
//! Streamed through a 64 KiB buffer; the manifest is spooled to a scratch file (it can list
//! 100,000 snapshots), so memory does not depend on the range.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use super::{io_failed, Ended, Run};
use crate::index::day_name;

/// tar works in 512-byte blocks.
const BLOCK: usize = 512;
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
    let mut out = Counting { inner: BufWriter::with_capacity(COPY_BUF, file), n: 0 };
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
    let mut buf = vec![0u8; COPY_BUF];
    let (mut done, mut missing) = (0u64, 0u64);
    let camera = run.camera().to_string();
    run.each(|run, _, s| {
        let mut f = match run.open(s) {
            Ok(f) => f,
            // Retention deleted it after the range was counted: listed as missing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing += 1;
                return run.progress(done, out.n);
            }
            Err(e) => return Err(io_failed(&format!("read snapshot {}", s.seq), &e)),
        };
        let len = f.metadata().map_err(|e| io_failed("read a snapshot's size", &e))?.len();
        let name = format!("{camera}/{}/{}.jpg", day_name(s.day), s.seq);
        let write = |e: io::Error| io_failed("write the archive", &e);
        out.write_all(&header(&name, len, s.captured_at as u64)).map_err(write)?;
        copy_exact(&mut f, &mut out, len, &mut buf).map_err(|e| io_failed(&format!("copy snapshot {}", s.seq), &e))?;
        out.write_all(&[0u8; BLOCK][..padding(len)]).map_err(write)?;
        let entry = serde_json::json!({
            "name": name, "seq": s.seq, "captured_at": s.captured_at, "bytes": len, "change": s.change,
        });
        let sep = if done == 0 { "" } else { "," };
        write!(manifest, "{sep}{entry}").map_err(spool)?;
        done += 1;
        run.progress(done, out.n)
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
    out.write_all(&header("manifest.json", len, crate::clock::unix_now() as u64)).map_err(write)?;
    copy_exact(&mut m, &mut out, len, &mut buf).map_err(write)?;
    out.write_all(&[0u8; BLOCK][..padding(len)]).map_err(write)?;
    // End of archive: two zero blocks.
    out.write_all(&[0u8; 2 * BLOCK]).map_err(write)?;
    let size = out.n;
    run.progress(done, size)?;
    run.publish(done, size);
    let file = out.inner.into_inner().map_err(|e| write(e.into_error()))?;
    file.sync_all().map_err(|e| io_failed("sync the archive", &e))?;
    Ok(size)
}

/// Copies exactly `len` bytes (a file that shrank underneath is an error, not a short entry).
fn copy_exact(from: &mut impl Read, to: &mut impl Write, len: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = from.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter while being read"));
        }
        to.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Zero bytes after an entry of `len` bytes up to the next block.
fn padding(len: u64) -> usize {
    (BLOCK - (len % BLOCK as u64) as usize) % BLOCK
}

/// A ustar header for a regular file. `name` fits in 100 bytes (camera names are at most
/// 32 characters; the rest is a date and a number).
pub fn header(name: &str, size: u64, mtime: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name.as_bytes()[..n]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..272].copy_from_slice(b"camjobd");
    h[297..304].copy_from_slice(b"camjobd");
    // The checksum is computed with its own field as spaces.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h
}

/// Zero-padded octal digits followed by a NUL, filling `field`.
fn octal(field: &mut [u8], mut v: u64) {
    let digits = field.len() - 1;
    for i in (0..digits).rev() {
        field[i] = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(h: &[u8], r: std::ops::Range<usize>) -> u64 {
        let s = std::str::from_utf8(&h[r]).unwrap().trim_end_matches(['\0', ' ']);
        u64::from_str_radix(s, 8).unwrap()
    }

    #[test]
    fn headers_follow_ustar() {
        let h = header("cam0/2026-11-23/42.jpg", 1000, 1_795_449_316);
        assert_eq!(&h[..22], b"cam0/2026-11-23/42.jpg");
        assert_eq!(h[22], 0);
        assert_eq!(field(&h, 124..136), 1000);
        assert_eq!(field(&h, 136..148), 1_795_449_316);
        assert_eq!(&h[257..263], b"ustar\0");
        let mut blank = h;
        blank[148..156].fill(b' ');
        let sum: u64 = blank.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(field(&h, 148..156), sum);
    }

    #[test]
    fn entries_pad_to_blocks() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(1000), 24);
    }
}
