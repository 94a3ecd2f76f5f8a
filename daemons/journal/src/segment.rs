//! Segment files on disk: naming, creating (preallocated, header fsynced, renamed into place, directory fsynced),
//! listing, and removing.
//!
//! A segment is named after the sequence number of its first record, zero-padded so that names sort in order:
//! `00000000000000000001.journal`. A segment being created is `….journal.tmp` until its header is durable; a
//! leftover `.tmp` after a crash never held a record and is removed at open.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::frame::SegmentHeader;
use crate::{Error, ResultExt};

const SEGMENT_SUFFIX: &str = ".journal";
const TMP_SUFFIX: &str = ".journal.tmp";

/// One segment file of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub first_seq: u64,
    pub path: PathBuf,
}

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Lists the segments in `dir`, oldest first, removing leftover temporary files.
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentMeta>, Error> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).with_path(dir)? {
        let entry = entry.with_path(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            log::warn!("removing {}: a segment whose creation a crash interrupted", entry.path().display());
            fs::remove_file(entry.path()).with_path(entry.path())?;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else { continue };
        match stem.parse::<u64>() {
            Ok(first_seq) if stem.len() == 20 => segments.push(SegmentMeta { first_seq, path: entry.path() }),
            _ => log::warn!("ignoring {}: not a journal segment name", entry.path().display()),
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Creates a preallocated segment whose header is durable and whose name is durable in `dir`.
pub(crate) fn create(dir: &Path, first_seq: u64, size_bytes: u64) -> Result<(SegmentMeta, File), Error> {
    let path = segment_path(dir, first_seq);
    let tmp = dir.join(format!("{first_seq:020}{TMP_SUFFIX}"));
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp).with_path(&tmp)?;
    preallocate(&file, size_bytes).with_path(&tmp)?;
    file.write_all_at(&SegmentHeader { first_seq }.encode(), 0).with_path(&tmp)?;
    file.sync_all().with_path(&tmp)?;
    fs::rename(&tmp, &path).with_path(&path)?;
    sync_dir(dir)?;
    Ok((SegmentMeta { first_seq, path }, file))
}

/// Reserves `size_bytes` for the file so appends do not fail for lack of space midway and blocks stay
/// contiguous. Filesystems without fallocate (tmpfs supports it; some FUSE ones do not) just grow the file.
pub(crate) fn preallocate(file: &File, size_bytes: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size_bytes).map_err(|_| io::Error::other("segment size out of range"))?;
    match nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn open_existing(path: &Path) -> Result<File, Error> {
    OpenOptions::new().read(true).write(true).open(path).with_path(path)
}

/// Makes the directory's entries (new, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).with_path(dir)
}
