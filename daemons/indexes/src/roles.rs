//! Who this reader is: the marker files (`<root>/master`, `<root>/storage/safe_to_read` or the legacy
//! `<root>/safe_to_read`), and whether a newer master fenced it. Everything that gates on the role asks
//! here: `read_page` and the manager's mutating calls (refused with a message that says why and where to
//! go instead), the pipeline (runs only while [`RoleView::is_active`]), coordination (registers only then).
//!
//! The markers are looked at every `indexes.marker_poll_ms` by [`watch_markers`]; the pipeline's
//! `keep_going` and the request gates look at the files themselves ([`Roles::live_view`]), so a removed
//! `master` stops dealing at the next durable point and refuses the next read without waiting for a poll.
//!
//! Fencing is remembered in `<root>/storage/fenced` until the host is demoted (its `master` marker
//! removed): a fenced master that restarts must not bump the epoch again and fence the real master back.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use logtank_runtime::Shutdown;
use logtank_storage::Layout;
use tokio::sync::watch;

/// The largest fence file read back (two decimal epochs and a little text).
const FENCE_FILE_BYTES_MAX: u64 = 256;

/// Another master's epoch is newer than the one this host was promoted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub theirs: u64,
    pub ours: u64,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "another master took over (epoch {} > ours {})",
            self.theirs, self.ours
        )
    }
}

/// The role at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleView {
    pub master: bool,
    pub safe_to_read: bool,
    pub fenced: Option<Fence>,
    /// The master lease does not hold: coordination is configured and this host's epoch was not confirmed
    /// within `indexes.master_lease_ms` (or a previous master's lease may still run).
    pub unconfirmed: bool,
}

impl RoleView {
    /// Both markers and not fenced: this host means to be the master (coordination then bumps the epoch
    /// and keeps the lease).
    pub fn holds_markers(&self) -> bool {
        self.master && self.safe_to_read && self.fenced.is_none()
    }

    /// The active master: both markers, not fenced, the lease held. Only then the pipeline runs and reads
    /// are served.
    pub fn is_active(&self) -> bool {
        self.holds_markers() && !self.unconfirmed
    }
}

/// The master lease (with coordination): the active master serves only while it confirmed its epoch (read
/// it back unchanged) within the lease, and a newly promoted one only once a previous master's lease has
/// surely run out. So a master cut off from coordination stops before another one, promoted meanwhile,
/// starts: two masters never deal or serve reads at once.
#[derive(Debug)]
struct Lease {
    duration: Duration,
    state: Mutex<LeaseState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct LeaseState {
    /// When the last confirmation was asked for (the epoch read sent, not answered: conservative).
    confirmed_at: Option<Instant>,
    /// A promotion's wait: not before the previous master's lease ran out.
    not_before: Option<Instant>,
}

impl Lease {
    fn holds(&self) -> bool {
        let st = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        st.confirmed_at
            .is_some_and(|c| now.duration_since(c) < self.duration)
            && st.not_before.is_none_or(|nb| now >= nb)
    }
}

/// Why a request that needs the active master is refused.
/// (The lease variant's text names the lease; the others name the marker to look at.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServing {
    #[error(
        "logtank-indexes on {host} is not the master ({} does not exist): recover from the master's reader \
         (/logtank/services/recovery)",
        marker.display()
    )]
    NotMaster { host: String, marker: PathBuf },
    #[error(
        "logtank-indexes on {host} is the master but its data is not known complete ({} does not exist; \
         {} is honoured too): create it once this host holds the whole history, or recover from another \
         reader (/logtank/services/recovery)",
        marker.display(),
        legacy.display()
    )]
    NotSafeToRead {
        host: String,
        marker: PathBuf,
        legacy: PathBuf,
    },
    #[error(
        "logtank-indexes on {host} was fenced: {fence}; recover from the master's reader \
         (/logtank/services/recovery). Remove {} to demote this host",
        marker.display()
    )]
    Fenced {
        host: String,
        fence: Fence,
        marker: PathBuf,
    },
    #[error(
        "logtank-indexes on {host} is the master but has not confirmed its epoch in coordination within its \
         lease ({lease_ms} ms): it serves no reads and deals nothing until it does (another host may have been \
         promoted meanwhile; a new master waits out the previous one's lease); recover from the master's \
         reader (/logtank/services/recovery)"
    )]
    LeaseNotHeld { host: String, lease_ms: u128 },
}

impl NotServing {
    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            NotServing::NotMaster { .. } => "not_master",
            NotServing::NotSafeToRead { .. } => "not_safe_to_read",
            NotServing::Fenced { .. } => "fenced",
            NotServing::LeaseNotHeld { .. } => "lease_not_held",
        }
    }
}

/// Wakes the pipeline thread early (a role change, shutdown) from its sleep.
#[derive(Debug, Default)]
pub struct Wakeup {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Wakeup {
    pub fn notify(&self) {
        *self.generation.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.cv.notify_all();
    }

    /// Sleeps for `duration` or until [`Wakeup::notify`], whichever comes first.
    pub fn sleep(&self, duration: Duration) {
        let guard = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        let start = *guard;
        let _ = self
            .cv
            .wait_timeout_while(guard, duration, |g| *g == start)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// The shared role state of one daemon.
#[derive(Debug)]
pub struct Roles {
    layout: Layout,
    host: String,
    fenced: Mutex<Option<Fence>>,
    /// `None` without coordination (single-host mode: the markers alone decide).
    lease: Option<Lease>,
    view: watch::Sender<RoleView>,
    wakeup: Arc<Wakeup>,
}

impl Roles {
    /// Reads the markers and the remembered fence. A fence file without a `master` marker is stale (the
    /// host was demoted while the daemon was down) and removed.
    pub fn new(layout: Layout, host: String) -> Roles {
        Roles::with_lease(layout, host, None)
    }

    /// [`Roles::new`] with a master lease of `lease` (coordination configured).
    pub fn with_lease(layout: Layout, host: String, lease: Option<Duration>) -> Roles {
        let lease = lease.map(|duration| Lease {
            duration,
            state: Mutex::default(),
        });
        let mut fenced = read_fence(&fence_path(&layout));
        if fenced.is_some() && !layout.is_master() {
            clear_fence_file(&fence_path(&layout));
            fenced = None;
        }
        if let Some(fence) = fenced {
            log::warn!(
                "fenced since an earlier run: {fence} (remembered in {}); dealing stays stopped until {} is \
                 removed",
                fence_path(&layout).display(),
                layout.master_marker().display()
            );
        }
        let initial = RoleView {
            master: layout.is_master(),
            safe_to_read: layout.is_safe_to_read(),
            fenced,
            unconfirmed: lease.is_some(),
        };
        let (view, _) = watch::channel(initial);
        Roles {
            layout,
            host,
            fenced: Mutex::new(fenced),
            lease,
            view,
            wakeup: Arc::new(Wakeup::default()),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn wakeup(&self) -> &Arc<Wakeup> {
        &self.wakeup
    }

    /// The role as last polled.
    pub fn view(&self) -> RoleView {
        *self.view.borrow()
    }

    /// Sees every change of the polled role.
    pub fn subscribe(&self) -> watch::Receiver<RoleView> {
        self.view.subscribe()
    }

    pub fn fence(&self) -> Option<Fence> {
        *self.fenced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The role from the files themselves (two `stat`s) and the lease, for gates that must not wait for a
    /// poll.
    pub fn live_view(&self) -> RoleView {
        RoleView {
            master: self.layout.is_master(),
            safe_to_read: self.layout.is_safe_to_read(),
            fenced: self.fence(),
            unconfirmed: self.lease.as_ref().is_some_and(|l| !l.holds()),
        }
    }

    /// A new term's lease: the epoch was bumped to `ours`, its request sent at `asked_at`. If another host
    /// may have held the epoch before (it was past 0, and not the one this host held last, remembered in
    /// `storage/master.epoch`), nothing is served before that master's lease has surely run out (`lease`
    /// after the bump was answered); a restart of the same master starts at once. Returns whether it waits.
    /// Blocking file IO (a few bytes, fsynced).
    pub fn start_lease(&self, asked_at: Instant, ours: u64) -> bool {
        let previous = ours.saturating_sub(1);
        let path = held_epoch_path(&self.layout);
        let ours_before = read_held_epoch(&path);
        let wait = previous > 0 && ours_before != Some(previous);
        if let Err(e) = logtank_durable::write_atomically(&path, format!("{ours}\n").as_bytes()) {
            log::warn!(
                "cannot remember epoch {ours} in {}: {e}; the next promotion here waits out a lease",
                path.display()
            );
        }
        if let Some(lease) = &self.lease {
            let mut st = lease.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.confirmed_at = Some(asked_at);
            st.not_before = wait.then(|| Instant::now() + lease.duration);
        }
        self.poll();
        wait && self.lease.is_some()
    }

    /// The epoch read back unchanged, its request sent at `asked_at`: the lease holds for another term.
    pub fn confirm_lease(&self, asked_at: Instant) {
        if let Some(lease) = &self.lease {
            let mut st = lease.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.confirmed_at = Some(st.confirmed_at.map_or(asked_at, |c| c.max(asked_at)));
        }
        self.poll();
    }

    /// The term ended (demoted, fenced): no lease until the next promotion.
    pub fn end_lease(&self) {
        if let Some(lease) = &self.lease {
            *lease.state.lock().unwrap_or_else(PoisonError::into_inner) = LeaseState::default();
        }
        self.poll();
    }

    /// The lease's length, if there is one.
    pub fn lease_duration(&self) -> Option<Duration> {
        self.lease.as_ref().map(|l| l.duration)
    }

    /// `Ok` when this host is the active master right now, else why not.
    pub fn check_serving(&self) -> Result<(), NotServing> {
        let view = self.live_view();
        if !view.master {
            return Err(NotServing::NotMaster {
                host: self.host.clone(),
                marker: self.layout.master_marker(),
            });
        }
        if let Some(fence) = view.fenced {
            return Err(NotServing::Fenced {
                host: self.host.clone(),
                fence,
                marker: self.layout.master_marker(),
            });
        }
        if !view.safe_to_read {
            return Err(NotServing::NotSafeToRead {
                host: self.host.clone(),
                marker: self.layout.safe_to_read_marker(),
                legacy: self.layout.legacy_safe_to_read_marker(),
            });
        }
        if view.unconfirmed {
            return Err(NotServing::LeaseNotHeld {
                host: self.host.clone(),
                lease_ms: self.lease_duration().unwrap_or_default().as_millis(),
            });
        }
        Ok(())
    }

    /// Records that a newer master took over: remembered on disk, the pipeline stops at its next durable
    /// point. Blocking file IO (a few bytes, fsynced).
    pub fn set_fenced(&self, fence: Fence) {
        *self.fenced.lock().unwrap_or_else(PoisonError::into_inner) = Some(fence);
        let path = fence_path(&self.layout);
        if let Err(e) = write_fence(&path, fence) {
            log::error!(
                "cannot remember the fence in {}: {e}; a restart would take over again",
                path.display()
            );
        }
        self.poll();
    }

    /// Reads the markers and publishes a change. Demotion clears a fence.
    pub fn poll(&self) -> RoleView {
        let master = self.layout.is_master();
        if !master {
            let mut fenced = self.fenced.lock().unwrap_or_else(PoisonError::into_inner);
            if fenced.take().is_some() {
                clear_fence_file(&fence_path(&self.layout));
                log::info!(
                    "demoted: the fence is cleared; touching the master marker again is a new promotion"
                );
            }
        }
        let now = RoleView {
            master,
            safe_to_read: self.layout.is_safe_to_read(),
            fenced: self.fence(),
            unconfirmed: self.lease.as_ref().is_some_and(|l| !l.holds()),
        };
        let changed = self.view.send_if_modified(|view| {
            if *view == now {
                return false;
            }
            log_change(&self.layout, view, &now);
            *view = now;
            true
        });
        if changed {
            self.wakeup.notify();
        }
        now
    }
}

fn log_change(layout: &Layout, old: &RoleView, new: &RoleView) {
    if old.master != new.master {
        if new.master {
            log::info!(
                "{} appeared: this host is the master",
                layout.master_marker().display()
            );
        } else {
            log::warn!(
                "{} is gone: this host is no longer the master; the pipeline stops and reads are refused",
                layout.master_marker().display()
            );
        }
    }
    if old.safe_to_read != new.safe_to_read {
        if new.safe_to_read {
            log::info!("safe_to_read appeared: this host's data is complete");
        } else {
            log::warn!(
                "{} is gone: this host's data is not known complete; the pipeline stops and reads are refused",
                layout.safe_to_read_marker().display()
            );
        }
    }
    if old.unconfirmed != new.unconfirmed && new.holds_markers() && old.holds_markers() {
        if new.unconfirmed {
            log::warn!(
                "the master lease does not hold: the epoch could not be confirmed in coordination in time; \
                 dealing and reads stop until it is"
            );
        } else {
            log::info!("the master lease holds: the epoch is confirmed in coordination");
        }
    }
    if old.is_active() != new.is_active() {
        if new.is_active() {
            log::info!("active master: dealing and serving reads");
        } else {
            log::info!("not the active master: pipeline idle");
        }
    }
}

/// Polls the markers every `every` until shutdown.
pub async fn watch_markers(roles: Arc<Roles>, every: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let roles = roles.clone();
        // A few stats and, on demotion, an unlink: blocking calls, kept off the async workers.
        if tokio::task::spawn_blocking(move || roles.poll()).await.is_err() {
            return;
        }
    }
}

/// `<root>/storage/fenced`.
pub fn fence_path(layout: &Layout) -> PathBuf {
    layout.storage().join("fenced")
}

/// The epoch this host held last as the master.
fn held_epoch_path(layout: &Layout) -> PathBuf {
    layout.storage().join("master.epoch")
}

fn read_held_epoch(path: &Path) -> Option<u64> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(FENCE_FILE_BYTES_MAX).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn read_fence(path: &Path) -> Option<Fence> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(FENCE_FILE_BYTES_MAX).read_to_string(&mut text).ok()?;
    let mut numbers = text.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    let theirs = numbers.next()?;
    let ours = numbers.next()?;
    Some(Fence { theirs, ours })
}

/// Replaces the fence file atomically (`fenced.tmp`, fsync, rename, directory fsync): a crash leaves the old
/// fence or the new one, and a fence that was reported remembered survives a power cut.
fn write_fence(path: &Path, fence: Fence) -> Result<(), logtank_durable::DurableError> {
    logtank_durable::create_dir_all_durably(logtank_durable::parent_dir(path))?;
    let text = format!(
        "{} {}\n# another master took over (epoch {} > ours {}); removed when this host is demoted\n",
        fence.theirs, fence.ours, fence.theirs, fence.ours
    );
    logtank_durable::write_atomically(path, text.as_bytes())
}

fn clear_fence_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    // Proves each missing marker gives its own refusal, naming the file, and both markers make it active;
    // the legacy /data/safe_to_read counts.
    #[test]
    fn gating_follows_the_markers() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let roles = Roles::new(layout.clone(), "h1".into());
        let e = roles.check_serving().unwrap_err();
        assert_eq!(e.label(), "not_master");
        assert!(e.to_string().contains("on h1 is not the master"), "{e}");
        assert!(e
            .to_string()
            .contains(&layout.master_marker().display().to_string()));
        touch(&layout.master_marker());
        let e = roles.check_serving().unwrap_err();
        assert_eq!(e.label(), "not_safe_to_read");
        assert!(e.to_string().contains("safe_to_read does not exist"), "{e}");
        touch(&layout.legacy_safe_to_read_marker());
        assert!(roles.check_serving().is_ok());
        assert!(roles.poll().is_active());
    }

    // Proves a fence is remembered across a restart while the host stays master, and demotion clears it.
    #[test]
    fn fence_survives_restart_until_demotion() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        touch(&layout.master_marker());
        touch(&layout.safe_to_read_marker());
        let roles = Roles::new(layout.clone(), "h".into());
        assert!(roles.poll().is_active());
        roles.set_fenced(Fence { theirs: 5, ours: 3 });
        assert!(!roles.view().is_active());
        let e = roles.check_serving().unwrap_err();
        assert!(e.to_string().contains("epoch 5 > ours 3"), "{e}");
        let again = Roles::new(layout.clone(), "h".into());
        assert_eq!(again.fence(), Some(Fence { theirs: 5, ours: 3 }));
        std::fs::remove_file(layout.master_marker()).unwrap();
        assert_eq!(again.poll().fenced, None);
        assert!(!fence_path(&layout).exists());
        touch(&layout.master_marker());
        assert!(again.poll().is_active());
    }

    // Proves the pipeline's sleep ends early on notify.
    #[test]
    fn wakeup_interrupts_sleep() {
        let w = Arc::new(Wakeup::default());
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            w2.sleep(Duration::from_secs(60));
            start.elapsed()
        });
        // Notified until it wakes: a notify before the sleep began would be missed, by design.
        while !t.is_finished() {
            w.notify();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t.join().unwrap() < Duration::from_secs(30));
    }
}
