//! The writer's Prometheus metrics (`/metrics` on the admin port, `logtank_writer_` prefix), next to the
//! journal's own (`logtank_journal_`).

use logtank_runtime::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Why a request was refused; the `reason` label of `logtank_writer_rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A record broke a rule (id set, index_code, docid).
    Invalid,
    /// A record or the batch exceeded a size or count limit.
    TooLarge,
    Readonly,
    /// The journal refused the append or failed before the batch was durable.
    Journal,
    /// A method other than `send_batch`.
    UnknownMethod,
    /// Bytes that are not a Thrift call we can read (the connection is closed).
    Protocol,
    /// Bookies mode: the batch could not be replicated (quorum lost, fenced).
    Replication,
    /// A connection was not served (its address held the per-address limit) or was closed because a
    /// request did not arrive whole in time.
    Connection,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::TooLarge => "too_large",
            Reason::Readonly => "readonly",
            Reason::Journal => "journal",
            Reason::UnknownMethod => "unknown_method",
            Reason::Protocol => "protocol",
            Reason::Replication => "replication",
            Reason::Connection => "connection",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Cheap to clone: every field is a shared atomic.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Batches acknowledged (empty batches included).
    pub batches: Counter,
    /// Records in acknowledged batches.
    pub records: Counter,
    /// Raw log bytes (journal payload) of acknowledged batches.
    pub bytes: Counter,
    rejected: Family<ReasonLabel, Counter>,
    /// 1 while writes are refused.
    pub readonly: Gauge,
    pub connections: Gauge,
    /// From a complete request to its acknowledgement being sent: validation, append and the wait for
    /// the write or the fsync.
    pub ack_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            batches: Counter::default(),
            records: Counter::default(),
            bytes: Counter::default(),
            rejected: Family::default(),
            readonly: Gauge::default(),
            connections: Gauge::default(),
            ack_seconds: Histogram::new(exponential_buckets(0.000_025, 2.0, 18)),
        }
    }
}

impl WriterMetrics {
    pub fn reject(&self, reason: Reason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .get()
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.with_registry(|r| {
            let r = r.sub_registry_with_prefix("writer");
            r.register("batches", "Batches acknowledged", self.batches.clone());
            r.register("records", "Records in acknowledged batches", self.records.clone());
            r.register(
                "bytes",
                "Raw log bytes of acknowledged batches",
                self.bytes.clone(),
            );
            r.register(
                "rejected",
                "Requests refused, by reason (nothing of them was written)",
                self.rejected.clone(),
            );
            r.register(
                "readonly",
                "1 while the writer refuses writes",
                self.readonly.clone(),
            );
            r.register("connections", "Client connections open", self.connections.clone());
            r.register(
                "ack_seconds",
                "Time from a complete send_batch request to its acknowledgement",
                self.ack_seconds.clone(),
            );
        });
    }
}
