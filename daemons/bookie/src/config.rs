//! `/etc/logtank/bookie-N.toml`: the shared sections (`[server]`, `[admin]`, `[log]`, `[io]`) plus the
//! bookie's own `[bookie]`, `[gc]` and `[coord]` (a bookie always has coordination: it registers there and its
//! cookie lives there). Every key has a default (instance 1's: port 3181, admin 9161, data `/data/bookie-1`);
//! unknown keys are rejected; values that parse but make no sense are refused (exit 78) or, under
//! `--check-config`, reported as warnings. `logtank bookie format --config FILE` reads the same file.

use std::path::PathBuf;
use std::time::Duration;

use logtank_bookie_proto::{ENTRY_OVERHEAD_BYTES, FRAME_BYTES_MAX_DEFAULT};
use logtank_coord::CoordConfig;
use logtank_journal::frame::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use logtank_journal::IoBackend;
use logtank_runtime::config::{AdminConfig, InvalidValue, IoConfig, LogConfig, ServerConfig};
use logtank_runtime::ioprio::IoClass;
use serde::{Deserialize, Deserializer, Serialize};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:3181";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9161";
pub const DEFAULT_DATA_ROOT: &str = "/data/bookie-1";
/// Segments of the entry store: compaction reclaims space a segment at a time.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 128 << 20;
pub const DEFAULT_REQUESTS_IN_FLIGHT_MAX: usize = 1000;
pub const DEFAULT_CONNECTIONS_MAX: usize = 1024;
/// A connection that sends nothing for this long (and waits for nothing) is closed; clients reconnect.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 600_000;
/// The marker file under the data root that makes the bookie readonly (as `/data/readonly` does for the
/// writer).
pub const READONLY_MARKER: &str = "readonly";
/// The largest frame a bookie may be configured to take: the journal's record limit must hold it.
pub const FRAME_BYTES_MAX_MAX: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BookieConfig {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub io: IoConfig,
    pub bookie: BookieSection,
    pub gc: GcSection,
    pub coord: CoordConfig,
}

impl Default for BookieConfig {
    fn default() -> Self {
        BookieConfig {
            server: ServerConfig::new(DEFAULT_LISTEN, DEFAULT_DATA_ROOT),
            admin: AdminConfig::new(DEFAULT_ADMIN_LISTEN),
            log: LogConfig::default(),
            // The journal thread acknowledges every add: the highest best-effort level (compaction runs at 7).
            io: IoConfig {
                class: IoClass::BestEffort,
                level: 0,
            },
            bookie: BookieSection::default(),
            gc: GcSection::default(),
            coord: CoordConfig::default(),
        }
    }
}

/// `[bookie]`: identity, directories, the protocol's bounds, readonly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BookieSection {
    /// The journal, which is also the entry store; default `<data_root>/journal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_dir: Option<PathBuf>,
    /// The ledgers directory (cookie; default `<data_root>/ledgers`). Its disk is watched as the journal's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledgers_dir: Option<PathBuf>,
    /// The coordination root of the ledger layout (`/ledgers`, or the DistributedLog guide's
    /// `/messaging/bookkeeper/ledgers`).
    pub ledgers_root: String,
    /// The bookie id registered and written in the cookie (`host:port`); absent = the listen address with
    /// a wildcard IP replaced by this host's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Refuse adds from start (`--readonly` sets it too); reads and fencing go on.
    pub readonly: bool,
    pub disk_usage_high_percent: u8,
    pub disk_usage_low_percent: u8,
    pub disk_check_interval_ms: u64,
    /// The largest request (BookKeeper's `nettyMaxFrameSizeBytes`); an entry is at most this minus its
    /// headers.
    pub frame_bytes_max: usize,
    /// Requests a connection may have in flight; more get `ETOOMANYREQUESTS`.
    pub requests_in_flight_max: usize,
    pub connections_max: usize,
    pub idle_timeout_ms: u64,
    pub segment_size_bytes: u64,
    /// Adds ask for their fsync at once (group commit); this bounds how long anything else waits.
    pub fsync_interval_ms: u64,
    #[serde(deserialize_with = "io_backend")]
    pub io_backend: String,
}

impl Default for BookieSection {
    fn default() -> Self {
        BookieSection {
            journal_dir: None,
            ledgers_dir: None,
            ledgers_root: logtank_ledger::DEFAULT_ROOT.into(),
            advertise: None,
            readonly: false,
            disk_usage_high_percent: 95,
            disk_usage_low_percent: 90,
            disk_check_interval_ms: 10_000,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            requests_in_flight_max: DEFAULT_REQUESTS_IN_FLIGHT_MAX,
            connections_max: DEFAULT_CONNECTIONS_MAX,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            fsync_interval_ms: 1000,
            io_backend: "auto".into(),
        }
    }
}

/// `[gc]`: garbage collection of deleted ledgers and compaction of the segments they leave mostly dead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcSection {
    /// How often the bookie compares its ledgers with the metadata and compacts.
    pub interval_ms: u64,
    /// A closed segment whose live bytes are at most this fraction of it is compacted.
    pub compaction_live_fraction_max: f64,
    /// Compaction copies at most this many bytes per second (so adds keep the disk).
    pub compaction_rate_bytes_per_sec: u64,
}

impl Default for GcSection {
    fn default() -> Self {
        GcSection {
            interval_ms: 60_000,
            compaction_live_fraction_max: 0.5,
            compaction_rate_bytes_per_sec: 64 << 20,
        }
    }
}

fn io_backend<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<IoBackend>().map_err(serde::de::Error::custom)?;
    Ok(s)
}

logtank_runtime::impl_daemon_config!(BookieConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        self.check()
    }
    fn warnings(&self) -> Vec<String> {
        self.check_warnings()
    }
});

impl BookieConfig {
    pub fn journal_dir(&self) -> PathBuf {
        self.bookie
            .journal_dir
            .clone()
            .unwrap_or_else(|| self.server.data_root.join("journal"))
    }

    pub fn ledgers_dir(&self) -> PathBuf {
        self.bookie
            .ledgers_dir
            .clone()
            .unwrap_or_else(|| self.server.data_root.join("ledgers"))
    }

    pub fn readonly_marker(&self) -> PathBuf {
        self.server.data_root.join(READONLY_MARKER)
    }

    pub fn io_backend(&self) -> IoBackend {
        self.bookie.io_backend.parse().unwrap_or_default()
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.bookie.idle_timeout_ms)
    }

    /// The journal's record limit: the largest entry a frame can carry.
    pub fn record_bytes_max(&self) -> u32 {
        self.bookie.frame_bytes_max as u32
    }

    fn check(&self) -> Result<(), InvalidValue> {
        let invalid = |key: &str, message: String| {
            Err(InvalidValue {
                key: key.into(),
                message,
            })
        };
        let b = &self.bookie;
        if let Err(e) = logtank_ledger::Layout::new(&b.ledgers_root) {
            return invalid("bookie.ledgers_root", e.to_string());
        }
        if let Some(id) = &b.advertise {
            if let Err(e) = logtank_ledger::layout::check_bookie_id(id) {
                return invalid("bookie.advertise", e.to_string());
            }
        }
        let min_frame = 4 + 20 + ENTRY_OVERHEAD_BYTES;
        if !(min_frame..=FRAME_BYTES_MAX_MAX).contains(&b.frame_bytes_max) {
            return invalid(
                "bookie.frame_bytes_max",
                format!("must be within {min_frame}..={FRAME_BYTES_MAX_MAX}"),
            );
        }
        let journal_min = (logtank_journal::frame::frame_len(b.frame_bytes_max)
            + SEGMENT_HEADER_BYTES
            + FRAME_HEADER_BYTES) as u64;
        if !(journal_min..=logtank_journal::SEGMENT_BYTES_MAX).contains(&b.segment_size_bytes) {
            return invalid(
                "bookie.segment_size_bytes",
                format!(
                    "must hold the largest entry (bookie.frame_bytes_max = {}): {journal_min}..={}",
                    b.frame_bytes_max,
                    logtank_journal::SEGMENT_BYTES_MAX
                ),
            );
        }
        for (key, value) in [
            ("bookie.requests_in_flight_max", b.requests_in_flight_max as u64),
            ("bookie.connections_max", b.connections_max as u64),
            ("bookie.idle_timeout_ms", b.idle_timeout_ms),
            ("bookie.fsync_interval_ms", b.fsync_interval_ms),
            ("bookie.disk_check_interval_ms", b.disk_check_interval_ms),
            ("gc.interval_ms", self.gc.interval_ms),
            (
                "gc.compaction_rate_bytes_per_sec",
                self.gc.compaction_rate_bytes_per_sec,
            ),
        ] {
            if value == 0 {
                return invalid(key, "must be positive".into());
            }
        }
        if b.disk_usage_high_percent > 100 {
            return invalid(
                "bookie.disk_usage_high_percent",
                "is a percentage: 0 to 100".into(),
            );
        }
        if b.disk_usage_low_percent >= b.disk_usage_high_percent {
            return invalid(
                "bookie.disk_usage_low_percent",
                format!(
                    "must be below bookie.disk_usage_high_percent ({}), or readonly would flap",
                    b.disk_usage_high_percent
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.gc.compaction_live_fraction_max) {
            return invalid(
                "gc.compaction_live_fraction_max",
                "is a fraction: 0.0 to 1.0".into(),
            );
        }
        if let Err(e) = self.coord.validate() {
            return invalid("coord", e);
        }
        Ok(())
    }

    fn check_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.bookie.disk_usage_high_percent == 100 {
            w.push("bookie.disk_usage_high_percent = 100 never triggers: the disk fills up first".into());
        }
        if self.gc.compaction_live_fraction_max >= 0.9 {
            w.push(format!(
                "gc.compaction_live_fraction_max = {} copies nearly live segments over and over",
                self.gc.compaction_live_fraction_max
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logtank_runtime::config::DaemonConfig;

    fn check(edit: impl FnOnce(&mut BookieConfig)) -> Result<(), String> {
        let mut config = BookieConfig::default();
        edit(&mut config);
        config.validate().map_err(|e| format!("{}: {}", e.key, e.message))
    }

    // Proves the defaults are valid and every rule names its key: quorum-free limits, marks that could
    // flap, a segment too small for a frame, a bad root or bookie id.
    #[test]
    fn invalid_values_are_refused_with_their_key() {
        assert_eq!(check(|_| {}), Ok(()));
        let refused = [
            check(|c| c.bookie.disk_usage_low_percent = 95),
            check(|c| c.bookie.disk_usage_high_percent = 101),
            check(|c| c.bookie.frame_bytes_max = 10),
            check(|c| c.bookie.segment_size_bytes = 1 << 20),
            check(|c| c.bookie.requests_in_flight_max = 0),
            check(|c| c.bookie.ledgers_root = "ledgers".into()),
            check(|c| c.bookie.advertise = Some("readonly".into())),
            check(|c| c.gc.compaction_live_fraction_max = 1.5),
            check(|c| c.gc.interval_ms = 0),
        ];
        let keys: Vec<String> = refused
            .iter()
            .map(|r| {
                r.clone()
                    .unwrap_err()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            keys,
            [
                "bookie.disk_usage_low_percent",
                "bookie.disk_usage_high_percent",
                "bookie.frame_bytes_max",
                "bookie.segment_size_bytes",
                "bookie.requests_in_flight_max",
                "bookie.ledgers_root",
                "bookie.advertise",
                "gc.compaction_live_fraction_max",
                "gc.interval_ms",
            ]
        );
        let mut small = BookieConfig::default();
        small.bookie.frame_bytes_max = 65536;
        small.bookie.segment_size_bytes = 1 << 20;
        assert_eq!(
            small.validate().map_err(|e| e.key),
            Ok(()),
            "a small frame fits a small segment"
        );
        assert_eq!(small.journal_dir(), PathBuf::from("/data/bookie-1/journal"));
        assert_eq!(small.ledgers_dir(), PathBuf::from("/data/bookie-1/ledgers"));
    }
}
