//! The single-instance lock: `flock` on `<data_root>/storage/dealer.lock`, holding the owner's pid.
//!
//! Two readers on one data root would deal the same raw segments twice and race each other's renames.
//! The lock is taken before anything else; its refusal names the file and the pid written in it. It goes
//! with the process (a `kill -9` releases it), so a stale file never blocks a restart.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The most of a lock file read to find the holder's pid.
const LOCK_FILE_BYTES_MAX: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{} is locked by another logtank-indexes ({}): one reader per data root; stop it first",
        path.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held for the daemon's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct DealerLock {
    _file: File,
    path: PathBuf,
}

impl DealerLock {
    /// Creates the file (and its directory) if needed, locks it without waiting, and writes our pid in it.
    pub fn acquire(path: &Path) -> Result<DealerLock, LockError> {
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
        Ok(DealerLock {
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
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(LOCK_FILE_BYTES_MAX).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a second lock on the same file is refused with the path and the holder's pid.
    #[test]
    fn second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage/dealer.lock");
        let first = DealerLock::acquire(&path).unwrap();
        let e = DealerLock::acquire(&path).unwrap_err().to_string();
        assert!(
            e.contains("dealer.lock is locked by another logtank-indexes"),
            "{e}"
        );
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        DealerLock::acquire(&path).unwrap();
    }
}
