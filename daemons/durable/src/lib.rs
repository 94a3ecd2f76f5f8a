//! `logtank-durable`: the steps that make a file or a directory entry survive a crash, written once (DESIGN
//! §5, ARCHITECTURE "Durability"). The journal, the storage layer, coordd's snapshots, the indexes' fence
//! file and `logtank sync` all use these instead of their own copies.
//!
//! What each step guarantees once it returned `Ok`, on a POSIX file system that honours fsync:
//! - [`fsync_dir`]: the directory's entries (files created, renamed or removed in it) are durable.
//! - [`create_dir_all_durably`]: the directory exists, and so does every component it had to create, each
//!   one durable in its parent.
//! - [`write_atomically`] (and [`AtomicFile`] for contents written piecewise): the file holds exactly the new
//!   contents, durably; a crash at any moment leaves either the old file or the new one, never a mix. The
//!   new contents are written to [`tmp_path`] (`<path>.tmp`), fsynced, renamed over `path`, and the directory
//!   fsynced.
//! - [`rename_durably`]: the rename is durable in both directories.
//!
//! Errors: one [`DurableError`], naming the path the failed step concerned (the temporary file for its
//! writes and fsync, the destination for a rename, the directory for a directory fsync). Each caller maps it
//! into its own error type; its message is `<path>: <io error>`, as the callers' own IO variants read.
//!
//! Deliberately absent: unsafe code, `O_DIRECT`, `fdatasync` (metadata must be durable too here; the
//! journal's data path does its own), and any retry (a failed fsync leaves the page cache in an unknown
//! state: the caller reports it, and the daemon stops or the operation is redone from the start).
#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A failed durable-file step: the path it concerned and the operating system's error.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct DurableError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl DurableError {
    fn at(path: &Path) -> impl FnOnce(io::Error) -> DurableError + '_ {
        move |source| DurableError {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The kind of the underlying IO error (e.g. `NotFound`), for callers that decide on it.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// For callers whose functions return `io::Result`: the kind is kept, the message names the path.
impl From<DurableError> for io::Error {
    fn from(e: DurableError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// The directory `path` is an entry of; `.` for a bare relative name (`Path::parent` gives "" there, which
/// cannot be opened).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `<path>.tmp`: where [`write_atomically`] and [`AtomicFile`] write before the rename. Appended rather
/// than replacing the extension, so `a.info` and `a.state` never share a temporary file.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DurableError::at(dir))
}

/// Creates `dir` and its missing parents, and makes each created entry durable in its parent (the parent of
/// the topmost one included). Nothing is fsynced when `dir` already exists.
pub fn create_dir_all_durably(dir: &Path) -> Result<(), DurableError> {
    if dir.is_dir() {
        return Ok(());
    }
    // The components that do not exist yet, deepest first; each one's parent gets a new entry.
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    fs::create_dir_all(dir).map_err(DurableError::at(dir))?;
    for created in missing.iter().rev() {
        fsync_dir(parent_dir(created))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes`: written to `<path>.tmp`, fsynced, renamed over `path`, the directory
/// fsynced. The directory must exist.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(DurableError::at(file.tmp_path()))?;
    file.commit()
}

/// Renames `from` to `to` and makes the rename durable: the destination's directory is fsynced, and the
/// source's too when it is another one (the entry left it).
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), DurableError> {
    fs::rename(from, to).map_err(DurableError::at(to))?;
    fsync_dir(parent_dir(to))?;
    if parent_dir(from) != parent_dir(to) {
        fsync_dir(parent_dir(from))?;
    }
    Ok(())
}

/// A file that replaces `path` atomically when [`AtomicFile::commit`] returns: for contents too large to
/// build in memory first (coordd's snapshots). It writes to `<path>.tmp` (a leftover of a crash under that
/// name is truncated); dropped without a commit, it removes the temporary file and `path` is untouched.
///
/// Writes go straight to the file: wrap it in a `BufWriter` for many small writes.
#[derive(Debug)]
pub struct AtomicFile {
    /// `None` once committed, so `Drop` knows there is nothing to clean up.
    file: Option<File>,
    path: PathBuf,
    tmp: PathBuf,
}

impl AtomicFile {
    /// Creates (or truncates) `<path>.tmp`. The directory must exist.
    pub fn create(path: &Path) -> Result<AtomicFile, DurableError> {
        let tmp = tmp_path(path);
        let file = File::create(&tmp).map_err(DurableError::at(&tmp))?;
        Ok(AtomicFile {
            file: Some(file),
            path: path.to_path_buf(),
            tmp,
        })
    }

    /// The temporary file being written, for the caller's error messages.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The file this one replaces once committed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs the temporary file, renames it over the target and fsyncs the directory.
    pub fn commit(mut self) -> Result<(), DurableError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let synced = file.sync_all().map_err(DurableError::at(&self.tmp));
        drop(file);
        if let Err(e) = synced {
            self.file_gone();
            return Err(e);
        }
        if let Err(e) = fs::rename(&self.tmp, &self.path).map_err(DurableError::at(&self.path)) {
            self.file_gone();
            return Err(e);
        }
        fsync_dir(parent_dir(&self.path))
    }

    /// Removes the temporary file of a write that will not be committed.
    fn file_gone(&self) {
        let _ = fs::remove_file(&self.tmp);
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the atomic file was already committed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file()?.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            self.file_gone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    // Proves an atomic write creates, then replaces, the whole file and leaves no temporary file behind.
    #[test]
    fn write_atomically_creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dealer.next_seq.info");
        write_atomically(&path, b"17\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"17\n");
        write_atomically(&path, b"5\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"5\n");
        assert_eq!(names(dir.path()), ["dealer.next_seq.info"]);
    }

    // Proves the temporary name is the whole name plus `.tmp`, so two files differing only in their extension
    // never write through the same temporary file.
    #[test]
    fn tmp_path_appends() {
        assert_eq!(tmp_path(Path::new("/d/a.info")), Path::new("/d/a.info.tmp"));
        assert_eq!(tmp_path(Path::new("fenced")), Path::new("fenced.tmp"));
        assert_ne!(tmp_path(Path::new("a.x")), tmp_path(Path::new("a.y")));
    }

    // Proves a failed step names its path: the temporary file when the directory is missing, the directory
    // for a directory fsync, and the kind survives the conversion into io::Error.
    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = write_atomically(&missing.join("f"), b"x").unwrap_err();
        assert_eq!(e.path, missing.join("f.tmp"));
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = fsync_dir(&missing).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(
            e.to_string().starts_with(&format!("{}: ", missing.display())),
            "{e}"
        );
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        assert!(io.to_string().contains("nope"), "{io}");
    }

    // Proves every missing component is created, an existing directory is left alone, and a file in the way
    // is an error naming the directory asked for.
    #[test]
    fn create_dir_all_durably_creates_missing_components() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all_durably(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all_durably(&deep).unwrap();
        fs::write(dir.path().join("file"), b"").unwrap();
        let blocked = dir.path().join("file/sub");
        let e = create_dir_all_durably(&blocked).unwrap_err();
        assert_eq!(e.path, blocked);
    }

    // Proves a relative single-component path is fsynced through `.` rather than an unopenable "".
    #[test]
    fn parent_of_a_bare_name_is_the_current_directory() {
        assert_eq!(parent_dir(Path::new("fenced")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/d/f")), Path::new("/d"));
        fsync_dir(parent_dir(Path::new("fenced"))).unwrap();
    }

    // Proves a rename moves the file within and across directories, and a missing source is an error naming
    // the destination.
    #[test]
    fn rename_durably_moves() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("x"), b"1").unwrap();
        rename_durably(&a.join("x"), &a.join("y")).unwrap();
        rename_durably(&a.join("y"), &b.join("y")).unwrap();
        assert_eq!(fs::read(b.join("y")).unwrap(), b"1");
        assert!(names(&a).is_empty());
        let e = rename_durably(&a.join("x"), &b.join("z")).unwrap_err();
        assert_eq!(e.path, b.join("z"));
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    // Proves an atomic file written piecewise appears only at commit, and one dropped uncommitted leaves the
    // old contents and no temporary file.
    #[test]
    fn atomic_file_appears_at_commit_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.1");
        fs::write(&path, b"old").unwrap();
        let mut f = AtomicFile::create(&path).unwrap();
        assert_eq!(f.tmp_path(), dir.path().join("snapshot.1.tmp"));
        f.write_all(b"ne").unwrap();
        f.write_all(b"w").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        f.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");

        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"abandoned").unwrap();
        drop(f);
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["snapshot.1"]);
    }
}
