//! The FUSE side: each request goes through to the backing directory, and tells [`State`] what it changed
//! before it changes it. One session thread serves every request (fuser's loop), so requests never race
//! each other; the mutex is for [`crate::PowerFs::cut`], which comes from the test's thread.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::state::{FaultOp, State, ROOT_INO};

/// How long the kernel may cache names and attributes. Short: a cut is followed by a new mount anyway.
const TTL: Duration = Duration::from_secs(1);

pub(crate) struct PowerLossFs {
    pub(crate) state: Arc<Mutex<State>>,
    handles: HashMap<u64, File>,
    next_fh: u64,
}

impl std::fmt::Debug for PowerLossFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerLossFs")
            .field("handles", &self.handles.len())
            .finish()
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn to_time(secs: i64, nanos: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr(ino: u64, meta: &std::fs::Metadata) -> FileAttr {
    let kind = kind_of(meta.file_type());
    FileAttr {
        ino,
        size: meta.len(),
        blocks: meta.blocks(),
        atime: to_time(meta.atime(), meta.atime_nsec()),
        mtime: to_time(meta.mtime(), meta.mtime_nsec()),
        ctime: to_time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

fn kind_of(t: std::fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_socket() {
        FileType::Socket
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else {
        FileType::RegularFile
    }
}

fn open_options(flags: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        // Readable too: the durable bytes a write replaces are read first.
        libc::O_WRONLY => options.read(true).write(true),
        libc::O_RDWR => options.read(true).write(true),
        _ => options.read(true),
    };
    // O_APPEND is the kernel's business (it passes the offset of the end); O_TRUNC and the creation
    // flags are done here explicitly, so they are recorded.
    options.custom_flags(
        flags & !(libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL),
    );
    options
}

impl PowerLossFs {
    pub(crate) fn new(state: Arc<Mutex<State>>) -> PowerLossFs {
        PowerLossFs {
            state,
            handles: HashMap::new(),
            next_fh: 1,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this crate; the state is still usable to cut.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_handle(&mut self, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, file);
        fh
    }

    fn handle(&self, fh: u64) -> io::Result<&File> {
        self.handles
            .get(&fh)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    fn lookup_inner(&mut self, parent: u64, name: &OsStr) -> io::Result<FileAttr> {
        let mut state = self.state();
        state.check_running()?;
        if state.is_graveyard(parent, name) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let meta = std::fs::symlink_metadata(state.child_path(parent, name)?)?;
        let ino = state.ino_for(parent, name);
        Ok(attr(ino, &meta))
    }

    fn getattr_inner(&mut self, ino: u64) -> io::Result<FileAttr> {
        let state = self.state();
        state.check_running()?;
        let meta = std::fs::symlink_metadata(state.path(ino)?)?;
        Ok(attr(ino, &meta))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr_inner(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> io::Result<FileAttr> {
        let path = {
            let state = self.state();
            state.check_running()?;
            state.path(ino)?
        };
        if let Some(size) = size {
            let opened;
            let file = match fh.and_then(|fh| self.handles.get(&fh)) {
                Some(file) => file,
                None => {
                    opened = OpenOptions::new().read(true).write(true).open(&path)?;
                    &opened
                }
            };
            let current = file.metadata()?.len();
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.before_change(ino, file, size.min(current), current.max(size))?;
            file.set_len(size)?;
            state.changed();
        }
        if let Some(mode) = mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if uid.is_some() || gid.is_some() {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &path,
                uid.map(nix::unistd::Uid::from_raw),
                gid.map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io::Error::from)?;
        }
        if atime.is_some() || mtime.is_some() {
            let when = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = std::fs::FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(when(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(when(t));
            }
            if !std::fs::symlink_metadata(&path)?.is_symlink() {
                File::open(&path)?.set_times(times)?;
            }
        }
        self.getattr_inner(ino)
    }

    fn new_entry(
        &mut self,
        parent: u64,
        name: &OsStr,
        make: impl FnOnce(&std::path::Path) -> io::Result<Option<File>>,
        is_file: bool,
    ) -> io::Result<(FileAttr, Option<File>)> {
        let mut state = self.state();
        state.check_running()?;
        if state.is_graveyard(parent, name) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        let path = state.child_path(parent, name)?;
        state.fault(FaultOp::Create, &path)?;
        let file = make(&path)?;
        let ino = state.created(parent, name, is_file);
        let meta = std::fs::symlink_metadata(&path)?;
        state.changed();
        Ok((attr(ino, &meta), file))
    }

    fn remove_inner(&mut self, parent: u64, name: &OsStr, dir: bool) -> io::Result<()> {
        let mut state = self.state();
        state.check_running()?;
        if state.is_graveyard(parent, name) {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        let path = state.child_path(parent, name)?;
        let meta = std::fs::symlink_metadata(&path)?;
        if dir {
            if !meta.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            if std::fs::read_dir(&path)?.next().is_some() {
                return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
            }
        } else if meta.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        state.remove(parent, name)?;
        state.changed();
        Ok(())
    }

    /// Holds the request while a [`crate::Fault::hang`] matches it (the lock is not held meanwhile, so the
    /// test can clear the fault or cut the power).
    fn wait_while_hung(&self, op: FaultOp, ino: u64) {
        loop {
            {
                let state = self.state();
                let hung = !state.is_cut() && state.path(ino).is_ok_and(|path| state.hangs(op, &path));
                if !hung {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn write_inner(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> io::Result<u32> {
        self.wait_while_hung(FaultOp::Write, ino);
        let file = self.handle(fh)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.check_running()?;
        let path = state.path(ino)?;
        state.fault(FaultOp::Write, &path)?;
        state.before_change(ino, file, offset, offset + data.len() as u64)?;
        file.write_all_at(data, offset)?;
        state.wrote();
        Ok(data.len() as u32)
    }

    fn read_inner(&mut self, fh: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        self.state().check_running()?;
        let file = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn readdir_inner(&mut self, ino: u64) -> io::Result<Vec<(u64, FileType, std::ffi::OsString)>> {
        let mut state = self.state();
        state.check_running()?;
        let path = state.path(ino)?;
        let mut entries = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            let name = entry.file_name();
            if state.is_graveyard(ino, &name) {
                continue;
            }
            let kind = kind_of(entry.file_type()?);
            entries.push((state.ino_for(ino, &name), kind, name));
        }
        Ok(entries)
    }
}

impl Filesystem for PowerLossFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_inner(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.getattr_inner(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        match self.setattr_inner(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let result = self.state().path(ino).and_then(std::fs::read_link);
        match result {
            Ok(target) => {
                use std::os::unix::ffi::OsStrExt;
                reply.data(target.as_os_str().as_bytes())
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(libc::EPERM); // only regular files: nothing here makes devices or fifos
            return;
        }
        let make = |path: &std::path::Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & !umask & 0o7777)
                .open(path)
                .map(|_| None)
        };
        match self.new_entry(parent, name, make, true) {
            Ok((attr, _)) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let make = |path: &std::path::Path| {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(path)
                .map(|_| None)
        };
        match self.new_entry(parent, name, make, false) {
            Ok((attr, _)) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_inner(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_inner(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let make = |path: &std::path::Path| std::os::unix::fs::symlink(target, path).map(|_| None);
        match self.new_entry(parent, link_name, make, false) {
            Ok((attr, _)) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let mut state = self.state();
            state.check_running()?;
            if flags & !libc::RENAME_NOREPLACE != 0 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL)); // RENAME_EXCHANGE, WHITEOUT
            }
            if state.is_graveyard(parent, name) || state.is_graveyard(newparent, newname) {
                return Err(io::Error::from_raw_os_error(libc::EACCES));
            }
            state.rename(
                parent,
                name,
                newparent,
                newname,
                flags & libc::RENAME_NOREPLACE != 0,
            )?;
            state.changed();
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let result = (|| {
            let path = {
                let state = self.state();
                state.check_running()?;
                state.path(ino)?
            };
            let file = open_options(flags).open(&path)?;
            if flags & libc::O_TRUNC != 0 {
                let len = file.metadata()?.len();
                self.state().before_change(ino, &file, 0, len)?;
                file.set_len(0)?;
            }
            Ok::<_, io::Error>(self.add_handle(file))
        })();
        match result {
            Ok(fh) => reply.opened(fh, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.read_inner(fh, offset.max(0) as u64, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self.write_inner(ino, fh, offset.max(0) as u64, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok() // close(2) makes nothing durable
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(&fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        self.wait_while_hung(FaultOp::Fsync, ino);
        // fdatasync too: it covers the length, and nothing here models the other metadata. The backing
        // file is not synced: the host does not lose power, the model does.
        let mut state = self.state();
        let injected = state
            .check_running()
            .and_then(|()| state.path(ino))
            .map(|path| state.fault(FaultOp::Fsync, &path));
        match injected {
            Ok(Ok(())) => {
                state.file_synced(ino);
                state.changed();
                reply.ok()
            }
            Ok(Err(e)) => {
                // The writeback failed: what this fsync should have covered is gone from the disk.
                let _ = state.fsync_failed(ino);
                reply.error(errno(&e))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.getattr_inner(ino) {
            Ok(a) if a.kind == FileType::Directory => reply.opened(0, 0),
            Ok(_) => reply.error(libc::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        match self.readdir_inner(ino) {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
                    if reply.add(ino, (i + 1) as i64, kind, &name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut state = self.state();
        match state.check_running().and_then(|()| state.dir_synced(ino)) {
            Ok(()) => {
                state.changed();
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let path = match self.state().path(ROOT_INO) {
            Ok(path) => path,
            Err(e) => return reply.error(errno(&e)),
        };
        match nix::sys::statvfs::statvfs(&path) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e as i32),
        }
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok()
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let make = |path: &std::path::Path| {
            let mut options = open_options(flags);
            options.write(true).create_new(true).mode(mode & !umask & 0o7777);
            options.open(path).map(Some)
        };
        match self.new_entry(parent, name, make, true) {
            Ok((attr, Some(file))) => {
                let fh = self.add_handle(file);
                reply.created(&TTL, &attr, 0, fh, 0)
            }
            Ok((_, None)) => reply.error(libc::EIO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let file = self.handle(fh)?;
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.check_running()?;
            let path = state.path(ino)?;
            state.fault(FaultOp::Write, &path)?;
            let (start, end) = (offset.max(0) as u64, (offset + length).max(0) as u64);
            state.before_change(ino, file, start, end)?;
            nix::fcntl::fallocate(
                file,
                nix::fcntl::FallocateFlags::from_bits_truncate(mode),
                offset,
                length,
            )
            .map_err(io::Error::from)
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
