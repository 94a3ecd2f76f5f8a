//! The single-instance lock: `flock` on `<data_root>/storage/writer.lock`, holding the owner's pid.
//!
//! Two writers appending to one raw log would interleave segments and sequence numbers; the journal's own
//! `LOCK` would refuse the second one too, but only after it had started, and without saying who holds it.
//! This lock is taken first, and its refusal names the file and the pid written in it. The lock goes with
//! the process (a `kill -9` releases it), so a stale file never blocks a restart.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The most of a lock file read to find the holder's pid.
const LOCK_FILE_BYTES_MAX: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{} is locked by another logtank-writer ({}): one writer per data root; stop it first",
        path.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held for the writer's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// Creates the file (and its directory) if needed, locks it without waiting, and writes our pid in it.
    pub fn acquire(path: &Path) -> Result<WriterLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    holder: read_pid(&mut file),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(WriterLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(LOCK_FILE_BYTES_MAX).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a second acquire is refused naming the file and our pid, and that dropping the lock frees it.
    #[test]
    fn second_acquire_names_the_holder() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("storage/writer.lock");
        let first = WriterLock::acquire(&path).unwrap_or_else(|e| panic!("{e}"));
        let err = WriterLock::acquire(&path)
            .expect_err("second lock taken")
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        let again = WriterLock::acquire(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.path(), path);
    }
}
