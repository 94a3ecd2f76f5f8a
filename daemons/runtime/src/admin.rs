//! The admin HTTP listener every daemon runs: `GET /ping`, `GET /metrics`, `GET /status`, plus the routes a
//! daemon adds for itself ([`AdminState::add_routes`], e.g. the writer's `GET`/`PUT /readonly`).
//!
//! It exists so operators, monitoring and the packaging smoke test can ask a daemon whether it is alive
//! (`/ping` → `pong`), scrape it (`/metrics`, OpenMetrics text from a `prometheus_client` registry), and see
//! its state at a glance (`/status`, JSON: daemon, version, uptime, lifecycle state, role, readonly, plus
//! counters the daemon provides through a [`StatusSource`]). The standard routes are read-only by design;
//! a daemon that lets operators change something over HTTP adds its own routes, which are reached only for
//! paths the standard routes do not match (so a daemon cannot shadow `/ping`, `/metrics` or `/status`).
//!
//! [`serve`] takes an already-bound listener and a shutdown future (STYLE #4), so tests bind `127.0.0.1:0`.
//! It answers from before `READY=1` (state `starting`) until after the daemon has drained, so a slow
//! shutdown can still be watched.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use tower::ServiceExt;

/// The crate version, reported by `/status` and the `logtank_build_info` metric.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Content type of `/metrics`: `prometheus_client` writes the OpenMetrics text format (ending in `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every metric name, so one Prometheus sees all logtank daemons under one namespace.
pub const METRICS_PREFIX: &str = "logtank";

/// Supplies the daemon-specific part of `/status`. Called on every request, from an HTTP task: keep it
/// cheap and non-blocking (read atomics or a snapshot, take no lock the hot path holds for long).
pub trait StatusSource: Send + Sync + 'static {
    /// The daemon's role, e.g. `master` or `slave`.
    fn role(&self) -> String {
        "standalone".to_owned()
    }

    /// Whether the daemon currently refuses writes.
    fn readonly(&self) -> bool {
        false
    }

    /// Key counters, added to the top level of the JSON object (they cannot replace the standard keys).
    fn fields(&self) -> Map<String, Value> {
        Map::new()
    }
}

/// Where the daemon is in its life, as `/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    Reloading = 2,
    Stopping = 3,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Reloading => "reloading",
            Phase::Stopping => "stopping",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Reloading,
            _ => Phase::Stopping,
        }
    }
}

/// The metrics registry a daemon registers into, shared with the `/metrics` handler.
///
/// Names get the `logtank_` prefix. Registration happens at start; encoding takes the lock only for the
/// duration of one scrape.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix(METRICS_PREFIX))),
        }
    }

    /// Runs `f` with the registry, e.g. `metrics.with_registry(|r| r.register("appends", "…", c.clone()))`.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut registry)
    }

    /// The OpenMetrics text exposition of everything registered.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// The runtime's own metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuntimeMetrics {
    pub(crate) reloads: Counter,
    pub(crate) reload_failures: Counter,
}

impl RuntimeMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let runtime = RuntimeMetrics::default();
        let start_time = Gauge::<i64>::default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        start_time.set(i64::try_from(now).unwrap_or(i64::MAX));
        metrics.with_registry(|r| {
            r.register(
                "build",
                "Version of this daemon",
                Info::new(vec![("version", VERSION)]),
            );
            r.register(
                "start_time_seconds",
                "Start time of the process, Unix seconds",
                start_time,
            );
            r.register(
                "config_reloads",
                "Configuration reloads that were applied",
                runtime.reloads.clone(),
            );
            r.register(
                "config_reload_failures",
                "Configuration reloads that failed (the previous configuration stays in force)",
                runtime.reload_failures.clone(),
            );
        });
        runtime
    }
}

/// What the admin handlers read. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    daemon: String,
    started: Instant,
    metrics: Metrics,
    phase: AtomicU8,
    status_line: RwLock<String>,
    source: RwLock<Option<Arc<dyn StatusSource>>>,
    /// The daemon's own routes, installed after the listener started (it serves from before `start`).
    daemon_routes: RwLock<Option<Router>>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("daemon", &self.inner.daemon)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// `daemon` is the name `/status` reports (`writer`, `bookie-3`); uptime counts from now.
    pub fn new(daemon: impl Into<String>, metrics: Metrics) -> Self {
        AdminState {
            inner: Arc::new(AdminInner {
                daemon: daemon.into(),
                started: Instant::now(),
                metrics,
                phase: AtomicU8::new(Phase::Starting as u8),
                status_line: RwLock::new(String::new()),
                source: RwLock::new(None),
                daemon_routes: RwLock::new(None),
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.inner.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.inner.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The line last sent as `STATUS=`, reported as `status`.
    pub fn set_status_line(&self, line: &str) {
        let mut current = self
            .inner
            .status_line
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        line.clone_into(&mut current);
    }

    pub fn set_status_source(&self, source: Arc<dyn StatusSource>) {
        *self.inner.source.write().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Adds daemon routes (with their state already applied: `Router<()>`). They answer only paths the
    /// standard routes do not match; calling this again merges the new routes with the earlier ones.
    ///
    /// # Panics
    /// If a route in `routes` overlaps one added before (axum's rule for merging routers): a programming
    /// error, found by the daemon's first test.
    pub fn add_routes(&self, routes: Router) {
        let mut current = self
            .inner
            .daemon_routes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *current = Some(match current.take() {
            Some(earlier) => earlier.merge(routes),
            None => routes,
        });
    }

    fn daemon_routes(&self) -> Option<Router> {
        self.inner
            .daemon_routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `/status` document.
    pub fn status_json(&self) -> Value {
        let inner = &self.inner;
        let source = inner
            .source
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut doc = Map::new();
        doc.insert("daemon".into(), inner.daemon.clone().into());
        doc.insert("version".into(), VERSION.into());
        doc.insert("uptime_s".into(), inner.started.elapsed().as_secs().into());
        doc.insert("state".into(), self.phase().name().into());
        let status_line = inner
            .status_line
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        doc.insert("status".into(), status_line.into());
        let (role, readonly, fields) = match &source {
            Some(source) => (source.role(), source.readonly(), source.fields()),
            None => (StandaloneStatus.role(), StandaloneStatus.readonly(), Map::new()),
        };
        doc.insert("role".into(), role.into());
        doc.insert("readonly".into(), readonly.into());
        for (key, value) in fields {
            doc.entry(key).or_insert(value);
        }
        Value::Object(doc)
    }
}

/// The defaults of [`StatusSource`], used until the daemon installs its own.
struct StandaloneStatus;

impl StatusSource for StandaloneStatus {}

/// The admin routes, for embedding or testing without a socket.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .fallback(daemon_route)
        .with_state(state)
}

/// Serves the admin routes on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ping() -> &'static str {
    "pong"
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match state.metrics().encode() {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            log::error!("cannot encode metrics: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

async fn status(State(state): State<AdminState>) -> Json<Value> {
    Json(state.status_json())
}

/// Everything the standard routes do not match: the daemon's routes if it added any, else 404.
async fn daemon_route(State(state): State<AdminState>, request: Request) -> Response {
    match state.daemon_routes() {
        Some(routes) => match routes.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    struct Fixed;

    impl StatusSource for Fixed {
        fn role(&self) -> String {
            "master".into()
        }
        fn fields(&self) -> Map<String, Value> {
            let mut m = Map::new();
            m.insert("appends".into(), 7.into());
            // A daemon cannot replace a standard key.
            m.insert("version".into(), "fake".into());
            m
        }
    }

    // Proves the three endpoints answer over a real socket, unknown paths get 404, and serve() returns once
    // its shutdown future completes.
    #[tokio::test]
    async fn endpoints_over_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AdminState::new("testd", Metrics::new());
        RuntimeMetrics::register(state.metrics());
        state.set_status_source(Arc::new(Fixed));
        let (trigger, shutdown) = crate::shutdown::channel();
        let server = tokio::spawn(serve(listener, state, async move { shutdown.wait().await }));

        let ping = get(addr, "/ping").await;
        assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
        assert!(ping.ends_with("\r\n\r\npong"), "{ping}");

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains(METRICS_CONTENT_TYPE), "{metrics}");
        assert!(metrics.contains("logtank_build_info{version=\""), "{metrics}");
        assert!(metrics.contains("# EOF"), "{metrics}");

        let status = get(addr, "/status").await;
        let body = status.split("\r\n\r\n").nth(1).unwrap();
        let json: Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["daemon"], "testd");
        assert_eq!(json["version"], VERSION);
        assert_eq!(json["role"], "master");
        assert_eq!(json["readonly"], false);
        assert_eq!(json["appends"], 7);
        assert_eq!(json["state"], "starting");
        assert!(json["uptime_s"].is_u64());

        let missing = get(addr, "/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    async fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    // Proves daemon routes added after the listener started are served (with their own state and methods),
    // cannot shadow a standard route, and that paths nobody serves still get 404.
    #[tokio::test]
    async fn daemon_routes_added_while_serving() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AdminState::new("testd", Metrics::new());
        let (trigger, shutdown) = crate::shutdown::channel();
        let server = tokio::spawn(serve(
            listener,
            state.clone(),
            async move { shutdown.wait().await },
        ));
        assert!(request(addr, "GET", "/knob", "")
            .await
            .starts_with("HTTP/1.1 404"));

        let knob = Arc::new(Mutex::new(String::from("off")));
        let read = |State(k): State<Arc<Mutex<String>>>| async move { k.lock().unwrap().clone() };
        let write = |State(k): State<Arc<Mutex<String>>>, body: String| async move {
            *k.lock().unwrap() = body;
            StatusCode::NO_CONTENT
        };
        state.add_routes(
            Router::new()
                .route("/knob", axum::routing::get(read).put(write))
                .with_state(knob.clone()),
        );
        state.add_routes(Router::new().route("/ping", axum::routing::get(|| async { "shadowed" })));
        state.add_routes(Router::new().route("/other", axum::routing::get(|| async { "other" })));

        assert!(request(addr, "GET", "/knob", "").await.ends_with("\r\n\r\noff"));
        let put = request(addr, "PUT", "/knob", "on").await;
        assert!(put.starts_with("HTTP/1.1 204"), "{put}");
        assert_eq!(*knob.lock().unwrap(), "on");
        assert!(request(addr, "GET", "/knob", "").await.ends_with("\r\n\r\non"));
        assert!(request(addr, "POST", "/knob", "")
            .await
            .starts_with("HTTP/1.1 405"));
        assert!(request(addr, "GET", "/other", "")
            .await
            .ends_with("\r\n\r\nother"));
        assert!(request(addr, "GET", "/ping", "").await.ends_with("\r\n\r\npong"));
        assert!(request(addr, "GET", "/nope", "")
            .await
            .starts_with("HTTP/1.1 404"));

        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
