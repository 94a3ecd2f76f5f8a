//! The single-instance locks of a data root: `flock` on `storage/writer.lock` (one logtank-writer) and
//! `storage/dealer.lock` (one logtank-indexes), each holding its owner's pid.
//!
//! Two writers appending to one raw log would interleave segments and sequence numbers; two readers would
//! deal the same raw segments twice and race each other's renames. The journal's own `LOCK` would refuse a
//! second writer too, but only after it had started, and without saying who holds it. A daemon takes its
//! lock before anything else, and the refusal names the file and the pid written in it. The lock goes with
//! the process (a `kill -9` releases it), so a stale file never blocks a restart.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::Layout;

/// The most of a lock file read to find the holder's pid.
const LOCK_FILE_BYTES_MAX: u64 = 64;

/// Who a lock is for: it names the file under `storage/` and the refusal a second instance gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRole {
    /// `storage/writer.lock`: the logtank-writer appending to the raw log.
    Writer,
    /// `storage/dealer.lock`: the logtank-indexes dealing the raw log and serving reads.
    Dealer,
}

impl LockRole {
    /// The daemon that takes this lock, as the refusal names it.
    pub fn daemon(self) -> &'static str {
        match self {
            LockRole::Writer => "logtank-writer",
            LockRole::Dealer => "logtank-indexes",
        }
    }

    /// The rule the lock enforces, as the refusal states it.
    pub fn rule(self) -> &'static str {
        match self {
            LockRole::Writer => "one writer per data root",
            LockRole::Dealer => "one reader per data root",
        }
    }
}

/// Held for the daemon's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct DataRootLock {
    _file: File,
    path: PathBuf,
}

impl Layout {
    /// The lock file of `role` under this data root.
    pub fn lock_path(&self, role: LockRole) -> PathBuf {
        match role {
            LockRole::Writer => self.writer_lock(),
            LockRole::Dealer => self.dealer_lock(),
        }
    }

    /// Takes `role`'s lock of this data root: [`DataRootLock::acquire`] on [`Layout::lock_path`].
    pub fn lock(&self, role: LockRole) -> Result<DataRootLock, StorageError> {
        DataRootLock::acquire(&self.lock_path(role), role)
    }
}

impl DataRootLock {
    /// Creates the file (and its directory) if needed, locks it without waiting, and writes our pid in it.
    /// A lock held elsewhere is [`StorageError::Locked`], naming the file and the holder's pid.
    pub fn acquire(path: &Path, role: LockRole) -> Result<DataRootLock, StorageError> {
        // Durably: the lock's directory is the data root's storage/, the parent of the raw log (a power cut
        // that forgot it took the first acknowledged batches with it, in the writer's power-cut test).
        if let Some(dir) = path.parent() {
            logtank_durable::create_dir_all_durably(dir)?;
        }
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .at(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: path.to_path_buf(),
                    daemon: role.daemon(),
                    rule: role.rule(),
                    holder: read_pid(&mut file),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).at(path),
        }
        file.set_len(0).at(path)?;
        file.seek(SeekFrom::Start(0)).at(path)?;
        writeln!(file, "{}", std::process::id()).at(path)?;
        Ok(DataRootLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    file.take(LOCK_FILE_BYTES_MAX).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a second lock on the same file is refused naming the file, the daemon and our pid, and that
    // dropping the lock frees it, for both roles.
    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let layout = Layout::new(dir.path());
        for (role, file, refusal) in [
            (
                LockRole::Writer,
                "storage/writer.lock",
                "is locked by another logtank-writer",
            ),
            (
                LockRole::Dealer,
                "storage/dealer.lock",
                "is locked by another logtank-indexes",
            ),
        ] {
            let path = dir.path().join(file);
            assert_eq!(layout.lock_path(role), path);
            let first = layout.lock(role).unwrap_or_else(|e| panic!("{e}"));
            let err = layout.lock(role).expect_err("second lock taken").to_string();
            assert!(err.contains(&format!("{}", path.display())), "{err}");
            assert!(err.contains(refusal), "{err}");
            assert!(err.contains(role.rule()), "{err}");
            assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
            drop(first);
            let again = layout.lock(role).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again.path(), path);
        }
    }
}
