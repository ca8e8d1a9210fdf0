//! The job id counter, `storage.dir/state.json`, written atomically (temp file, fsync,
//! rename, fsync of the directory): a power cut leaves either the old or the new counter.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The job id state file, `storage.dir/state.json`.
pub struct StateFile {
    /// `storage.dir`, open: the file is read and replaced in it without following a link.
    at: File,
    dir: PathBuf,
}

const NAME: &str = "state.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    next_job_id: u64,
}

impl StateFile {
    /// Creates `dir` if needed and reads the next job id (1 when there is no state yet).
    pub fn open(dir: &Path) -> Result<(StateFile, u64), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::storage(dir, "create the data directory", e))?;
        let at = File::open(dir).map_err(|e| Error::storage(dir, "open the data directory", e))?;
        // Temp files left by a crash are garbage: the rename never happened.
        for (name, _) in crate::sys::list_in(&at).unwrap_or_default() {
            if name.starts_with(NAME) && name.ends_with(".tmp") {
                let _ = crate::sys::remove_in(&at, &name);
            }
        }
        let path = dir.join(NAME);
        let read = crate::sys::open_regular_in(&at, NAME).and_then(|mut f| {
            let mut b = Vec::new();
            io::Read::read_to_end(&mut f, &mut b).map(|_| b)
        });
        let next = match read {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) => s.next_job_id.max(1),
                Err(e) => {
                    return Err(Error::Fatal(format!(
                        "{} is corrupt ({e}); move it away to reset job ids, or fix it by hand",
                        path.display()
                    )))
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => {
                return Err(Error::storage(&path, "read the job id state (it must be a regular file, not a link)", e))
            }
        };
        let file = StateFile { at, dir: dir.to_path_buf() };
        // Prove now, not at the first start command, that the directory is writable.
        file.save(next)?;
        Ok((file, next))
    }

    /// Records the next job id durably.
    pub fn save(&self, next_job_id: u64) -> Result<(), Error> {
        let state = serde_json::to_string(&State { next_job_id }).expect("plain struct");
        crate::sys::write_atomic_in(&self.at, NAME, state.as_bytes(), true)
            .map_err(|e| Error::storage(&self.dir.join(NAME), "write the job id state", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_reopen_and_temp_files_are_removed() {
        let guard = tempfile::tempdir().unwrap();
        let dir = guard.path().join("data");
        let (f, next) = StateFile::open(&dir).unwrap();
        assert_eq!(next, 1);
        f.save(42).unwrap();
        fs::write(dir.join("state.json.7.tmp"), b"{\"next_job_").unwrap();
        let (_, next) = StateFile::open(&dir).unwrap();
        assert_eq!(next, 42);
        assert!(!dir.join("state.json.7.tmp").exists());
        fs::write(dir.join(NAME), b"{oops").unwrap();
        let err = StateFile::open(&dir).err().unwrap().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
