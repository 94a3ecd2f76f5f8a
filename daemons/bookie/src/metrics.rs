//! The bookie's Prometheus metrics (`/metrics` on the admin port, `logtank_bookie_` prefix), next to the
//! journal's own (`logtank_journal_`: appends, fsyncs, fsync latency, records per fsync).

use logtank_runtime::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StatusLabel {
    pub op: &'static str,
    pub status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirLabel {
    pub dir: String,
}

/// Cheap to clone: every field is a shared atomic.
#[derive(Debug, Clone)]
pub struct BookieMetrics {
    /// Responses sent, by operation and status.
    pub responses: Family<StatusLabel, Counter>,
    /// From a complete add request to its response: checks, append, group commit.
    pub add_seconds: Histogram,
    pub read_seconds: Histogram,
    pub connections: Gauge,
    /// Requests waiting for the journal's fsync (the journal queue as clients see it).
    pub waiting_for_fsync: Gauge,
    pub ledgers: Gauge,
    pub entries: Gauge,
    pub entry_bytes: Gauge,
    /// Bytes of the entry store's records, live and dead.
    pub store_bytes: Gauge,
    pub store_live_bytes: Gauge,
    pub segments: Gauge,
    pub disk_used_percent: Family<DirLabel, Gauge>,
    /// 1 while adds are refused.
    pub readonly: Gauge,
    pub compactions: Counter,
    pub compacted_bytes: Counter,
    pub ledgers_garbage_collected: Counter,
}

impl Default for BookieMetrics {
    fn default() -> Self {
        BookieMetrics {
            responses: Family::default(),
            add_seconds: Histogram::new(exponential_buckets(0.000_025, 2.0, 18)),
            read_seconds: Histogram::new(exponential_buckets(0.000_010, 2.0, 18)),
            connections: Gauge::default(),
            waiting_for_fsync: Gauge::default(),
            ledgers: Gauge::default(),
            entries: Gauge::default(),
            entry_bytes: Gauge::default(),
            store_bytes: Gauge::default(),
            store_live_bytes: Gauge::default(),
            segments: Gauge::default(),
            disk_used_percent: Family::default(),
            readonly: Gauge::default(),
            compactions: Counter::default(),
            compacted_bytes: Counter::default(),
            ledgers_garbage_collected: Counter::default(),
        }
    }
}

impl BookieMetrics {
    pub fn respond(&self, op: &'static str, status: logtank_bookie_proto::Status) {
        self.responses
            .get_or_create(&StatusLabel {
                op,
                status: status.name(),
            })
            .inc();
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.with_registry(|r| {
            let r = r.sub_registry_with_prefix("bookie");
            r.register(
                "responses",
                "Responses sent, by operation and status",
                self.responses.clone(),
            );
            r.register(
                "add_seconds",
                "Add latency: request in to response out",
                self.add_seconds.clone(),
            );
            r.register(
                "read_seconds",
                "Read latency: request in to response out",
                self.read_seconds.clone(),
            );
            r.register("connections", "Client connections open", self.connections.clone());
            r.register(
                "waiting_for_fsync",
                "Requests waiting for the journal's group commit",
                self.waiting_for_fsync.clone(),
            );
            r.register("ledgers", "Ledgers held", self.ledgers.clone());
            r.register("entries", "Entries held", self.entries.clone());
            r.register(
                "entry_bytes",
                "Bytes of the entries held",
                self.entry_bytes.clone(),
            );
            r.register(
                "store_bytes",
                "Bytes of the entry store's records, live and dead",
                self.store_bytes.clone(),
            );
            r.register(
                "store_live_bytes",
                "Bytes of the entry store's live records",
                self.store_live_bytes.clone(),
            );
            r.register("segments", "Segments of the entry store", self.segments.clone());
            r.register(
                "disk_used_percent",
                "Usage of each watched directory's filesystem",
                self.disk_used_percent.clone(),
            );
            r.register("readonly", "1 while adds are refused", self.readonly.clone());
            r.register(
                "compactions",
                "Segments compacted and removed",
                self.compactions.clone(),
            );
            r.register(
                "compacted_bytes",
                "Live bytes copied by compaction",
                self.compacted_bytes.clone(),
            );
            r.register(
                "ledgers_garbage_collected",
                "Ledgers forgotten because their metadata was deleted",
                self.ledgers_garbage_collected.clone(),
            );
        });
    }
}
