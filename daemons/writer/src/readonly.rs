//! Readonly mode: writes are refused with a clear error while any reason holds (DESIGN §5):
//!
//! - `readonly.enabled` in the config, or `--readonly` (an override of that key);
//! - the marker file `<data_root>/readonly` exists (polled every `readonly.check_interval_ms`);
//! - an operator said so with `PUT /readonly` on the admin port;
//! - the filesystem holding the raw log is fuller than `readonly.disk_usage_high_percent`; this reason
//!   goes only once usage is below `readonly.disk_usage_low_percent` (hysteresis, so it does not flap).
//!
//! [`Readonly`] holds the reasons; the connection tasks ask [`Readonly::refusal`] before each append (an
//! atomic load while writable). Entering and leaving log one line with the reasons and call the change
//! hook (which refreshes `STATUS=` and the metric).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// The daemon's name in refusals, as operators see it in the client's error.
const DAEMON: &str = "logtank-writer";

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

/// The hysteresis rule: a full disk makes the writer readonly above `high`; it stays readonly until usage
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
    pub disk_used_percent: Option<u64>,
    pub disk_usage_high_percent: u8,
    pub disk_usage_low_percent: u8,
}

#[derive(Debug)]
struct State {
    config: bool,
    admin: bool,
    marker: bool,
    disk_full: bool,
    disk: Option<DiskUsage>,
    high: u8,
    low: u8,
    /// The last disk error reported, so a persistent one is logged once.
    disk_error: Option<String>,
}

impl State {
    fn reasons(&self, marker: &Path) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.config {
            reasons.push("readonly.enabled is set (config or --readonly)".to_string());
        }
        if self.marker {
            reasons.push(format!("marker {} exists", marker.display()));
        }
        if self.admin {
            reasons.push("set by PUT /readonly on the admin port".to_string());
        }
        if self.disk_full {
            match self.disk {
                Some(usage) if usage.used_percent > f64::from(self.high) => {
                    reasons.push(format!("disk {}% used > {}%", usage.shown_percent(), self.high))
                }
                Some(usage) => reasons.push(format!(
                    "disk {}% used, not yet below {}%",
                    usage.shown_percent(),
                    self.low
                )),
                None => reasons.push(format!("disk was more than {}% used", self.high)),
            }
        }
        reasons
    }
}

type ChangeHook = Box<dyn Fn(bool) + Send + Sync>;

/// The readonly reasons and the fast flag derived from them; shared by every connection.
pub struct Readonly {
    marker: PathBuf,
    disk_dir: PathBuf,
    on: AtomicBool,
    state: Mutex<State>,
    on_change: Mutex<Option<ChangeHook>>,
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
    /// `marker` is the marker file; `disk_dir` a directory on the filesystem whose usage counts.
    pub fn new(config_enabled: bool, marker: PathBuf, disk_dir: PathBuf, high: u8, low: u8) -> Readonly {
        let readonly = Readonly {
            marker,
            disk_dir,
            on: AtomicBool::new(false),
            state: Mutex::new(State {
                config: config_enabled,
                admin: false,
                marker: false,
                disk_full: false,
                disk: None,
                high,
                low,
                disk_error: None,
            }),
            on_change: Mutex::new(None),
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
        let reasons = self.lock().reasons(&self.marker);
        if reasons.is_empty() {
            return None; // Left readonly between the two reads.
        }
        Some(format!(
            "{DAEMON} is readonly ({}): write refused, nothing was written",
            reasons.join("; ")
        ))
    }

    pub fn status(&self) -> ReadonlyStatus {
        let st = self.lock();
        ReadonlyStatus {
            readonly: self.is_on(),
            reasons: st.reasons(&self.marker),
            admin: st.admin,
            marker: self.marker.display().to_string(),
            marker_exists: st.marker,
            disk_used_percent: st.disk.map(|d| d.shown_percent()),
            disk_usage_high_percent: st.high,
            disk_usage_low_percent: st.low,
        }
    }

    /// `PUT /readonly`.
    pub fn set_admin(&self, on: bool) {
        self.update(|st| st.admin = on);
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

    /// Looks at the marker file and the disk; called every `readonly.check_interval_ms` (from a blocking
    /// thread: a hung filesystem must not stall the executor).
    pub fn check(&self) {
        let marker = self.marker.exists();
        let disk = disk_usage(&self.disk_dir);
        self.update(|st| {
            st.marker = marker;
            match disk {
                Ok(usage) => {
                    if st.disk_error.take().is_some() {
                        log::info!("disk usage of {} readable again", self.disk_dir.display());
                    }
                    st.disk_full = disk_full(st.disk_full, usage, st.high, st.low);
                    st.disk = Some(usage);
                }
                Err(e) => {
                    let e = e.to_string();
                    if st.disk_error.as_deref() != Some(e.as_str()) {
                        log::warn!(
                            "cannot read the disk usage of {}: {e}; the disk threshold keeps its last state",
                            self.disk_dir.display()
                        );
                        st.disk_error = Some(e);
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
            let before = st.reasons(&self.marker);
            change(&mut st);
            let after = st.reasons(&self.marker);
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
        let ro = Readonly::new(false, marker.clone(), dir.path().to_path_buf(), 100, 99);
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
