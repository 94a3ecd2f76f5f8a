//! logtank-indexes' Prometheus metrics (`/metrics` on the admin port, `logtank_indexes_` prefix).

use logtank_runtime::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// Cheap to clone: every field is a shared atomic.
#[derive(Debug, Clone, Default)]
pub struct IndexesMetrics {
    /// `read_page` replies sent.
    pub pages: Counter,
    /// Records in those pages.
    pub records: Counter,
    /// Bytes of encoded records in those pages.
    pub bytes: Counter,
    errors: Family<KindLabel, Counter>,
    manager_calls: Family<MethodLabel, Counter>,
    /// Pipeline cycles run (active master only).
    pub cycles: Counter,
    pub dealt_segments: Counter,
    pub sorted_indexes: Counter,
    pub optimized_indexes: Counter,
    pub removed_files: Counter,
    /// Cycles that ended in an error.
    pub pipeline_errors: Counter,
    /// 1 while `<root>/master` exists.
    pub master: Gauge,
    /// 1 while safe_to_read exists.
    pub safe_to_read: Gauge,
    /// 1 while a newer master fenced this one.
    pub fenced: Gauge,
    /// 1 while this host is the active master (the pipeline runs, reads are served).
    pub active: Gauge,
    /// The epoch this host was promoted with (0: none yet, or no coordination).
    pub epoch: Gauge,
    /// The first raw sequence number not dealt yet.
    pub dealer_next_seq: Gauge,
    pub indexes: Gauge,
    pub reader_connections: Gauge,
    pub manager_connections: Gauge,
}

impl IndexesMetrics {
    pub fn new() -> IndexesMetrics {
        IndexesMetrics::default()
    }

    pub fn page_served(&self, records: usize, bytes: usize) {
        self.pages.inc();
        self.records.inc_by(records as u64);
        self.bytes.inc_by(bytes as u64);
    }

    /// A call answered with an exception, by reason (`not_master`, `token_expired`, `protocol`, …).
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn manager_call(&self, method: &'static str) {
        self.manager_calls.get_or_create(&MethodLabel { method }).inc();
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.with_registry(|r| {
            let r = r.sub_registry_with_prefix("indexes");
            r.register("pages", "read_page replies sent", self.pages.clone());
            r.register("records", "Records in read_page replies", self.records.clone());
            r.register(
                "bytes",
                "Bytes of records in read_page replies",
                self.bytes.clone(),
            );
            r.register(
                "errors",
                "Calls answered with an exception, by reason",
                self.errors.clone(),
            );
            r.register(
                "manager_calls",
                "LogManager calls served, by method",
                self.manager_calls.clone(),
            );
            r.register("pipeline_cycles", "Pipeline cycles run", self.cycles.clone());
            r.register(
                "dealt_segments",
                "Raw segments dealt into per-index segments",
                self.dealt_segments.clone(),
            );
            r.register("sorted_indexes", "Index sorts", self.sorted_indexes.clone());
            r.register(
                "optimized_indexes",
                "Index optimizations",
                self.optimized_indexes.clone(),
            );
            r.register(
                "removed_files",
                "Files the cleaner removed",
                self.removed_files.clone(),
            );
            r.register(
                "pipeline_errors",
                "Pipeline cycles that failed",
                self.pipeline_errors.clone(),
            );
            r.register("master", "1 while the master marker exists", self.master.clone());
            r.register(
                "safe_to_read",
                "1 while the safe_to_read marker exists",
                self.safe_to_read.clone(),
            );
            r.register(
                "fenced",
                "1 while a newer master fenced this one",
                self.fenced.clone(),
            );
            r.register(
                "active",
                "1 while this host is the active master",
                self.active.clone(),
            );
            r.register(
                "epoch",
                "The epoch this host was promoted with (0: none)",
                self.epoch.clone(),
            );
            r.register(
                "dealer_next_seq",
                "First raw sequence number not dealt yet",
                self.dealer_next_seq.clone(),
            );
            r.register("indexes", "Indexes on this host", self.indexes.clone());
            r.register(
                "reader_connections",
                "Open LogReader connections",
                self.reader_connections.clone(),
            );
            r.register(
                "manager_connections",
                "Open LogManager connections",
                self.manager_connections.clone(),
            );
        });
    }
}
