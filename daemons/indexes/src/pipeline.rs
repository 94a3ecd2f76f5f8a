//! The pipeline thread: while this host is the active master, runs [`Storage::run_cycle`] (dealer, sorter,
//! optimizer, cleaner) over and over, sleeping `pipeline.idle_ms` after a cycle that found nothing to do.
//!
//! It is a dedicated std thread, not a tokio task: every step is blocking file IO, and the thread sets its
//! own IO class from `[io]` (best-effort 7 by default) so the bulk reads and writes of dealing and
//! compaction queue behind the writer's fsyncs.
//!
//! The cycle's `keep_going` looks at the marker files themselves, the fence and the shutdown signal, so
//! removing `<root>/master`, a newer master's epoch or SIGTERM stop the cycle at its next durable point
//! (between segments, between steps) instead of at the end of a long optimization queue.
//!
//! Errors are retried, never fatal: a raw log gap or a corrupt segment needs an operator, so it is logged
//! at error level once per distinct message (repeats at debug), shown in `STATUS=`, and retried every
//! [`STUCK_RETRY`] in case the operator fixed it; other errors (IO) are retried every [`ERROR_RETRY`].

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use logtank_runtime::config::IoConfig;
use logtank_runtime::Shutdown;
use logtank_storage::{CycleReport, Storage, StorageError};

use crate::metrics::IndexesMetrics;
use crate::roles::Roles;

/// Retry delay after a gap or a corrupt segment: nothing changes until an operator acts.
pub const STUCK_RETRY: Duration = Duration::from_secs(30);
/// Retry delay after any other failed cycle (IndexTank slept 1 s after an exception; IO errors such as a
/// full disk rarely clear that fast, and every retry logs at debug).
pub const ERROR_RETRY: Duration = Duration::from_secs(5);

/// What the pipeline is doing, for `STATUS=` and `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStatus {
    /// Whether the last pass ran a cycle (this host was the active master).
    pub running: bool,
    /// The last cycle found nothing to do: the pipeline is caught up and sleeping.
    pub idle: bool,
    /// The last cycle's error, until a cycle succeeds.
    pub error: Option<String>,
    pub indexes: usize,
    /// The first raw sequence number not dealt yet (`None`: nothing dealt yet).
    pub dealer_next_seq: Option<u64>,
    pub cycles: u64,
}

/// The pipeline's status, shared with the status line.
pub type SharedPipelineStatus = Arc<Mutex<PipelineStatus>>;

/// Whether the pipeline thread is stuck, for the watchdog ([`PipelineProgress::stalled`]): in the middle of
/// a cycle, and its own IO counters (`/proc/self/task/<tid>/io`: bytes read and written) have not moved.
/// Counters, not step boundaries: a long optimization is healthy as long as it reads and writes.
#[derive(Debug, Default)]
pub struct PipelineProgress {
    /// The pipeline thread's id (0 until it runs).
    tid: std::sync::atomic::AtomicI64,
    in_cycle: std::sync::atomic::AtomicBool,
    /// The counters at the last look and since when they have been the same.
    sample: Mutex<Option<(u64, std::time::Instant)>>,
}

impl PipelineProgress {
    /// How long the thread has done no IO in the middle of a cycle, if longer than `limit`.
    pub fn stalled(&self, limit: Duration) -> Option<Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut sample = self.sample.lock().unwrap_or_else(PoisonError::into_inner);
        let tid = self.tid.load(Relaxed);
        if !self.in_cycle.load(Relaxed) || tid == 0 {
            *sample = None;
            return None;
        }
        let io = task_io_bytes(tid)?;
        match *sample {
            Some((last, since)) if last == io => Some(since.elapsed()).filter(|d| *d > limit),
            _ => {
                *sample = Some((io, std::time::Instant::now()));
                None
            }
        }
    }

    fn set_in_cycle(&self, on: bool) {
        self.in_cycle.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Bytes the thread `tid` of this process has read and written (`rchar` + `wchar`), if the kernel says.
fn task_io_bytes(tid: i64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(field("rchar:")? + field("wchar:")?)
}

/// This thread's id, from `/proc/thread-self` (`PID/task/TID`).
fn current_tid() -> i64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Everything the thread needs.
#[derive(Debug)]
pub struct Pipeline {
    pub storage: Arc<Storage>,
    pub roles: Arc<Roles>,
    pub io: IoConfig,
    pub idle: Duration,
    pub shutdown: Shutdown,
    pub metrics: IndexesMetrics,
    pub status: SharedPipelineStatus,
    /// `coord.servers` is empty: a master here is fenced by nothing, so becoming one is said loudly.
    pub single_host: bool,
    /// Where disk usage is measured (the data root), and the pause's marks (`pipeline.disk_usage_*`).
    pub disk: DiskWatch,
    /// What the watchdog looks at.
    pub progress: Arc<PipelineProgress>,
}

/// When the pipeline pauses the steps that grow the disk.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    pub dir: std::path::PathBuf,
    pub high_percent: u8,
    pub low_percent: u8,
}

impl Pipeline {
    /// Starts the thread; it returns once `shutdown` fired (after finishing the current durable step).
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("indexes-pipeline".into())
            .spawn(move || {
                logtank_runtime::ioprio::apply_config(&self.io, "pipeline thread");
                self.progress
                    .tid
                    .store(current_tid(), std::sync::atomic::Ordering::Relaxed);
                self.run();
            })
    }

    /// Why the steps that grow the disk are paused now (`None`: they run), with hysteresis on `paused`.
    fn disk_pause(&self, paused: bool) -> Option<String> {
        let d = &self.disk;
        match logtank_runtime::readonly::disk_usage(&d.dir) {
            Ok(usage)
                if logtank_runtime::readonly::disk_full(paused, usage, d.high_percent, d.low_percent) =>
            {
                let mark = if paused && usage.used_percent <= f64::from(d.high_percent) {
                    format!("not yet below {}%", d.low_percent)
                } else {
                    format!("> {}%", d.high_percent)
                };
                Some(format!(
                    "paused: the disk of {} is {}% used {mark}; dealing, sorting and optimizing would grow it \
                     (the cleaner still runs)",
                    d.dir.display(),
                    usage.shown_percent()
                ))
            }
            Ok(_) => None,
            // Unknown usage: keep the last state rather than guess.
            Err(e) => paused.then(|| {
                format!(
                    "paused: the disk usage of {} cannot be read: {e}",
                    d.dir.display()
                )
            }),
        }
    }

    fn run(self) {
        let mut last_error: Option<String> = None;
        let mut paused: Option<String> = None;
        let mut was_active = false;
        while !self.shutdown.is_triggered() {
            self.refresh_status();
            let view = self.roles.poll();
            self.set_role_gauges();
            if view.is_active() && !was_active && self.single_host {
                log::warn!(
                    "this host is the master in single-host mode: coord.servers is empty, so it is not registered \
                     for recovery and nothing fences another host that has the master marker too; set [coord] \
                     servers on every host of a suite of more than one (docs/operations.md)"
                );
            }
            was_active = view.is_active();
            if !view.is_active() {
                self.update(|s| {
                    s.running = false;
                    s.idle = false;
                });
                self.roles.wakeup().sleep(self.idle);
                continue;
            }
            self.update(|s| {
                s.running = true;
                s.idle = false;
            });
            let pause = self.disk_pause(paused.is_some());
            match (&paused, &pause) {
                (None, Some(why)) => log::warn!("pipeline {why}"),
                (Some(_), None) => {
                    log::info!("pipeline: the disk has room again; dealing, sorting and optimizing go on")
                }
                _ => {}
            }
            paused = pause;
            if let Some(why) = &paused {
                // Only what frees space.
                if let Err(e) = self.storage.clean() {
                    log::debug!("pipeline: cleaning while paused: {e}");
                }
                self.update(|s| s.error = Some(why.clone()));
                self.roles.wakeup().sleep(ERROR_RETRY);
                continue;
            }
            let keep_going = || self.keep_going();
            self.progress.set_in_cycle(true);
            let cycle = self.storage.run_cycle(&keep_going);
            self.progress.set_in_cycle(false);
            match cycle {
                Ok(report) => {
                    if let Some(e) = last_error.take() {
                        log::info!("pipeline: working again after: {e}");
                    }
                    self.update(|s| s.error = None);
                    self.count(&report);
                    if !report.did_something() {
                        self.update(|s| s.idle = true);
                        self.roles.wakeup().sleep(self.idle);
                    }
                }
                Err(e) => {
                    self.metrics.pipeline_errors.inc();
                    let message = e.to_string();
                    if last_error.as_deref() != Some(&message) {
                        log::error!("pipeline: {message}");
                    } else {
                        log::debug!("pipeline (again): {message}");
                    }
                    self.update(|s| s.error = Some(message.clone()));
                    last_error = Some(message);
                    let delay = match e {
                        StorageError::Gap { .. } | StorageError::Corrupt { .. } => STUCK_RETRY,
                        _ => ERROR_RETRY,
                    };
                    self.roles.wakeup().sleep(delay);
                }
            }
        }
        log::info!("pipeline stopped");
    }

    /// Asked by the cycle between steps and segments.
    fn keep_going(&self) -> bool {
        !self.shutdown.is_triggered() && self.roles.live_view().is_active()
    }

    fn count(&self, report: &CycleReport) {
        let m = &self.metrics;
        m.cycles.inc();
        m.dealt_segments.inc_by(report.dealt_segments as u64);
        m.sorted_indexes.inc_by(report.sorted_indexes as u64);
        m.optimized_indexes.inc_by(report.optimized_indexes as u64);
        m.removed_files.inc_by(report.removed_files as u64);
        self.update(|s| s.cycles += 1);
        if report.did_something() {
            log::debug!("pipeline cycle: {report:?}");
        }
    }

    fn set_role_gauges(&self) {
        let view = self.roles.view();
        let m = &self.metrics;
        m.master.set(i64::from(view.master));
        m.safe_to_read.set(i64::from(view.safe_to_read));
        m.fenced.set(i64::from(view.fenced.is_some()));
        m.active.set(i64::from(view.is_active()));
    }

    /// Index count and dealer position, read here (a directory listing and a small file) so the status
    /// line never does IO.
    fn refresh_status(&self) {
        let indexes = self.storage.list_indexes().map(|l| l.len()).ok();
        let next = self.storage.dealer_next_seq().ok();
        if let Some(n) = indexes {
            self.metrics.indexes.set(n as i64);
        }
        if let Some(Some(seq)) = next {
            self.metrics
                .dealer_next_seq
                .set(i64::try_from(seq).unwrap_or(i64::MAX));
        }
        self.update(|s| {
            if let Some(n) = indexes {
                s.indexes = n;
            }
            if let Some(next) = next {
                s.dealer_next_seq = next;
            }
        });
    }

    fn update(&self, f: impl FnOnce(&mut PipelineStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }
}
