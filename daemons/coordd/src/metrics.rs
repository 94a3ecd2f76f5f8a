//! coordd's Prometheus metrics (`/metrics` on the admin port, `logtank_coordd_` prefix).

use logtank_runtime::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Debug, Clone)]
pub struct CoorddMetrics {
    pub txns: Counter,
    pub sessions: Gauge,
    pub sessions_expired: Counter,
    pub outstanding: Gauge,
    pub znodes: Gauge,
    pub watches: Gauge,
    pub connections: Gauge,
    /// Time from a request's arrival to its handling by the core (queueing in the command channel).
    pub request_latency: Histogram,
}

impl CoorddMetrics {
    pub fn new() -> CoorddMetrics {
        CoorddMetrics {
            txns: Counter::default(),
            sessions: Gauge::default(),
            sessions_expired: Counter::default(),
            outstanding: Gauge::default(),
            znodes: Gauge::default(),
            watches: Gauge::default(),
            connections: Gauge::default(),
            request_latency: Histogram::new(exponential_buckets(1e-6, 4.0, 12)),
        }
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.with_registry(|r| {
            let r = r.sub_registry_with_prefix("coordd");
            r.register(
                "transactions",
                "Transactions appended to the log",
                self.txns.clone(),
            );
            r.register("sessions", "Open sessions", self.sessions.clone());
            r.register(
                "sessions_expired",
                "Sessions ended by timeout",
                self.sessions_expired.clone(),
            );
            r.register(
                "outstanding_frames",
                "Replies waiting for their fsync",
                self.outstanding.clone(),
            );
            r.register("znodes", "Nodes in the tree", self.znodes.clone());
            r.register("watches", "Watches set", self.watches.clone());
            r.register("connections", "Client connections", self.connections.clone());
            r.register(
                "request_queue_seconds",
                "Time requests wait for the core",
                self.request_latency.clone(),
            );
        });
    }
}

impl Default for CoorddMetrics {
    fn default() -> Self {
        CoorddMetrics::new()
    }
}
