//! Test-only: a FUSE file system for power-loss tests. It passes IO through to a backing directory but
//! remembers, per file, what no completed `fsync`/`fdatasync` covers, and per directory, the entries
//! (create, rename, unlink) no directory `fsync` covers; [`PowerFs::cut`] forgets all of that, as a machine
//! that lost power would (and in [`CutMode::Tear`], tears the unsynced end of the file written last at a
//! random 512-byte boundary). `kill -9` cannot prove an fsync was done; this can.
//!
//! A test mounts it over a data directory, runs a daemon on the mount under load, cuts (every later request
//! fails with EIO: the machine is off), kills the daemon, [`PowerFs::remount`]s, restarts the daemon on what
//! is left and checks every acknowledged write. [`PowerFs::inject`] fails writes, fsyncs or creations with
//! an errno (EIO, ENOSPC): the disk-fault tests. Root (or CAP_SYS_ADMIN) and `/dev/fuse` are needed:
//! [`PowerFs::available`] says whether they are here. The model and its limits are in docs/reliability.md.

mod fuse;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use state::{CutMode, CutReport, Fault, FaultOp, GRAVEYARD};

/// A mounted power-loss file system; unmounts when dropped.
#[derive(Debug)]
pub struct PowerFs {
    backing: PathBuf,
    mountpoint: PathBuf,
    mode: CutMode,
    state: Arc<Mutex<state::State>>,
    session: Option<fuser::BackgroundSession>,
    /// The FUSE connection's number (the mount's minor device number), to abort it if it will not end.
    connection: Option<u64>,
}

impl PowerFs {
    /// Whether this process can mount one (root and `/dev/fuse`); if not, why not.
    pub fn available() -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root: mounting a FUSE file system needs root here".into());
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map(|_| ())
            .map_err(|e| format!("/dev/fuse: {e}"))
    }

    /// Mounts `backing` (created if missing; what is in it counts as durable) at `mountpoint` (created).
    pub fn mount(backing: &Path, mountpoint: &Path, mode: CutMode) -> std::io::Result<PowerFs> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let backing = backing.canonicalize()?;
        let mountpoint = mountpoint.canonicalize()?;
        let state = Arc::new(Mutex::new(state::State::new(backing.clone())?));
        let fs = fuse::PowerLossFs::new(Arc::clone(&state));
        let options = [
            fuser::MountOption::FSName("logtank-powerfs".into()),
            fuser::MountOption::AllowOther,
            fuser::MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(fs, &mountpoint, &options)?;
        use std::os::unix::fs::MetadataExt;
        let connection = std::fs::metadata(&mountpoint)
            .ok()
            .map(|m| nix::sys::stat::minor(m.dev()));
        Ok(PowerFs {
            backing,
            mountpoint,
            mode,
            state,
            session: Some(session),
            connection,
        })
    }

    /// [`PowerFs::mount`] of `dir/backing` at `dir/mnt`, in [`CutMode::Forget`]: a test's one mount.
    pub fn mount_under(dir: &Path) -> std::io::Result<PowerFs> {
        PowerFs::mount(&dir.join("backing"), &dir.join("mnt"), CutMode::Forget)
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory (after a cut and an unmount: exactly what survived).
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The power cut: forgets everything no fsync covered, and fails every later request with EIO until
    /// [`PowerFs::remount`]. Processes using the mount should be killed next (they are on a dead machine).
    pub fn cut(&self) -> CutReport {
        self.cut_as(self.mode)
    }

    /// [`PowerFs::cut`] in the given mode (a test can alternate them).
    pub fn cut_as(&self, mode: CutMode) -> CutReport {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.cut(mode)
    }

    /// Arms a cut right after the `writes`-th write from now (so something written is not synced yet: a
    /// cut at a random moment mostly lands just after an fsync); [`PowerFs::wait_armed_cut`] waits for it.
    pub fn cut_after_writes(&self, writes: u64, mode: CutMode) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.arm(writes, mode);
    }

    /// Arms a cut right after the `ops`-th operation from now that changes something (writes, creations,
    /// removals, renames, truncations, fsyncs): for steps that mostly rename. [`PowerFs::is_cut`] says
    /// whether it happened.
    pub fn cut_after_ops(&self, ops: u64, mode: CutMode) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .arm_ops(ops, mode);
    }

    /// Whether the power is off (a cut was made, armed or not).
    pub fn is_cut(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).is_cut()
    }

    /// Waits up to `timeout` for the armed cut; its report, or `None` if it has not happened (then the
    /// caller cuts: the load may have written less than armed for).
    pub fn wait_armed_cut(&self, timeout: Duration) -> Option<CutReport> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.is_cut() {
                return state.last_cut();
            }
            drop(state);
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// [`PowerFs::cut_after_writes`], waiting up to a second for it, then a cut at once if the load wrote
    /// less than that: the cut a test makes under a load that keeps writing.
    pub fn cut_after_writes_or_now(&self, writes: u64, mode: CutMode) -> CutReport {
        self.cut_after_writes(writes, mode);
        self.wait_armed_cut(Duration::from_secs(1))
            .unwrap_or_else(|| self.cut_as(mode))
    }

    /// Injects a disk fault: matching operations fail with its errno from now on (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).inject(fault);
    }

    /// Removes every injected fault: the disk works again.
    pub fn clear_faults(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear_faults();
    }

    /// How many operations injected faults have failed so far.
    pub fn faults_hit(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).faults_hit()
    }

    /// A handle that cuts this mount's power from another thread (a test's killer thread).
    pub fn cutter(&self) -> Cutter {
        Cutter {
            state: Arc::clone(&self.state),
        }
    }

    /// Unmounts (lazily: a process still dying may hold a file) and ends the session; the mount's kernel
    /// caches go with it, so a new mount sees only what the backing directory holds.
    pub fn unmount(mut self) {
        self.end_session();
    }

    /// Unmounts and mounts again over the same backing directory: the machine comes back.
    pub fn remount(mut self) -> std::io::Result<PowerFs> {
        self.end_session();
        PowerFs::mount(&self.backing, &self.mountpoint, self.mode)
    }

    fn end_session(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // Detach first: fuser's own unmount is not lazy and fails while a file is open.
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        let cut = self.state.lock().unwrap_or_else(|e| e.into_inner()).is_cut();
        if cut {
            // The machine is off: a file still open on the old mount must not keep its session alive.
            abort_connection(self.connection);
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            session.join();
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            // Something still holds the detached mount's connection open: end it, as a power cut would.
            eprintln!(
                "logtank-powerfs: the session of {} did not end after its unmount; aborting its connection",
                self.mountpoint.display()
            );
            abort_connection(self.connection);
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// Cuts the power of one mount from any thread ([`PowerFs::cutter`]).
#[derive(Debug, Clone)]
pub struct Cutter {
    state: Arc<Mutex<state::State>>,
}

impl Cutter {
    /// [`PowerFs::cut_as`].
    pub fn cut_as(&self, mode: CutMode) -> CutReport {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.cut(mode)
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        self.end_session();
    }
}

/// Aborts a FUSE connection through fusectl (mounted if it is not).
fn abort_connection(connection: Option<u64>) {
    let Some(connection) = connection else { return };
    let connections = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(connections).map_or(true, |mut d| d.next().is_none()) {
        let _ = nix::mount::mount(
            Some("fusectl"),
            connections,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    let _ = std::fs::write(connections.join(connection.to_string()).join("abort"), "1");
}
