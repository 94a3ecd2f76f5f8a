//! The journal's Prometheus metrics: appends, bytes, fsyncs, records made durable per fsync, fsync latency.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Cheap to clone: every field is a shared atomic.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub appends: Counter,
    pub appended_bytes: Counter,
    pub fsyncs: Counter,
    pub records_per_fsync: Histogram,
    pub fsync_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            appends: Counter::default(),
            appended_bytes: Counter::default(),
            fsyncs: Counter::default(),
            records_per_fsync: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_025, 2.0, 16)),
        }
    }
}

impl Metrics {
    /// Registers the metrics under `journal_*` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("journal");
        r.register("appends", "Records appended", self.appends.clone());
        r.register(
            "appended_bytes",
            "Payload bytes appended",
            self.appended_bytes.clone(),
        );
        r.register(
            "fsyncs",
            "fdatasync calls that made records durable",
            self.fsyncs.clone(),
        );
        r.register(
            "records_per_fsync",
            "Records made durable by one fsync",
            self.records_per_fsync.clone(),
        );
        r.register(
            "fsync_seconds",
            "Time from submitting a write+fsync to its completion",
            self.fsync_seconds.clone(),
        );
    }
}
