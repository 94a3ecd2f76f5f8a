//! Durable file operations: every rename and new file is followed by a directory fsync, info files are
//! replaced atomically (DESIGN §5).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StorageError};

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Creates `dir` and its missing parents, and makes each new entry durable in its parent.
pub(crate) fn create_dirs(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    fs::create_dir_all(dir).at(dir)?;
    for created in missing.iter().rev() {
        sync_dir(parent(created))?;
    }
    Ok(())
}

/// Replaces `path` with `contents`: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StorageError> {
    let dir = parent(path);
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).at(&tmp)?;
    file.write_all(contents).at(&tmp)?;
    file.sync_all().at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    sync_dir(dir)
}

/// Renames and makes both directories' entries durable.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).at(from)?;
    sync_dir(parent(to))?;
    if parent(from) != parent(to) {
        sync_dir(parent(from))?;
    }
    Ok(())
}

pub(crate) fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Reads a decimal number written by [`write_atomic`]; `None` when the file does not exist.
pub(crate) fn read_u64_file(path: &Path) -> Result<Option<u64>, StorageError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            text.trim().parse::<u64>().map(Some).map_err(|e| {
                StorageError::Invalid(format!("{}: not a number ({e}): {text:?}", path.display()))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(path),
    }
}
