//! Durable process state in `storage.dir`. For now: the job id counter, so ids keep
//! increasing across restarts. Written atomically (temp file, fsync, rename, fsync of the
//! directory), so a power cut leaves either the old or the new counter, never a torn file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The job id state file, `storage.dir/state.json`.
pub struct StateFile {
    dir: PathBuf,
}

const NAME: &str = "state.json";
const TEMP: &str = "state.json.tmp";

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    next_job_id: u64,
}

impl StateFile {
    /// Creates `dir` if needed and reads the next job id (1 when there is no state yet).
    pub fn open(dir: &Path) -> Result<(StateFile, u64), Error> {
        fs::create_dir_all(dir).map_err(|e| Error::storage(dir, "create the data directory", e))?;
        // A temp file left by a crash is garbage: the rename never happened.
        let _ = fs::remove_file(dir.join(TEMP));
        let path = dir.join(NAME);
        let next = match fs::read(&path) {
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
            Err(e) => return Err(Error::storage(&path, "read the job id state", e)),
        };
        let file = StateFile { dir: dir.to_path_buf() };
        // Prove now, not at the first start command, that the directory is writable.
        file.save(next)?;
        Ok((file, next))
    }

    /// Records the next job id durably.
    pub fn save(&self, next_job_id: u64) -> Result<(), Error> {
        let tmp = self.dir.join(TEMP);
        let path = self.dir.join(NAME);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(serde_json::to_string(&State { next_job_id }).expect("plain struct").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| Error::storage(&path, "write the job id state", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_reopen_and_temp_files_are_removed() {
        let dir = std::env::temp_dir().join(format!("camjobd-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (f, next) = StateFile::open(&dir).unwrap();
        assert_eq!(next, 1);
        f.save(42).unwrap();
        fs::write(dir.join(TEMP), b"{\"next_job_").unwrap();
        let (_, next) = StateFile::open(&dir).unwrap();
        assert_eq!(next, 42);
        assert!(!dir.join(TEMP).exists());
        fs::write(dir.join(NAME), b"{oops").unwrap();
        let err = StateFile::open(&dir).err().unwrap().to_string();
        assert!(err.contains("corrupt"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
