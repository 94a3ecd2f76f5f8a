//! Readonly mode, shared by the daemons that take writes (the writer, the bookies): writes are refused with
//! a clear error while any reason holds (DESIGN §5):
//!
//! - the daemon's readonly config key (`readonly.enabled`, `bookie.readonly`), or `--readonly` (an override
//!   of that key);
//! - the marker file (`<data_root>/readonly`) exists (polled every check interval);
//! - an operator said so with `PUT /readonly` on the admin port;
//! - the storage cannot take writes (its journal cannot create the next segment: a full or failing disk),
//!   until it can again ([`Readonly::set_storage_fault`]);
//! - any of the watched filesystems (the writer's raw log; a bookie's journal and ledgers directories) is
//!   fuller than the high mark; this reason goes only once every one of them is below the low mark
//!   (hysteresis per directory, so it does not flap).
//!
//! [`Readonly`] holds the reasons; the connection tasks ask [`Readonly::refusal`] before each append (an
//! atomic load while writable). Entering and leaving log one line with the reasons and call the change
//! hook (which refreshes `STATUS=`, the metric, and a bookie's registration).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Who is readonly, as refusals and reasons name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadonlyNames {
    /// The daemon's name in refusals, as operators see it in the client's error (`logtank-writer`).
    pub daemon: &'static str,
    /// The config key that makes it readonly (`readonly.enabled`).
    pub config_key: &'static str,
}

/// Disk usage as `df` shows it: used / (used + available to unprivileged users), so blocks reserved for
/// root count as full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskUsage {
    pub used_percent: f64,
}

impl DiskUsage {
    /// From `statvfs` block counts (in fragment-size units).
    pub fn from_blocks(blocks: u64, free: u64, available: u64) -> DiskUsage {
        let used = blocks.saturating_sub(free);
        let usable = used + available;
        let used_percent = if usable == 0 {
            100.0
        } else {
            used as f64 * 100.0 / usable as f64
        };
        DiskUsage { used_percent }
    }

    /// Rounded up, as `df` rounds: 95.1% is shown as 96%.
    pub fn shown_percent(&self) -> u64 {
        self.used_percent.ceil() as u64
    }
}

/// Measures the filesystem holding `path`.
// `fsblkcnt_t` is u64 on 64-bit Linux but u32 on some 32-bit targets: the conversions are for those.
#[allow(clippy::useless_conversion)]
pub fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(DiskUsage::from_blocks(
        u64::from(stat.blocks()),
        u64::from(stat.blocks_free()),
        u64::from(stat.blocks_available()),
    ))
}

/// The hysteresis rule: a full disk makes the daemon readonly above `high`; it stays readonly until usage
/// falls below `low`.
pub fn disk_full(was_full: bool, usage: DiskUsage, high: u8, low: u8) -> bool {
    if was_full {
        usage.used_percent >= f64::from(low)
    } else {
        usage.used_percent > f64::from(high)
    }
}

/// What `GET /readonly` and `PUT /readonly` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadonlyStatus {
    pub readonly: bool,
    /// Why, one phrase per reason (empty when writable).
    pub reasons: Vec<String>,
    /// Set by `PUT /readonly` (one reason among the others).
    pub admin: bool,
    pub marker: String,
    pub marker_exists: bool,
    /// The fullest watched filesystem's usage.
    pub disk_used_percent: Option<u64>,
    pub disk_usage_high_percent: u8,
    pub disk_usage_low_percent: u8,
    /// Every watched directory.
    pub disks: Vec<DiskStatus>,
}

/// One watched directory in [`ReadonlyStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskStatus {
    pub dir: String,
    pub used_percent: Option<u64>,
    /// Past the high mark and not yet below the low mark.
    pub full: bool,
}

#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    full: bool,
    usage: Option<DiskUsage>,
    /// The last error reported, so a persistent one is logged once.
    error: Option<String>,
}

#[derive(Debug)]
struct State {
    config: bool,
    admin: bool,
    marker: bool,
    disks: Vec<Disk>,
    high: u8,
    low: u8,
    /// The storage cannot take writes (its journal cannot create a segment), in its own words.
    storage: Option<String>,
}

impl State {
    fn reasons(&self, names: ReadonlyNames, marker: &Path) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.config {
            reasons.push(format!("{} is set (config or --readonly)", names.config_key));
        }
        if self.marker {
            reasons.push(format!("marker {} exists", marker.display()));
        }
        if self.admin {
            reasons.push("set by PUT /readonly on the admin port".to_string());
        }
        if let Some(why) = &self.storage {
            reasons.push(format!("storage: {why}"));
        }
        // One directory is named as "disk"; several by their paths, so the operator knows which is full.
        let several = self.disks.len() > 1;
        for disk in self.disks.iter().filter(|d| d.full) {
            let what = if several {
                format!("disk of {}", disk.dir.display())
            } else {
                "disk".to_string()
            };
            match disk.usage {
                Some(usage) if usage.used_percent > f64::from(self.high) => {
                    reasons.push(format!("{what} {}% used > {}%", usage.shown_percent(), self.high))
                }
                Some(usage) => reasons.push(format!(
                    "{what} {}% used, not yet below {}%",
                    usage.shown_percent(),
                    self.low
                )),
                None => reasons.push(format!("{what} was more than {}% used", self.high)),
            }
        }
        reasons
    }
}

type ChangeHook = Box<dyn Fn(bool) + Send + Sync>;
type StorageProbe = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// The readonly reasons and the fast flag derived from them; shared by every connection.
pub struct Readonly {
    names: ReadonlyNames,
    marker: PathBuf,
    on: AtomicBool,
    state: Mutex<State>,
    on_change: Mutex<Option<ChangeHook>>,
    storage_probe: Mutex<Option<StorageProbe>>,
}

impl std::fmt::Debug for Readonly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readonly")
            .field("marker", &self.marker)
            .field("on", &self.is_on())
            .finish_non_exhaustive()
    }
}

impl Readonly {
    /// `marker` is the marker file; `disk_dirs` directories on the filesystems whose usage counts.
    pub fn new(
        names: ReadonlyNames,
        config_enabled: bool,
        marker: PathBuf,
        disk_dirs: Vec<PathBuf>,
        high: u8,
        low: u8,
    ) -> Readonly {
        let disks = disk_dirs
            .into_iter()
            .map(|dir| Disk {
                dir,
                full: false,
                usage: None,
                error: None,
            })
            .collect();
        let readonly = Readonly {
            names,
            marker,
            on: AtomicBool::new(false),
            state: Mutex::new(State {
                config: config_enabled,
                admin: false,
                marker: false,
                disks,
                high,
                low,
                storage: None,
            }),
            on_change: Mutex::new(None),
            storage_probe: Mutex::new(None),
        };
        readonly.update(|_| {});
        readonly
    }

    /// Called with the new state after readonly is entered or left.
    pub fn set_on_change(&self, hook: impl Fn(bool) + Send + Sync + 'static) {
        *self.on_change.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// `None` while writable; otherwise the error a client gets, naming every reason.
    pub fn refusal(&self) -> Option<String> {
        if !self.is_on() {
            return None;
        }
        let reasons = self.lock().reasons(self.names, &self.marker);
        if reasons.is_empty() {
            return None; // Left readonly between the two reads.
        }
        Some(format!(
            "{} is readonly ({}): write refused, nothing was written",
            self.names.daemon,
            reasons.join("; ")
        ))
    }

    pub fn status(&self) -> ReadonlyStatus {
        let st = self.lock();
        ReadonlyStatus {
            readonly: self.is_on(),
            reasons: st.reasons(self.names, &self.marker),
            admin: st.admin,
            marker: self.marker.display().to_string(),
            marker_exists: st.marker,
            disk_used_percent: st
                .disks
                .iter()
                .filter_map(|d| d.usage.map(|u| u.shown_percent()))
                .max(),
            disk_usage_high_percent: st.high,
            disk_usage_low_percent: st.low,
            disks: st
                .disks
                .iter()
                .map(|d| DiskStatus {
                    dir: d.dir.display().to_string(),
                    used_percent: d.usage.map(|u| u.shown_percent()),
                    full: d.full,
                })
                .collect(),
        }
    }

    /// `PUT /readonly`.
    pub fn set_admin(&self, on: bool) {
        self.update(|st| st.admin = on);
    }

    /// The storage's own reason (a journal that cannot create its next segment), or `None` once it can
    /// take writes again: the daemon stays up, refuses writes with the reason, and goes on by itself.
    pub fn set_storage_fault(&self, why: Option<String>) {
        self.update(|st| st.storage = why);
    }

    /// Asks `probe` at every [`Readonly::check`] whether the storage can take writes (`None`) or why not:
    /// the storage reason follows it, so it goes once the storage recovers.
    pub fn set_storage_probe(&self, probe: impl Fn() -> Option<String> + Send + Sync + 'static) {
        *self.storage_probe.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(probe));
    }

    /// A reload: `readonly.enabled` and the thresholds.
    pub fn reconfigure(&self, config_enabled: bool, high: u8, low: u8) {
        self.update(|st| {
            st.config = config_enabled;
            st.high = high;
            st.low = low;
        });
        // The disk reason follows the new thresholds at once, not at the next poll.
        self.check();
    }

    /// Whether any watched filesystem is past its high mark (and not yet back below the low mark): the
    /// disk reason alone, for a daemon that lets some writes through while readonly for other reasons.
    pub fn disk_full(&self) -> bool {
        self.lock().disks.iter().any(|d| d.full)
    }

    /// Looks at the marker file and the disks; called every check interval (from a blocking thread: a hung
    /// filesystem must not stall the executor).
    pub fn check(&self) {
        let marker = self.marker.exists();
        let dirs: Vec<PathBuf> = self.lock().disks.iter().map(|d| d.dir.clone()).collect();
        let usages: Vec<std::io::Result<DiskUsage>> = dirs.iter().map(|d| disk_usage(d)).collect();
        let storage = self
            .storage_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|probe| probe());
        self.update(|st| {
            st.marker = marker;
            if let Some(storage) = storage {
                st.storage = storage;
            }
            let (high, low) = (st.high, st.low);
            for (disk, usage) in st.disks.iter_mut().zip(usages) {
                match usage {
                    Ok(usage) => {
                        if disk.error.take().is_some() {
                            log::info!("disk usage of {} readable again", disk.dir.display());
                        }
                        disk.full = disk_full(disk.full, usage, high, low);
                        disk.usage = Some(usage);
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if disk.error.as_deref() != Some(e.as_str()) {
                            log::warn!(
                                "cannot read the disk usage of {}: {e}; the disk threshold keeps its last state",
                                disk.dir.display()
                            );
                            disk.error = Some(e);
                        }
                    }
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change`, recomputes the flag, and logs and reports a change of state or of reasons.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let (was, now, before, after) = {
            let mut st = self.lock();
            let before = st.reasons(self.names, &self.marker);
            change(&mut st);
            let after = st.reasons(self.names, &self.marker);
            let now = !after.is_empty();
            let was = self.on.swap(now, Ordering::AcqRel);
            (was, now, before, after)
        };
        // Disk percentages move all the time; only a change in which reasons hold is news.
        let kinds = |reasons: &[String]| -> Vec<String> {
            reasons
                .iter()
                .map(|r| r.split(' ').next().unwrap_or_default().to_string())
                .collect()
        };
        match (was, now) {
            (false, true) => log::warn!("entering readonly: {}", after.join("; ")),
            (true, false) => log::info!("leaving readonly (was: {}): writes accepted", before.join("; ")),
            (true, true) if kinds(&before) != kinds(&after) => {
                log::info!("still readonly, now because: {}", after.join("; "))
            }
            _ => {}
        }
        if was != now {
            if let Some(hook) = &*self.on_change.lock().unwrap_or_else(PoisonError::into_inner) {
                hook(now);
            }
        }
    }
}

/// Adds `--readonly` to a daemon's overrides: the same as `--set KEY=true` (its readonly config key),
/// applied after every `--set`.
pub fn with_flag(mut common: crate::CommonArgs, readonly: bool, key: &str) -> crate::CommonArgs {
    if readonly {
        common.set.push(crate::config::Override {
            flag: "--readonly".into(),
            key: key.into(),
            value: toml::Value::Boolean(true),
        });
    }
    common
}

/// Checks the marker file and the disks every `interval()` (read at each turn: a reload may change it), on a
/// blocking thread (a hung filesystem must not stall the executor), until `shutdown`.
pub async fn poll(
    readonly: std::sync::Arc<Readonly>,
    interval: impl Fn() -> std::time::Duration,
    shutdown: crate::Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval()) => {}
            _ = shutdown.wait() => return,
        }
        let r = readonly.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || r.check()).await {
            log::warn!("readonly check failed: {e}");
        }
    }
}

/// The admin routes `GET /readonly` (state and reasons, JSON) and `PUT /readonly` (body `true`/`false` or
/// `on`/`off`), for [`crate::DaemonContext::add_admin_routes`].
pub fn admin_routes(readonly: std::sync::Arc<Readonly>) -> axum::Router {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::Json;
    async fn get(State(r): State<std::sync::Arc<Readonly>>) -> Json<ReadonlyStatus> {
        Json(r.status())
    }
    async fn put(State(r): State<std::sync::Arc<Readonly>>, body: String) -> axum::response::Response {
        match parse_switch(&body) {
            Ok(on) => {
                log::info!("PUT /readonly {on}");
                r.set_admin(on);
                Json(r.status()).into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        }
    }
    axum::Router::new()
        .route("/readonly", axum::routing::get(get).put(put))
        .with_state(readonly)
}

/// Parses the body of `PUT /readonly`: `true`/`on`/`1` or `false`/`off`/`0`, any case, surrounding
/// whitespace (and a JSON string's quotes) ignored.
pub fn parse_switch(body: &str) -> Result<bool, String> {
    let word = body.trim().trim_matches('"').to_ascii_lowercase();
    match word.as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(format!(
            "expected true/false or on/off, got {:?}",
            body.chars().take(40).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;

    const WRITER: ReadonlyNames = ReadonlyNames {
        daemon: "logtank-writer",
        config_key: "readonly.enabled",
    };

    fn usage(p: f64) -> DiskUsage {
        DiskUsage { used_percent: p }
    }

    // Proves the hysteresis: enter above high, stay until below low, no flapping in between.
    #[test]
    fn disk_hysteresis() {
        let (high, low) = (95, 90);
        let mut full = false;
        let mut changes = 0;
        for p in [50.0, 94.9, 95.0, 95.2, 94.0, 92.0, 90.0, 89.9, 91.0, 95.0, 96.0] {
            let next = disk_full(full, usage(p), high, low);
            if next != full {
                changes += 1;
            }
            full = next;
            if p == 95.2 {
                assert!(full);
            }
            if p == 89.9 {
                assert!(!full);
            }
        }
        assert!(full);
        assert_eq!(changes, 3);
    }

    // Proves df's rounding and the reserved-blocks rule.
    #[test]
    fn usage_like_df() {
        let u = DiskUsage::from_blocks(1000, 100, 50);
        // used 900 of (900 + 50) usable.
        assert!((u.used_percent - 94.736).abs() < 0.01);
        assert_eq!(u.shown_percent(), 95);
        assert_eq!(DiskUsage::from_blocks(0, 0, 0).shown_percent(), 100);
    }

    // Proves every reason shows in the refusal, the marker is seen by `check`, and the change hook runs on
    // entering and leaving only.
    #[test]
    fn reasons_and_refusal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let marker = dir.path().join("readonly");
        let ro = Readonly::new(
            WRITER,
            false,
            marker.clone(),
            vec![dir.path().to_path_buf()],
            100,
            99,
        );
        let changes = Arc::new(AtomicUsize::new(0));
        let counter = changes.clone();
        ro.set_on_change(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        ro.check();
        assert!(ro.refusal().is_none());
        std::fs::write(&marker, "").unwrap_or_else(|e| panic!("{e}"));
        ro.check();
        ro.set_admin(true);
        let refusal = ro.refusal().expect("readonly");
        assert!(
            refusal.starts_with(&format!(
                "logtank-writer is readonly (marker {} exists; set by PUT /readonly",
                marker.display()
            )),
            "{refusal}"
        );
        assert!(
            refusal.ends_with("): write refused, nothing was written"),
            "{refusal}"
        );
        std::fs::remove_file(&marker).unwrap_or_else(|e| panic!("{e}"));
        ro.check();
        assert!(ro.is_on());
        ro.set_admin(false);
        assert!(!ro.is_on());
        ro.reconfigure(true, 100, 99);
        assert!(ro.refusal().expect("config").contains("readonly.enabled is set"));
        assert_eq!(changes.load(Ordering::SeqCst), 3);
        let status = ro.status();
        assert!(status.readonly && !status.admin && !status.marker_exists);
        assert!(status.disk_used_percent.is_some());
    }

    #[test]
    fn switch_words() {
        for (body, want) in [("true", true), (" ON\n", true), ("\"off\"", false), ("0", false)] {
            assert_eq!(parse_switch(body), Ok(want), "{body}");
        }
        assert!(parse_switch("maybe").is_err());
    }
}
