//! `/etc/logtank/indexes.toml`: the shared sections (`[server]`, `[admin]`, `[log]`, `[io]`) plus the
//! daemon's own `[indexes]`, `[pipeline]` and `[coord]`. Every key has a default; unknown keys are rejected;
//! values that parse but make no sense are refused (exit 78) or reported by `--check-config` (warnings).

use std::path::PathBuf;
use std::time::Duration;

use logtank_coord::OptionalCoordConfig;
use logtank_runtime::config::{
    check_listen_address, AdminConfig, InvalidValue, IoConfig, LogConfig, ServerConfig,
};
use logtank_runtime::ioprio::IoClass;
use logtank_storage::StorageOptions;
use serde::{Deserialize, Deserializer, Serialize};

/// IndexTank's IndexesLogServer reader port (`-rp`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:15100";
/// IndexTank's LogManager port (`-mp`).
pub const DEFAULT_MANAGER_LISTEN: &str = "127.0.0.1:16000";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9151";
pub const DEFAULT_DATA_ROOT: &str = "/data";
/// How often the marker files are looked at (IndexTank looked at every cycle, sleeping 15–30 s between).
pub const DEFAULT_MARKER_POLL_MS: u64 = 1000;
/// `indexes.master_lease_ms`: ten epoch reads.
pub const DEFAULT_MASTER_LEASE_MS: u64 = 10_000;
/// How long the pipeline sleeps after a cycle that found nothing to do.
pub const DEFAULT_IDLE_MS: u64 = 1000;
/// The smallest page: a page must hold at least one frame of a segment to make progress.
pub const PAGE_BYTES_MIN: usize = 4096;
/// The largest page: the whole page is one reply, held in memory and sent in one message.
pub const PAGE_BYTES_MAX: usize = 256 << 20;
/// Below this, marker polling costs more than it is worth and fills the log with nothing.
pub const MARKER_POLL_MS_MIN: u64 = 10;

/// The whole configuration of logtank-indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexesConfig {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub io: IoConfig,
    pub indexes: IndexesSection,
    pub pipeline: PipelineSection,
    /// Where the master registers its reader and bumps the epoch. Empty `servers` (the default) = no
    /// coordination: the markers alone decide, nothing is registered and nothing fences.
    pub coord: OptionalCoordConfig,
}

impl Default for IndexesConfig {
    fn default() -> Self {
        IndexesConfig {
            server: ServerConfig::new(DEFAULT_LISTEN, DEFAULT_DATA_ROOT),
            admin: AdminConfig::new(DEFAULT_ADMIN_LISTEN),
            log: LogConfig::default(),
            // Dealing, sorting and optimizing are bulk IO that must never delay the writer's fsyncs
            // (DESIGN §5; IndexTank ran IndexesLogServer under `ionice -c2 -n7`).
            io: IoConfig {
                class: IoClass::BestEffort,
                level: 7,
            },
            indexes: IndexesSection::default(),
            pipeline: PipelineSection::default(),
            coord: OptionalCoordConfig::default(),
        }
    }
}

/// `[indexes]`: the LogManager port, the address registered for recovery, and marker polling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexesSection {
    /// `IP:PORT` of the LogManager service (`--manager-listen`).
    #[serde(deserialize_with = "listen_address")]
    pub manager_listen: String,
    /// `host:port` registered at `/logtank/services/recovery` while this host is the master; absent = the
    /// reader's bound address, with a wildcard IP replaced by this host's name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "advertise_address"
    )]
    pub advertise: Option<String>,
    /// How often `<data_root>/master` and `safe_to_read` are looked at (and, as the master, the epoch).
    pub marker_poll_ms: u64,
    /// With coordination: the master deals and serves reads only while it confirmed its epoch within this
    /// long, and a newly promoted master waits this long after its bump before it starts (a previous master
    /// cut off from coordination has stopped by then). At least twice `marker_poll_ms`.
    pub master_lease_ms: u64,
    /// Addresses (`IP` or `IP/prefix-bits`) whose `delete_index` and `enqueue_for_optimization` calls are
    /// served (default: this host's loopback); from anywhere else they are refused. Reads are served to
    /// anyone who can connect.
    pub manager_state_changes_from: Vec<AddressRange>,
}

/// An IP address or a prefix of them (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    pub addr: std::net::IpAddr,
    pub prefix_bits: u8,
}

impl AddressRange {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        match (self.addr, ip) {
            (V4(a), V4(b)) => prefix_matches(&a.octets(), &b.octets(), self.prefix_bits),
            (V6(a), V6(b)) => prefix_matches(&a.octets(), &b.octets(), self.prefix_bits),
            (V6(a), V4(b)) => a.to_ipv4_mapped() == Some(b) && self.prefix_bits >= 96,
            (V4(a), V6(b)) => b
                .to_ipv4_mapped()
                .is_some_and(|b| prefix_matches(&a.octets(), &b.octets(), self.prefix_bits)),
        }
    }
}

fn prefix_matches(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits).min(a.len() * 8);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

impl std::str::FromStr for AddressRange {
    type Err = String;

    fn from_str(s: &str) -> Result<AddressRange, String> {
        let (addr, bits) = s.split_once('/').map_or((s, None), |(a, b)| (a, Some(b)));
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or IP/prefix-bits"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("'{s}': the prefix must be 0..={max} bits"))?,
        };
        Ok(AddressRange { addr, prefix_bits })
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_bits)
    }
}

impl Serialize for AddressRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AddressRange, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for IndexesSection {
    fn default() -> Self {
        IndexesSection {
            manager_listen: DEFAULT_MANAGER_LISTEN.into(),
            advertise: None,
            marker_poll_ms: DEFAULT_MARKER_POLL_MS,
            master_lease_ms: DEFAULT_MASTER_LEASE_MS,
            manager_state_changes_from: vec![
                AddressRange {
                    addr: std::net::Ipv4Addr::new(127, 0, 0, 0).into(),
                    prefix_bits: 8,
                },
                AddressRange {
                    addr: std::net::Ipv6Addr::LOCALHOST.into(),
                    prefix_bits: 128,
                },
            ],
        }
    }
}

impl IndexesSection {
    pub fn marker_poll(&self) -> Duration {
        Duration::from_millis(self.marker_poll_ms)
    }

    pub fn master_lease(&self) -> Duration {
        Duration::from_millis(self.master_lease_ms)
    }
}

/// `[pipeline]`: the master's dealer, sorter, optimizer and cleaner, and the reader's page size. The
/// defaults are IndexTank's constants ([`StorageOptions::default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Sleep after a cycle that found nothing to do.
    pub idle_ms: u64,
    /// Bytes of segment files one `read_page` reads (the record crossing the limit is finished).
    pub page_bytes: usize,
    /// Sort an index's unsorted segments once there are more than this many …
    pub sort_unsorted_segments_max: usize,
    /// … or once they hold more than this many bytes.
    pub sort_unsorted_bytes_max: u64,
    /// Memory one sort fills before it spills a sorted run to disk.
    pub sort_memory_bytes: usize,
    /// Queue an index for optimization once it has more unoptimized segments than this.
    pub optimize_unoptimized_segments_min: usize,
    /// Inputs of one optimization, the previous snapshot included.
    pub optimize_inputs_max: usize,
    /// Superseded segments of an index are removed only once nobody read it for this long.
    pub read_guard_ms: u64,
    /// Dealt raw segments are kept this long in `raw/history`.
    pub raw_history_retention_hours: u64,
    /// A deleted index is kept in `storage/deleted-indexes` this long before its files are removed.
    pub deleted_index_retention_hours: u64,
    /// Dealing, sorting and optimizing write new files before they remove old ones: they pause while the
    /// data root's filesystem is fuller than this (the cleaner still runs), so the pipeline never takes the
    /// writer's last room.
    pub disk_usage_high_percent: u8,
    /// They go on once usage is below this (hysteresis: no flapping).
    pub disk_usage_low_percent: u8,
    /// The pipeline thread doing no IO at all (no byte read or written) for this long in the middle of a
    /// cycle counts as stuck: the watchdog is no longer fed and systemd restarts the daemon.
    pub stall_timeout_ms: u64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        let o = StorageOptions::default();
        PipelineSection {
            idle_ms: DEFAULT_IDLE_MS,
            page_bytes: o.page_bytes,
            sort_unsorted_segments_max: o.sort_unsorted_segments_max,
            sort_unsorted_bytes_max: o.sort_unsorted_bytes_max,
            sort_memory_bytes: o.sort_memory_bytes,
            optimize_unoptimized_segments_min: o.optimize_unoptimized_segments_min,
            optimize_inputs_max: o.optimize_inputs_max,
            read_guard_ms: o.read_guard.as_millis() as u64,
            raw_history_retention_hours: o.raw_history_retention.as_secs() / 3600,
            deleted_index_retention_hours: o.deleted_index_retention.as_secs() / 3600,
            // Below the writer's readonly mark (96% shown): the raw log keeps room after the pipeline stops.
            disk_usage_high_percent: 93,
            disk_usage_low_percent: 88,
            stall_timeout_ms: 60_000,
        }
    }
}

impl PipelineSection {
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// The storage layer's options from this section.
    pub fn storage_options(&self) -> StorageOptions {
        StorageOptions {
            page_bytes: self.page_bytes,
            sort_unsorted_segments_max: self.sort_unsorted_segments_max,
            sort_unsorted_bytes_max: self.sort_unsorted_bytes_max,
            sort_memory_bytes: self.sort_memory_bytes,
            optimize_unoptimized_segments_min: self.optimize_unoptimized_segments_min,
            optimize_inputs_max: self.optimize_inputs_max,
            read_guard: Duration::from_millis(self.read_guard_ms),
            raw_history_retention: Duration::from_secs(self.raw_history_retention_hours.saturating_mul(3600)),
            deleted_index_retention: Duration::from_secs(
                self.deleted_index_retention_hours.saturating_mul(3600),
            ),
            ..StorageOptions::default()
        }
    }
}

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_listen_address(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn advertise_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_listen_address(&s).map_err(serde::de::Error::custom)?;
    if s.ends_with(":0") {
        return Err(serde::de::Error::custom(format!(
            "'{s}': an advertised address needs a real port"
        )));
    }
    Ok(Some(s))
}

logtank_runtime::impl_daemon_config!(IndexesConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        self.check()
    }
    fn warnings(&self) -> Vec<String> {
        self.check_warnings()
    }
});

impl IndexesConfig {
    /// `<data_root>`: markers, `storage/`.
    pub fn data_root(&self) -> PathBuf {
        self.server.data_root.clone()
    }

    fn check(&self) -> Result<(), InvalidValue> {
        let invalid = |key: &str, message: String| {
            Err(InvalidValue {
                key: key.into(),
                message,
            })
        };
        let p = &self.pipeline;
        if !(PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&p.page_bytes) {
            return invalid(
                "pipeline.page_bytes",
                format!("{} is outside {PAGE_BYTES_MIN}..={PAGE_BYTES_MAX}", p.page_bytes),
            );
        }
        if self.indexes.marker_poll_ms < MARKER_POLL_MS_MIN {
            return invalid(
                "indexes.marker_poll_ms",
                format!("must be at least {MARKER_POLL_MS_MIN}"),
            );
        }
        if self.indexes.master_lease_ms < 2 * self.indexes.marker_poll_ms {
            return invalid(
                "indexes.master_lease_ms",
                format!(
                    "must be at least twice indexes.marker_poll_ms ({}): the epoch is read that often, and one slow \
                     read must not end the lease",
                    self.indexes.marker_poll_ms
                ),
            );
        }
        if p.idle_ms == 0 {
            return invalid(
                "pipeline.idle_ms",
                "must be positive (0 would spin on an idle pipeline)".into(),
            );
        }
        if p.stall_timeout_ms < 1000 {
            return invalid(
                "pipeline.stall_timeout_ms",
                "must be at least 1000 (a cycle pauses between its reads and writes)".into(),
            );
        }
        if p.disk_usage_high_percent > 100 || p.disk_usage_high_percent == 0 {
            return invalid(
                "pipeline.disk_usage_high_percent",
                "must be within 1..=100".into(),
            );
        }
        if p.disk_usage_low_percent >= p.disk_usage_high_percent {
            return invalid(
                "pipeline.disk_usage_low_percent",
                format!(
                    "must be below pipeline.disk_usage_high_percent ({}), or the pause would flap",
                    p.disk_usage_high_percent
                ),
            );
        }
        if p.optimize_inputs_max < 2 {
            return invalid(
                "pipeline.optimize_inputs_max",
                "must be at least 2 (the snapshot and one segment)".into(),
            );
        }
        if p.sort_memory_bytes < PAGE_BYTES_MIN {
            return invalid(
                "pipeline.sort_memory_bytes",
                format!("must be at least {PAGE_BYTES_MIN}"),
            );
        }
        if self.indexes.manager_listen == self.server.listen && !self.server.listen.ends_with(":0") {
            return invalid(
                "indexes.manager_listen",
                format!(
                    "'{}' is server.listen too; the reader and the manager need their own ports",
                    self.server.listen
                ),
            );
        }
        if let Err(e) = self.coord.validate() {
            return invalid("coord", e);
        }
        Ok(())
    }

    fn check_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let p = &self.pipeline;
        if p.read_guard_ms < 60_000 {
            w.push(format!(
                "pipeline.read_guard_ms = {} removes superseded segments soon after a read: a recovery that \
                 pauses longer than that restarts from a newer segment (harmless, but it reads more)",
                p.read_guard_ms
            ));
        }
        if p.raw_history_retention_hours == 0 {
            w.push(
                "pipeline.raw_history_retention_hours = 0 removes dealt raw segments at once: slaves and \
                 backups that copy raw/history may miss them"
                    .into(),
            );
        }
        if !self.coord.is_enabled() {
            w.push(
                "coord.servers is empty: the master is not registered at /logtank/services/recovery and \
                 nothing fences an old master"
                    .into(),
            );
        }
        if self.io.class != IoClass::BestEffort && self.io.class != IoClass::Idle {
            w.push(format!(
                "io.class = '{}': the pipeline's bulk IO may compete with the writer's fsyncs; \
                 best-effort 7 or idle is recommended",
                self.io.class.name()
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the defaults are valid and carry the documented ports and IO class.
    #[test]
    fn defaults_are_valid() {
        let c = IndexesConfig::default();
        assert!(c.check().is_ok());
        assert_eq!(c.server.listen, "0.0.0.0:15100");
        assert_eq!(c.indexes.manager_listen, "127.0.0.1:16000");
        assert_eq!(c.admin.listen, "127.0.0.1:9151");
        assert_eq!((c.io.class, c.io.level), (IoClass::BestEffort, 7));
        assert!(c.coord.coord_config().is_none());
    }

    // Proves address ranges parse and match as their prefix says, IPv4-mapped IPv6 peers included.
    #[test]
    fn address_ranges() {
        let r: AddressRange = "10.1.0.0/16".parse().unwrap();
        assert!(r.contains("10.1.200.3".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: AddressRange = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: AddressRange = "2001:db8::/33".parse().unwrap();
        assert!(v6.contains("2001:db8:7fff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:8000::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "host", "10.0.0.0/x", ""] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
    }

    // Proves every [pipeline] key reaches StorageOptions, in the unit its name says.
    #[test]
    fn pipeline_maps_to_storage_options() {
        let p = PipelineSection {
            idle_ms: 5,
            page_bytes: 10_000,
            sort_unsorted_segments_max: 3,
            sort_unsorted_bytes_max: 4,
            sort_memory_bytes: 5000,
            optimize_unoptimized_segments_min: 6,
            optimize_inputs_max: 7,
            read_guard_ms: 8,
            raw_history_retention_hours: 2,
            deleted_index_retention_hours: 3,
            // The disk pause is the pipeline thread's, not the storage layer's.
            ..PipelineSection::default()
        };
        let o = p.storage_options();
        assert_eq!(o.deleted_index_retention, Duration::from_secs(3 * 3600));
        assert_eq!(o.page_bytes, 10_000);
        assert_eq!(o.sort_unsorted_segments_max, 3);
        assert_eq!(o.sort_unsorted_bytes_max, 4);
        assert_eq!(o.sort_memory_bytes, 5000);
        assert_eq!(o.optimize_unoptimized_segments_min, 6);
        assert_eq!(o.optimize_inputs_max, 7);
        assert_eq!(o.read_guard, Duration::from_millis(8));
        assert_eq!(o.raw_history_retention, Duration::from_secs(7200));
    }

    // Proves the shipped etc/indexes.toml shows exactly the defaults, as its header says, but for the one
    // value it says the package sets: coordination at this host's coordd.
    #[test]
    fn shipped_config_is_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/indexes.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut shipped: IndexesConfig = toml::from_str(&text).unwrap();
        assert_eq!(shipped.coord.servers, "127.0.0.1:2181");
        shipped.coord.servers = IndexesConfig::default().coord.servers;
        assert_eq!(shipped, IndexesConfig::default());
    }

    // Proves unknown keys and bad values are refused with the key named.
    #[test]
    fn bad_values_are_refused() {
        let e = toml::from_str::<IndexesConfig>("[indexes]\nmanager = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = toml::from_str::<IndexesConfig>("[coord]\nservers = \"zk1\"\n").unwrap_err();
        assert!(e.to_string().contains("not host:port"), "{e}");
        let mut c = IndexesConfig::default();
        c.pipeline.page_bytes = 1;
        assert_eq!(c.check().unwrap_err().key, "pipeline.page_bytes");
        let mut c = IndexesConfig::default();
        c.indexes.manager_listen = c.server.listen.clone();
        assert_eq!(c.check().unwrap_err().key, "indexes.manager_listen");
    }
}
