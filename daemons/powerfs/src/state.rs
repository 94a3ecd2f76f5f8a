//! What a power cut would forget, kept beside a backing directory that always holds the current state.
//!
//! Every operation goes through to the backing directory at once (reads see it; nothing is cached here).
//! What is not durable yet is remembered as undo information instead:
//!
//! - per file, the length its last `fsync`/`fdatasync` made durable and the durable bytes of every page
//!   changed since (saved before the first change reaches the backing file);
//! - per namespace change (create, mkdir, symlink, unlink, rmdir, rename), how to take it back, until every
//!   directory it touched has been `fsync`ed since. An unlinked or replaced entry is moved aside into a
//!   hidden graveyard, not removed, so taking the unlink back is a rename.
//!
//! A cut takes every namespace change back (newest first), then truncates every file to its durable length
//! and writes its saved pages back; in the torn mode, the file written last keeps its unsynced bytes up to a
//! random 512-byte boundary, as a disk that lost power in the middle of a write would. Durability is modelled
//! as ext4 without its extra favours: a file's `fsync` covers its data and size, never its name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rand::Rng;

/// The inode number of the mount's root (FUSE's).
pub const ROOT_INO: u64 = 1;
/// Where unlinked and replaced entries wait, in the backing directory's root (hidden from the mount).
pub const GRAVEYARD: &str = ".powerfs-graveyard";
/// The granularity of saved durable bytes.
const PAGE: u64 = 4096;
/// The granularity of a torn write (a sector).
const SECTOR: u64 = 512;

/// What a power cut does to the unsynced state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Forget everything no fsync covered.
    Forget,
    /// As `Forget`, but the file written last keeps its unsynced bytes up to a random sector boundary.
    Tear,
}

impl CutMode {
    /// `Forget` for even `n`, `Tear` for odd: how a test alternates them over its cycles.
    pub fn alternating(n: u64) -> CutMode {
        if n % 2 == 1 {
            CutMode::Tear
        } else {
            CutMode::Forget
        }
    }
}

/// What one cut forgot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Namespace changes taken back.
    pub entries_undone: usize,
    /// Namespace changes that could not be taken back (a later, durable change moved what they touched).
    pub undo_failures: usize,
    /// Files truncated or rewritten to their durable contents.
    pub files_reverted: usize,
    /// Unsynced bytes dropped from ends of files, and saved durable bytes written back.
    pub bytes_forgotten: u64,
    /// The torn file, the byte its contents now end at, and its length before the cut.
    pub torn: Option<(PathBuf, u64, u64)>,
}

/// The operations a disk fault can fail ([`Fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `write` and `fallocate`: nothing reaches the file.
    Write,
    /// `fsync`/`fdatasync` of a file: the writes it should have covered are lost (their writeback
    /// failed), as Linux loses them: the call fails once, and a later fsync succeeds without bringing them
    /// back. Reads through a new open see the durable contents again.
    Fsync,
    /// Creating a file or directory (`create`, `mknod`, `mkdir`): no entry is made.
    Create,
}

/// A disk fault to inject: `op` on a path containing `path_contains` (relative to the mount's root) fails
/// with `errno`, the next `times` times (or until [`State::clear_faults`]). With `errno` 0 ([`Fault::hang`])
/// it does not fail but hangs until the fault is cleared: a disk that stopped answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub op: FaultOp,
    pub errno: i32,
    pub path_contains: String,
    pub times: Option<u64>,
}

impl Fault {
    /// `op` fails with `errno` on every path, until cleared.
    pub fn new(op: FaultOp, errno: i32) -> Fault {
        Fault {
            op,
            errno,
            path_contains: String::new(),
            times: None,
        }
    }

    /// `op` hangs (the request is not answered) until the fault is cleared. While it hangs, every other
    /// request of the mount waits too: one session thread serves them all, as one hung disk would.
    pub fn hang(op: FaultOp) -> Fault {
        Fault::new(op, 0)
    }

    /// Only on paths (relative to the mount's root) containing `part`.
    pub fn on_paths_containing(mut self, part: &str) -> Fault {
        self.path_contains = part.into();
        self
    }

    /// Only the next `n` times.
    pub fn times(mut self, n: u64) -> Fault {
        self.times = Some(n);
        self
    }
}

/// Where an inode is now: its parent directory and its name there (no hard links, so exactly one).
#[derive(Debug, Clone)]
struct Node {
    parent: u64,
    name: OsString,
}

/// A file's durable contents, as far as they differ from the backing file.
#[derive(Debug, Default)]
struct FileUndo {
    durable_len: u64,
    /// Page index → the durable bytes of that page (shorter than a page at the durable end).
    saved: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug)]
enum NsChange {
    Created {
        ino: u64,
    },
    Removed {
        ino: u64,
        parent: u64,
        name: OsString,
    },
    Renamed {
        ino: u64,
        from: (u64, OsString),
        to: (u64, OsString),
        /// The entry the rename replaced (now in the graveyard).
        replaced: Option<u64>,
    },
}

#[derive(Debug)]
struct Pending {
    change: NsChange,
    /// Directories whose fsync this change still waits for.
    dirs: BTreeSet<u64>,
}

/// The undo state of one mount.
#[derive(Debug)]
pub struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    by_name: HashMap<(u64, OsString), u64>,
    next_ino: u64,
    graveyard_ino: u64,
    grave_seq: u64,
    files: HashMap<u64, FileUndo>,
    pending: Vec<Pending>,
    last_written: Option<u64>,
    frozen: bool,
    /// A cut to make right after the n-th write from now reaches the backing file ([`State::arm`]).
    armed: Option<(u64, CutMode)>,
    /// A cut to make right after the n-th changing operation from now ([`State::arm_ops`]).
    armed_ops: Option<(u64, CutMode)>,
    /// What the last cut forgot.
    last_cut: Option<CutReport>,
    /// Disk faults to inject ([`State::fault`]).
    faults: Vec<Fault>,
    /// How many operations the faults failed.
    faults_hit: u64,
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl State {
    /// The state of a fresh mount over `backing`: everything in it is durable. Empties the graveyard a
    /// previous mount left.
    pub fn new(backing: PathBuf) -> io::Result<State> {
        let grave = backing.join(GRAVEYARD);
        match std::fs::remove_dir_all(&grave) {
            Err(e) if !is_not_found(&e) => return Err(e),
            _ => {}
        }
        std::fs::create_dir(&grave)?;
        let mut state = State {
            backing,
            nodes: HashMap::new(),
            by_name: HashMap::new(),
            next_ino: ROOT_INO + 1,
            graveyard_ino: 0,
            grave_seq: 0,
            files: HashMap::new(),
            pending: Vec::new(),
            last_written: None,
            frozen: false,
            armed: None,
            armed_ops: None,
            last_cut: None,
            faults: Vec::new(),
            faults_hit: 0,
        };
        state.graveyard_ino = state.ino_for(ROOT_INO, OsStr::new(GRAVEYARD));
        Ok(state)
    }

    /// After a cut every operation fails with EIO: the machine is off.
    pub fn check_running(&self) -> io::Result<()> {
        if self.frozen {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    pub fn is_cut(&self) -> bool {
        self.frozen
    }

    /// Arms a cut right after the `writes`-th write from now: a cut at a moment when something written is
    /// certainly not synced yet (a cut at a random time mostly lands after an fsync).
    pub fn arm(&mut self, writes: u64, mode: CutMode) {
        self.armed = Some((writes.max(1), mode));
    }

    /// Arms a cut right after the `ops`-th operation from now that changes something (a write, a creation,
    /// a removal, a rename, a truncation, an fsync of a file or a directory): for a step that mostly
    /// renames, which write-counting cuts would miss.
    pub fn arm_ops(&mut self, ops: u64, mode: CutMode) {
        self.armed_ops = Some((ops.max(1), mode));
    }

    /// Counts an operation that changed something; makes the cut armed by [`State::arm_ops`] when due.
    pub fn changed(&mut self) {
        if let Some((left, mode)) = self.armed_ops {
            if left <= 1 {
                self.armed_ops = None;
                if !self.frozen {
                    let report = self.cut(mode);
                    self.last_cut = Some(report);
                }
            } else {
                self.armed_ops = Some((left - 1, mode));
            }
        }
    }

    /// Counts a write done; makes the armed cut when its moment has come.
    pub fn wrote(&mut self) {
        self.changed();
        if self.frozen {
            return;
        }
        if let Some((left, mode)) = self.armed {
            if left <= 1 {
                self.armed = None;
                let report = self.cut(mode);
                self.last_cut = Some(report);
            } else {
                self.armed = Some((left - 1, mode));
            }
        }
    }

    /// The report of the last cut made by [`State::arm`].
    pub fn last_cut(&self) -> Option<CutReport> {
        self.last_cut.clone()
    }

    pub fn is_graveyard(&self, parent: u64, name: &OsStr) -> bool {
        parent == ROOT_INO && name == GRAVEYARD
    }

    /// The backing path of an inode.
    pub fn path(&self, ino: u64) -> io::Result<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT_INO {
            let node = self
                .nodes
                .get(&at)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            names.push(node.name.clone());
            at = node.parent;
        }
        let mut path = self.backing.clone();
        path.extend(names.iter().rev());
        Ok(path)
    }

    pub fn child_path(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    /// The inode number of `parent/name`, allocated on first sight (names are stable within a mount).
    pub fn ino_for(&mut self, parent: u64, name: &OsStr) -> u64 {
        let key = (parent, name.to_os_string());
        if let Some(&ino) = self.by_name.get(&key) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: key.1.clone(),
            },
        );
        self.by_name.insert(key, ino);
        ino
    }

    fn move_node(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(old) = self.nodes.get(&ino).cloned() {
            self.by_name.remove(&(old.parent, old.name));
        }
        // Whatever had that name before is gone from the namespace (it was moved aside or undone first).
        if let Some(other) = self.by_name.remove(&(parent, name.to_os_string())) {
            self.nodes.remove(&other);
        }
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
            },
        );
        self.by_name.insert((parent, name.to_os_string()), ino);
    }

    fn forget_node(&mut self, ino: u64) {
        if let Some(old) = self.nodes.remove(&ino) {
            self.by_name.remove(&(old.parent, old.name));
        }
        self.files.remove(&ino);
    }

    /// Records a new entry (file, directory, symlink) `parent/name` that now exists in the backing
    /// directory; a new file's durable contents are empty.
    pub fn created(&mut self, parent: u64, name: &OsStr, is_file: bool) -> u64 {
        let ino = self.ino_for(parent, name);
        if is_file {
            self.files.insert(ino, FileUndo::default());
        }
        self.pending.push(Pending {
            change: NsChange::Created { ino },
            dirs: BTreeSet::from([parent]),
        });
        ino
    }

    /// Moves `parent/name` into the graveyard (an unlink or rmdir that a cut can take back).
    pub fn remove(&mut self, parent: u64, name: &OsStr) -> io::Result<()> {
        let path = self.child_path(parent, name)?;
        std::fs::symlink_metadata(&path)?;
        let ino = self.ino_for(parent, name);
        self.bury(ino, &path)?;
        self.pending.push(Pending {
            change: NsChange::Removed {
                ino,
                parent,
                name: name.to_os_string(),
            },
            dirs: BTreeSet::from([parent]),
        });
        Ok(())
    }

    fn bury(&mut self, ino: u64, path: &std::path::Path) -> io::Result<()> {
        self.grave_seq += 1;
        let grave_name = OsString::from(self.grave_seq.to_string());
        let grave = self.backing.join(GRAVEYARD).join(&grave_name);
        std::fs::rename(path, &grave)?;
        let graveyard = self.graveyard_ino;
        self.move_node(ino, graveyard, &grave_name);
        Ok(())
    }

    /// Renames `parent/name` to `new_parent/new_name`, moving a replaced entry aside first.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> io::Result<()> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        let from_meta = std::fs::symlink_metadata(&from)?;
        let ino = self.ino_for(parent, name);
        let replaced = match std::fs::symlink_metadata(&to) {
            Ok(meta) => {
                if no_replace {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                if meta.is_dir() {
                    if !from_meta.is_dir() {
                        return Err(io::Error::from_raw_os_error(libc::EISDIR));
                    }
                    if std::fs::read_dir(&to)?.next().is_some() {
                        return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
                    }
                } else if from_meta.is_dir() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                let target = self.ino_for(new_parent, new_name);
                if target == ino {
                    return Ok(()); // a rename onto itself
                }
                self.bury(target, &to)?;
                Some(target)
            }
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e),
        };
        if let Err(e) = std::fs::rename(&from, &to) {
            if let Some(target) = replaced {
                // Put the replaced entry back; the rename did not happen.
                let grave = self.path(target)?;
                std::fs::rename(grave, &to)?;
                self.move_node(target, new_parent, new_name);
            }
            return Err(e);
        }
        self.move_node(ino, new_parent, new_name);
        self.pending.push(Pending {
            change: NsChange::Renamed {
                ino,
                from: (parent, name.to_os_string()),
                to: (new_parent, new_name.to_os_string()),
                replaced,
            },
            dirs: BTreeSet::from([parent, new_parent]),
        });
        Ok(())
    }

    /// A directory's fsync: the namespace changes that waited only for it are durable now (a change that
    /// touched two directories waits for both).
    pub fn dir_synced(&mut self, dir: u64) -> io::Result<()> {
        let mut buried = Vec::new();
        self.pending.retain_mut(|p| {
            p.dirs.remove(&dir);
            if !p.dirs.is_empty() {
                return true;
            }
            match p.change {
                NsChange::Removed { ino, .. } => buried.push(ino),
                NsChange::Renamed {
                    replaced: Some(ino), ..
                } => buried.push(ino),
                _ => {}
            }
            false
        });
        // Gone for good: an open descriptor keeps the inode alive, as after a real unlink.
        for ino in buried {
            remove_entry(&self.path(ino)?)?;
            self.forget_node(ino);
        }
        Ok(())
    }

    /// Before `file` (the backing file of `ino`) changes in `[start, end)`: remembers the durable bytes
    /// there.
    pub fn before_change(&mut self, ino: u64, file: &File, start: u64, end: u64) -> io::Result<()> {
        self.last_written = Some(ino);
        let undo = match self.files.get_mut(&ino) {
            Some(undo) => undo,
            None => {
                let durable_len = file.metadata()?.len();
                self.files.entry(ino).or_insert(FileUndo {
                    durable_len,
                    saved: BTreeMap::new(),
                })
            }
        };
        let end = end.min(undo.durable_len);
        if start >= end {
            return Ok(());
        }
        for page in start / PAGE..end.div_ceil(PAGE) {
            if undo.saved.contains_key(&page) {
                continue;
            }
            let from = page * PAGE;
            let to = (from + PAGE).min(undo.durable_len);
            let mut bytes = vec![0u8; (to - from) as usize];
            let mut done = 0;
            // Bytes past the current end were truncated away earlier: their page is saved already, or
            // they read as the zeros a later extension made.
            while done < bytes.len() {
                let n = file.read_at(&mut bytes[done..], from + done as u64)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            undo.saved.insert(page, bytes);
        }
        Ok(())
    }

    /// Adds a disk fault.
    pub fn inject(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    /// Removes every disk fault (the disk is healthy again).
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// How many operations injected faults have failed so far.
    pub fn faults_hit(&self) -> u64 {
        self.faults_hit
    }

    /// The injected error for `op` on `path` (a path in the backing directory), if a fault matches; a
    /// fault with a count is used up by it.
    pub fn fault(&mut self, op: FaultOp, path: &std::path::Path) -> io::Result<()> {
        let relative = path.strip_prefix(&self.backing).unwrap_or(path).to_string_lossy();
        let Some(i) = self
            .faults
            .iter()
            .position(|f| f.errno != 0 && f.op == op && relative.contains(f.path_contains.as_str()))
        else {
            return Ok(());
        };
        let errno = self.faults[i].errno;
        match &mut self.faults[i].times {
            Some(1) => {
                self.faults.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        self.faults_hit += 1;
        Err(io::Error::from_raw_os_error(errno))
    }

    /// Whether a [`Fault::hang`] holds `op` on `path` now.
    pub fn hangs(&self, op: FaultOp, path: &std::path::Path) -> bool {
        let relative = path.strip_prefix(&self.backing).unwrap_or(path).to_string_lossy();
        self.faults
            .iter()
            .any(|f| f.errno == 0 && f.op == op && relative.contains(f.path_contains.as_str()))
    }

    /// A file's failed fsync: the writes it should have made durable are lost now (the backing file is
    /// brought back to its durable contents), and nothing of them comes back with a later fsync.
    pub fn fsync_failed(&mut self, ino: u64) -> io::Result<()> {
        if self.last_written == Some(ino) {
            self.last_written = None;
        }
        let Some(undo) = self.files.remove(&ino) else {
            return Ok(());
        };
        revert_file(&self.path(ino)?, &undo, false).map(|_| ())
    }

    /// A file's fsync or fdatasync: its contents and length are durable now.
    pub fn file_synced(&mut self, ino: u64) {
        self.files.remove(&ino);
        if self.last_written == Some(ino) {
            self.last_written = None;
        }
    }

    /// The power cut: takes back everything not durable, then refuses every later operation.
    pub fn cut(&mut self, mode: CutMode) -> CutReport {
        self.frozen = true;
        let mut report = CutReport::default();
        let pending = std::mem::take(&mut self.pending);
        for p in pending.into_iter().rev() {
            match self.undo(p.change) {
                Ok(()) => report.entries_undone += 1,
                Err(_) => report.undo_failures += 1,
            }
        }
        let torn_ino = match mode {
            CutMode::Tear => self.last_written,
            CutMode::Forget => None,
        };
        let files = std::mem::take(&mut self.files);
        for (ino, undo) in files {
            let Ok(path) = self.path(ino) else { continue };
            match revert_file(&path, &undo, ino == torn_ino.unwrap_or(0)) {
                Ok((forgotten, torn)) => {
                    report.files_reverted += 1;
                    report.bytes_forgotten += forgotten;
                    if let Some((kept, len)) = torn {
                        report.torn = Some((path, kept, len));
                    }
                }
                Err(_) => report.undo_failures += 1,
            }
        }
        report
    }

    fn undo(&mut self, change: NsChange) -> io::Result<()> {
        match change {
            NsChange::Created { ino } => {
                remove_entry(&self.path(ino)?)?;
                self.forget_node(ino);
            }
            NsChange::Removed { ino, parent, name } => {
                let grave = self.path(ino)?;
                std::fs::rename(grave, self.child_path(parent, &name)?)?;
                self.move_node(ino, parent, &name);
            }
            NsChange::Renamed {
                ino,
                from,
                to,
                replaced,
            } => {
                std::fs::rename(self.path(ino)?, self.child_path(from.0, &from.1)?)?;
                self.move_node(ino, from.0, &from.1);
                if let Some(target) = replaced {
                    std::fs::rename(self.path(target)?, self.child_path(to.0, &to.1)?)?;
                    self.move_node(target, to.0, &to.1);
                }
            }
        }
        Ok(())
    }
}

/// Removes a file, symlink or directory tree from the backing directory.
fn remove_entry(path: &std::path::Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Brings a backing file back to its durable contents; returns the bytes forgotten, and for a torn file
/// where its contents now end and how long it was.
fn revert_file(path: &std::path::Path, undo: &FileUndo, tear: bool) -> io::Result<(u64, Option<(u64, u64)>)> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    // Torn: the bytes up to `keep` reached the disk, new or not.
    let keep = if tear && len > 0 {
        let first = undo.durable_len.min(len) / SECTOR;
        let last = len.div_ceil(SECTOR);
        (rand::rng().random_range(first..=last) * SECTOR).min(len)
    } else {
        0
    };
    let mut forgotten = len.saturating_sub(undo.durable_len.max(keep));
    file.set_len(undo.durable_len.max(keep))?;
    for (&page, bytes) in &undo.saved {
        let from = page * PAGE;
        let skip = keep.saturating_sub(from).min(bytes.len() as u64) as usize;
        if skip < bytes.len() {
            file.write_all_at(&bytes[skip..], from + skip as u64)?;
            forgotten += (bytes.len() - skip) as u64;
        }
    }
    Ok((forgotten, tear.then_some((keep, len))))
}
