//! `/etc/logtank/writer.toml`: the shared sections (`[server]`, `[admin]`, `[log]`, `[io]`) plus the writer's
//! own `[writer]`, `[readonly]` and `[coord]`. Every key has a default; unknown keys are rejected; values
//! that parse but make no sense are reported by `--check-config` (warnings) or refused (exit 78).

use std::path::{Path, PathBuf};
use std::time::Duration;

use logtank_coord::OptionalCoordConfig;
use logtank_journal::frame::{FRAME_HEADER_BYTES, PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES};
use logtank_journal::IoBackend;
use logtank_runtime::config::{AdminConfig, InvalidValue, IoConfig, LogConfig, ServerConfig};
use logtank_runtime::ioprio::IoClass;
use logtank_storage::{Layout, LockRole};
use serde::{Deserialize, Deserializer, Serialize};

/// IndexTank's LogWriterServer port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:15000";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9150";
pub const DEFAULT_DATA_ROOT: &str = "/data";
/// IndexTank rolled its raw segments at 50 MiB (`RawLog.DEFAULT_SEGMENT_SIZE`).
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 50 << 20;
/// IndexTank's readers cap one record at 10,000,000 bytes (`RecordIterator`); a larger one could be
/// written but never read back by them, so it is refused at the door.
pub const DEFAULT_RECORD_BYTES_MAX: u32 = 10_000_000;
/// The largest batch, as journal payload (the concatenated records); also the journal's record limit.
pub const DEFAULT_BATCH_BYTES_MAX: u32 = 16 << 20;
/// More records than this in one batch is a client bug, not a workload (IndexTank's API sends ≤ 1000).
pub const DEFAULT_BATCH_RECORDS_MAX: u32 = 100_000;
/// IndexTank's API batches a few indexes' documents per call; a batch naming thousands is a client bug or
/// an attack on the dealer (one open file and buffer per index of a raw segment).
pub const DEFAULT_BATCH_INDEX_CODES_MAX: u32 = 1000;
/// File descriptors are the limit that matters; the unit's `LimitNOFILE=` is well above this.
pub const DEFAULT_CONNECTIONS_MAX: usize = 1024;
/// The journal's own bounds on a segment (`logtank_journal` refuses anything outside them).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// The writer's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub io: IoConfig,
    pub writer: WriterSection,
    pub readonly: ReadonlySection,
    /// Where the writer registers `/logtank/services/storage/<advertise>`; empty `servers` (the default) =
    /// no coordination, nothing registered. The writer never needs coordination to accept writes.
    pub coord: OptionalCoordConfig,
    /// `[replication]`: the raw log also replicated to bookies, record by record (`docs/replication.md`).
    pub replication: ReplicationSection,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            server: ServerConfig::new(DEFAULT_LISTEN, DEFAULT_DATA_ROOT),
            admin: AdminConfig::new(DEFAULT_ADMIN_LISTEN),
            log: LogConfig::default(),
            // The journal thread is the writer's reason to exist: highest best-effort level (DESIGN §5).
            io: IoConfig {
                class: IoClass::BestEffort,
                level: 0,
            },
            writer: WriterSection::default(),
            readonly: ReadonlySection::default(),
            coord: OptionalCoordConfig::default(),
            replication: ReplicationSection::default(),
        }
    }
}

/// When `send_batch` is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After the batch is on disk (fsynced); batches of many connections share one fsync.
    #[default]
    Fsync,
    /// After the batch reached the OS (IndexTank's behaviour): survives a crash of the writer, not of the
    /// machine; up to `fsync_interval_ms` of acknowledged batches can be lost on power loss.
    Write,
}

impl AckMode {
    pub fn name(self) -> &'static str {
        match self {
            AckMode::Fsync => "fsync",
            AckMode::Write => "write",
        }
    }
}

/// `[writer]`: acknowledgement, the raw log's journal, and the limits on what a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterSection {
    pub ack: AckMode,
    /// The longest an appended batch waits for its fsync when nobody waits for it (`ack = "write"`).
    pub fsync_interval_ms: u64,
    /// Raw log segments are preallocated to this size and roll when the next batch does not fit.
    pub segment_size_bytes: u64,
    /// `auto` (io_uring when the kernel allows, else pwrite), `io_uring` or `pwrite`.
    #[serde(deserialize_with = "io_backend")]
    pub io_backend: String,
    /// Drop each closed raw segment from the page cache once it is durable (see
    /// `JournalOptions::drop_closed_from_cache`); the dealer then reads it from the disk.
    pub drop_closed_segments_from_cache: bool,
    /// The largest record, Thrift-encoded with its timestamp.
    pub record_bytes_max: u32,
    /// The largest batch as stored (the concatenated records).
    pub batch_bytes_max: u32,
    pub batch_records_max: u32,
    /// Distinct `index_code`s in one batch: the dealer keeps a file open per index of a raw segment.
    pub batch_index_codes_max: u32,
    /// Client connections served at once; more wait in the kernel's accept queue.
    pub connections_max: usize,
    /// Connections one client address may hold; more are closed at once (0 = only `connections_max`).
    pub connections_per_address_max: usize,
    /// A connection that starts no request for this long is closed.
    pub idle_timeout_ms: u64,
    /// A request must arrive whole within this of its first bytes.
    pub request_read_timeout_ms: u64,
    /// `host:port` registered in coordination; absent = the listen address, with `0.0.0.0` (or `::`)
    /// replaced by this host's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

impl Default for WriterSection {
    fn default() -> Self {
        WriterSection {
            ack: AckMode::Fsync,
            fsync_interval_ms: 1000,
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            io_backend: "auto".into(),
            drop_closed_segments_from_cache: true,
            record_bytes_max: DEFAULT_RECORD_BYTES_MAX,
            batch_bytes_max: DEFAULT_BATCH_BYTES_MAX,
            batch_records_max: DEFAULT_BATCH_RECORDS_MAX,
            batch_index_codes_max: DEFAULT_BATCH_INDEX_CODES_MAX,
            connections_max: DEFAULT_CONNECTIONS_MAX,
            connections_per_address_max: logtank_thrift_server::CONNECTIONS_PER_ADDRESS_MAX_DEFAULT,
            idle_timeout_ms: logtank_thrift_server::IDLE_TIMEOUT_DEFAULT.as_millis() as u64,
            request_read_timeout_ms: logtank_thrift_server::REQUEST_READ_TIMEOUT_DEFAULT.as_millis() as u64,
            advertise: None,
        }
    }
}

impl WriterSection {
    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }

    /// The parsed `io_backend` (checked while deserialising; `auto` for a struct built in code with a bad
    /// value).
    pub fn io_backend(&self) -> IoBackend {
        self.io_backend.parse().unwrap_or_default()
    }
}

/// `[readonly]`: when writes are refused. The marker file `<data_root>/readonly`, `PUT /readonly` on the
/// admin port and `--readonly` need no key here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadonlySection {
    /// Refuse writes from start (`--readonly` sets it too).
    pub enabled: bool,
    /// How often the marker file and the disk usage are checked.
    pub check_interval_ms: u64,
    /// Enter readonly when the filesystem of the raw log is fuller than this.
    pub disk_usage_high_percent: u8,
    /// Leave the disk-triggered readonly only once usage is below this (hysteresis: no flapping).
    pub disk_usage_low_percent: u8,
}

impl Default for ReadonlySection {
    fn default() -> Self {
        ReadonlySection {
            enabled: false,
            check_interval_ms: 1000,
            disk_usage_high_percent: 95,
            disk_usage_low_percent: 90,
        }
    }
}

/// `[replication] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// The raw log is on this host's disk only (until a slave's sync copies what the master dealt).
    #[default]
    None,
    /// Every batch is also an entry of a ledger on the bookies, acknowledged once `ack_quorum` have it.
    Bookies,
}

/// `[replication] on_quorum_loss`: what a batch gets while fewer than `ack_quorum` bookies take entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuorumLoss {
    /// `send_batch` fails with a clear error; nothing new is acknowledged until the bookies are back.
    #[default]
    Refuse,
    /// Batches are acknowledged on the local journal alone (counted, warned about) and replicated once the
    /// bookies are back.
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    pub mode: ReplicationMode,
    /// Ensemble, write quorum and ack quorum of the log's ledgers (E ≥ Qw ≥ Qa ≥ 1).
    pub ensemble_size: usize,
    pub write_quorum: usize,
    pub ack_quorum: usize,
    /// The ledgers' password (recovering or restoring the log needs it).
    pub password: String,
    /// The bookies' ledgers root in coordination (`[coord] servers`).
    pub ledgers_root: String,
    /// The log's name, `/logtank/logs/<writer_id>`; default: the address the writer registers
    /// (`writer.advertise`, else its listen address with the host name). A replacement host of a lost
    /// writer takes over its log with the same id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_id: Option<String>,
    pub on_quorum_loss: QuorumLoss,
    /// The largest batch replicated (an entry must fit the bookies' `frame_bytes_max`, 5 MiB by default);
    /// a larger batch is refused in bookies mode.
    pub entry_bytes_max: u32,
    /// How long an entry may wait for a bookie before that bookie counts as failed.
    pub add_timeout_ms: u64,
    /// How often retention looks for ledgers whose records are all gone from this host's raw log.
    pub retention_check_interval_ms: u64,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            mode: ReplicationMode::None,
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
            password: String::new(),
            ledgers_root: "/ledgers".into(),
            writer_id: None,
            on_quorum_loss: QuorumLoss::Refuse,
            // The bookies' default frame (5 MiB) less an add's headers (packet header, master key, entry
            // header and digest) and some room.
            entry_bytes_max: (5 << 20) - 4096,
            add_timeout_ms: 10_000,
            retention_check_interval_ms: 60_000,
        }
    }
}

fn io_backend<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<IoBackend>().map_err(serde::de::Error::custom)?;
    Ok(s)
}

logtank_runtime::impl_daemon_config!(WriterConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        self.check()
    }
    fn warnings(&self) -> Vec<String> {
        self.check_warnings()
    }
});

impl WriterConfig {
    /// The paths under `server.data_root` (logtank-storage owns the layout).
    pub fn layout(&self) -> Layout {
        Layout::new(self.server.data_root.clone())
    }

    /// `<data_root>/storage/raw/live`: the journal the writer appends to (the raw log).
    pub fn raw_live_dir(&self) -> PathBuf {
        self.layout().raw_live()
    }

    /// `<data_root>/storage/writer.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.layout().lock_path(LockRole::Writer)
    }

    /// `<data_root>/readonly`: while it exists, writes are refused.
    pub fn readonly_marker(&self) -> PathBuf {
        self.layout().readonly_marker()
    }

    fn check(&self) -> Result<(), InvalidValue> {
        let invalid = |key: &str, message: String| {
            Err(InvalidValue {
                key: key.into(),
                message,
            })
        };
        let w = &self.writer;
        if w.fsync_interval_ms == 0 {
            return invalid("writer.fsync_interval_ms", "must be positive".into());
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&w.segment_size_bytes) {
            return invalid(
                "writer.segment_size_bytes",
                format!("must be within {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"),
            );
        }
        // The writer must accept nothing the storage layer cannot read back: a batch larger than the
        // dealer's frame limit would be acknowledged, then reported corrupt at every dealing attempt.
        let batch_max = PAYLOAD_BYTES_MAX.min(logtank_storage::FRAME_PAYLOAD_BYTES_MAX);
        if w.batch_bytes_max == 0 || w.batch_bytes_max > batch_max {
            return invalid(
                "writer.batch_bytes_max",
                format!("must be within 1..={batch_max} (the largest batch the dealer reads back)"),
            );
        }
        let fits = w.segment_size_bytes - (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) as u64;
        if u64::from(w.batch_bytes_max) > fits {
            return invalid(
                "writer.batch_bytes_max",
                format!(
                    "a batch must fit in one segment: at most {fits} with writer.segment_size_bytes = {}",
                    w.segment_size_bytes
                ),
            );
        }
        // The dealer decodes records with the storage limits: a record is at most as long as its longest
        // string, so within STRING_BYTES_MAX every record the writer takes decodes there.
        let record_max = logtank_thrift::binary::STRING_BYTES_MAX.min(u32::MAX as usize) as u32;
        if w.record_bytes_max == 0 || w.record_bytes_max > record_max {
            return invalid(
                "writer.record_bytes_max",
                format!("must be within 1..={record_max} (the largest record the dealer reads back)"),
            );
        }
        if w.batch_index_codes_max == 0 {
            return invalid("writer.batch_index_codes_max", "must be positive".into());
        }
        if w.batch_records_max == 0 {
            return invalid("writer.batch_records_max", "must be positive".into());
        }
        if w.connections_max == 0 {
            return invalid("writer.connections_max", "must be positive".into());
        }
        if w.idle_timeout_ms == 0 {
            return invalid("writer.idle_timeout_ms", "must be positive".into());
        }
        if w.request_read_timeout_ms == 0 {
            return invalid("writer.request_read_timeout_ms", "must be positive".into());
        }
        if let Some(advertise) = &w.advertise {
            if let Err(e) = check_advertise(advertise) {
                return invalid("writer.advertise", e);
            }
        }
        let r = &self.readonly;
        if r.check_interval_ms == 0 {
            return invalid("readonly.check_interval_ms", "must be positive".into());
        }
        if r.disk_usage_high_percent > 100 {
            return invalid(
                "readonly.disk_usage_high_percent",
                "is a percentage: 0 to 100".into(),
            );
        }
        if r.disk_usage_low_percent >= r.disk_usage_high_percent {
            return invalid(
                "readonly.disk_usage_low_percent",
                format!(
                    "must be below readonly.disk_usage_high_percent ({}), or readonly would flap",
                    r.disk_usage_high_percent
                ),
            );
        }
        if let Err(e) = self.coord.validate() {
            return invalid("coord", e);
        }
        let r = &self.replication;
        if r.mode == ReplicationMode::Bookies {
            if !self.coord.is_enabled() {
                return invalid(
                    "replication.mode",
                    "\"bookies\" needs coordination: set [coord] servers (where the bookies are registered)"
                        .into(),
                );
            }
            let (e, w, a) = (r.ensemble_size, r.write_quorum, r.ack_quorum);
            if !(1..=logtank_ledger::metadata::ENSEMBLE_SIZE_MAX).contains(&e) || w > e || a > w || a == 0 {
                return invalid(
                    "replication.ack_quorum",
                    format!("ensemble_size {e}, write_quorum {w}, ack_quorum {a}: need E ≥ Qw ≥ Qa ≥ 1"),
                );
            }
            if let Err(e) = logtank_ledger::Layout::new(&r.ledgers_root) {
                return invalid("replication.ledgers_root", e.to_string());
            }
            if let Some(id) = &r.writer_id {
                if let Err(e) = logtank_ledger::layout::check_bookie_id(id) {
                    return invalid(
                        "replication.writer_id",
                        e.to_string().replace("bookie id", "writer id"),
                    );
                }
            }
            if r.entry_bytes_max == 0 || r.add_timeout_ms == 0 || r.retention_check_interval_ms == 0 {
                return invalid(
                    "replication.entry_bytes_max",
                    "entry_bytes_max, add_timeout_ms and retention_check_interval_ms must be positive".into(),
                );
            }
        }
        Ok(())
    }

    fn check_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.writer.ack == AckMode::Write {
            w.push(format!(
                "writer.ack = \"write\": a power loss or OS crash can lose up to writer.fsync_interval_ms = {} ms \
                 of acknowledged batches (a crash of the writer alone loses none)",
                self.writer.fsync_interval_ms
            ));
        }
        if self.writer.record_bytes_max > self.writer.batch_bytes_max {
            w.push(format!(
                "writer.record_bytes_max = {} exceeds writer.batch_bytes_max = {}: the batch limit applies first",
                self.writer.record_bytes_max, self.writer.batch_bytes_max
            ));
        }
        if self.readonly.disk_usage_high_percent == 100 {
            w.push(
                "readonly.disk_usage_high_percent = 100 never triggers: the disk fills up before readonly starts"
                    .into(),
            );
        }
        if self.readonly.enabled {
            w.push("readonly.enabled = true: every write is refused until it is turned off".into());
        }
        w
    }
}

/// `<data_root>/storage/raw/live`, for tests and tools that read the raw log.
pub fn raw_live_dir(data_root: &Path) -> PathBuf {
    Layout::new(data_root).raw_live()
}

/// `<data_root>/storage/raw/history`, where the indexes daemon moves closed segments.
pub fn raw_history_dir(data_root: &Path) -> PathBuf {
    Layout::new(data_root).raw_history()
}

/// An advertised address is one coordination path component: `host:port`, no `/`.
pub fn check_advertise(s: &str) -> Result<(), String> {
    let valid = match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !s.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!("'{s}' is not host:port"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WriterConfig, String> {
        let config: WriterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check().map_err(|e| format!("{}: {}", e.key, e.message))?;
        Ok(config)
    }

    // Proves an empty file is the documented defaults, and those pass validation.
    #[test]
    fn defaults() {
        let c = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, WriterConfig::default());
        assert_eq!(c.server.listen, "0.0.0.0:15000");
        assert_eq!(c.writer.ack, AckMode::Fsync);
        assert_eq!(c.writer.segment_size_bytes, 50 << 20);
        assert_eq!(c.io.class, IoClass::BestEffort);
        assert_eq!(c.io.level, 0);
        assert!(c.coord.coord_config().is_none());
        assert_eq!(c.raw_live_dir(), PathBuf::from("/data/storage/raw/live"));
        assert_eq!(c.lock_path(), PathBuf::from("/data/storage/writer.lock"));
        assert_eq!(c.readonly_marker(), PathBuf::from("/data/readonly"));
        assert!(c.check_warnings().is_empty(), "{:?}", c.check_warnings());
    }

    // Proves wrong values are refused with the key they concern.
    #[test]
    fn bad_values() {
        for (text, key) in [
            ("[writer]\nack = \"sometimes\"", "unknown variant"),
            ("[writer]\nio_backend = \"dma\"", "unknown io backend"),
            ("[writer]\nfsync_interval_ms = 0", "writer.fsync_interval_ms"),
            ("[writer]\nsegment_size_bytes = 100", "writer.segment_size_bytes"),
            (
                "[writer]\nsegment_size_bytes = 1048576\nbatch_bytes_max = 2097152",
                "writer.batch_bytes_max",
            ),
            ("[writer]\nadvertise = \"a/b:1\"", "writer.advertise"),
            ("[writer]\nadvertise = \"host\"", "writer.advertise"),
            (
                "[readonly]\ndisk_usage_low_percent = 95",
                "readonly.disk_usage_low_percent",
            ),
            (
                "[readonly]\ndisk_usage_high_percent = 101",
                "readonly.disk_usage_high_percent",
            ),
            ("[coord]\nservers = \"zk1\"", "not host:port"),
            ("[coord]\nservers = \"zk1:2181\"\nsession_timeout_ms = 0", "coord"),
            ("[writer]\nunknown = 1", "unknown field"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    // Proves coordination is off by default and on with servers, and ack = "write" is warned about.
    #[test]
    fn coordination_and_warnings() {
        let c = parse("[coord]\nservers = \"127.0.0.1:2181/logtank\"\n[writer]\nack = \"write\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let coord = c.coord.coord_config().expect("coordination configured");
        assert_eq!(coord.servers, "127.0.0.1:2181/logtank");
        assert_eq!(c.writer.ack, AckMode::Write);
        assert!(c.check_warnings()[0].contains("power loss"));
    }
}
