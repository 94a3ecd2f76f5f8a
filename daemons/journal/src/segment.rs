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
/// A zero-filled file prepared ahead of the next roll; it holds no record until renamed to a segment name.
pub(crate) const SPARE_NAME: &str = "next-segment.spare";

/// One segment file of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub first_seq: u64,
    pub path: PathBuf,
}

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Lists the segments in `dir`, oldest first. With `remove_leftovers` (opening for writing), leftover
/// temporary files are removed; without (a read-only look, possibly at a directory a live journal appends
/// to, whose spare and half-created segments are in use), they are only skipped.
pub(crate) fn list(dir: &Path, remove_leftovers: bool) -> Result<Vec<SegmentMeta>, Error> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).with_path(dir)? {
        let entry = entry.with_path(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == SPARE_NAME {
            // A clean stop leaves the spare too: it is no leftover of a crash, and the preparer truncates
            // and refills it (nothing was ever appended to it).
            continue;
        }
        if name.ends_with(TMP_SUFFIX) {
            if !remove_leftovers {
                continue;
            }
            log::warn!(
                "removing {}: a segment whose creation a crash interrupted",
                entry.path().display()
            );
            fs::remove_file(entry.path()).with_path(entry.path())?;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(first_seq) if stem.len() == 20 => segments.push(SegmentMeta {
                first_seq,
                path: entry.path(),
            }),
            _ => log::warn!("ignoring {}: not a journal segment name", entry.path().display()),
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Prepares segments ahead of need on a background thread, so a roll costs a header write, an fsync and a
/// rename instead of zero-filling a whole segment on the journal thread.
///
/// Dropping it waits for the thread: a spare still being zero-filled when the journal closes must not be
/// written to after the directory could be reopened.
pub(crate) struct SparePreparer {
    requests: Option<std::sync::mpsc::SyncSender<()>>,
    ready: std::sync::mpsc::Receiver<io::Result<File>>,
    /// A spare was ordered and not taken yet (it may be in `prepared` already).
    pending: bool,
    /// The ordered spare's result, once [`SparePreparer::poll`] picked it up.
    prepared: Option<io::Result<File>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SparePreparer {
    fn drop(&mut self) {
        self.requests = None; // Ends the thread's request loop.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SparePreparer {
    /// Starts the preparer and asks it for the first spare.
    pub(crate) fn start(
        dir: &Path,
        size_bytes: u64,
        thread_init: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    ) -> io::Result<Self> {
        let (requests, request_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        let path = dir.join(SPARE_NAME);
        let thread = std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || {
                if let Some(init) = thread_init {
                    init();
                }
                for () in request_rx {
                    let made = prepare_spare(&path, size_bytes);
                    if ready_tx.send(made).is_err() {
                        return;
                    }
                }
            })?;
        requests
            .send(())
            .map_err(|_| io::Error::other("spare segment thread stopped"))?;
        Ok(SparePreparer {
            requests: Some(requests),
            ready,
            pending: true,
            prepared: None,
            thread: Some(thread),
        })
    }

    /// Orders a spare if none is on its way or the last one failed (a retry).
    pub(crate) fn reorder(&mut self) {
        if matches!(self.prepared, Some(Err(_))) {
            self.prepared = None;
            self.pending = false;
        }
        if !self.pending {
            self.pending = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
        }
    }

    /// How the ordered spare is doing, without waiting: `Some(Ok)` ready, `Some(Err)` its preparation
    /// failed (a full or failing disk: the journal says so before a roll needs it), `None` still on its way
    /// or none ordered.
    pub(crate) fn poll(&mut self) -> Option<Result<(), String>> {
        if self.pending && self.prepared.is_none() {
            if let Ok(result) = self.ready.try_recv() {
                self.prepared = Some(result);
            }
        }
        match &self.prepared {
            Some(Ok(_)) => Some(Ok(())),
            Some(Err(e)) => Some(Err(e.to_string())),
            None => None,
        }
    }

    /// Turns the prepared spare into segment `first_seq` (header durable, name durable) and orders the next one.
    pub(crate) fn take(&mut self, dir: &Path, first_seq: u64) -> Result<(SegmentMeta, File), Error> {
        if !self.pending {
            return Err(Error::Io {
                path: dir.join(SPARE_NAME),
                source: io::Error::other("no spare segment was ordered"),
            });
        }
        let spare = match self.prepared.take() {
            Some(result) => result,
            None => self
                .ready
                .recv()
                .map_err(|_| io::Error::other("spare segment thread stopped"))
                .and_then(|r| r),
        };
        self.pending = false;
        let file = spare.with_path(dir.join(SPARE_NAME))?;
        let installed = install(dir, &dir.join(SPARE_NAME), file, first_seq)?;
        self.pending = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
        Ok(installed)
    }
}

fn prepare_spare(path: &Path, size_bytes: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    preallocate(&file, size_bytes)?;
    file.sync_all()?;
    Ok(file)
}

/// Creates a preallocated segment whose header is durable and whose name is durable in `dir`.
pub(crate) fn create(dir: &Path, first_seq: u64, size_bytes: u64) -> Result<(SegmentMeta, File), Error> {
    let tmp = dir.join(format!("{first_seq:020}{TMP_SUFFIX}"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_path(&tmp)?;
    preallocate(&file, size_bytes).with_path(&tmp)?;
    install(dir, &tmp, file, first_seq)
}

/// Turns a zero-filled file at `from` into segment `first_seq`: header written and fsynced, then renamed into
/// place and the directory fsynced, so a segment name never points at a file without a durable header.
fn install(dir: &Path, from: &Path, file: File, first_seq: u64) -> Result<(SegmentMeta, File), Error> {
    let path = segment_path(dir, first_seq);
    file.write_all_at(&SegmentHeader { first_seq }.encode(), 0)
        .with_path(from)?;
    file.sync_all().with_path(from)?;
    logtank_durable::rename_durably(from, &path)?;
    Ok((SegmentMeta { first_seq, path }, file))
}

/// Reserves `size_bytes` for the file by writing zeros, so appends never fail for lack of space midway.
///
/// Zeros rather than `fallocate`: fallocated extents are "unwritten", so every first write into them is an
/// allocation that io_uring cannot do without blocking (it punts each write to a worker thread: measured 4x
/// slower at 64 KiB on ext4) and every fdatasync must also commit the extent conversion. Overwriting written
/// zeros needs neither. The cost is one sequential write of the segment at creation.
pub(crate) fn preallocate(file: &File, size_bytes: u64) -> io::Result<()> {
    const ZEROS_BYTES: usize = 1 << 20;
    let zeros = vec![0u8; ZEROS_BYTES];
    let current = file.metadata()?.len();
    let mut offset = current;
    while offset < size_bytes {
        let n = (size_bytes - offset).min(ZEROS_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

pub(crate) fn open_existing(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_path(path)
}
