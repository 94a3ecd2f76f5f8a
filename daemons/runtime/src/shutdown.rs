//! Graceful shutdown as a mechanism: one signal every loop selects on, and a tracker of in-flight work.
//!
//! [`ShutdownTrigger::trigger`] is called once, by the runtime, after `STOPPING=1`. Every accept loop and
//! connection loop holds a [`Shutdown`] clone and selects on [`Shutdown::wait`], so they all stop taking new
//! work at the same moment. Work already accepted holds a [`WorkGuard`]; the daemon's shutdown waits on
//! [`WorkTracker::wait_idle`] until every guard is dropped, then flushes and fsyncs. The runtime bounds the
//! whole sequence with `server.shutdown_timeout_ms`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// Creates a connected trigger and signal.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx, _never: None })
}

/// Fires the shutdown signal. Dropping it without triggering also counts as shutdown, so a forgotten
/// trigger cannot leave loops running forever.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Another handle on the same signal, e.g. for a loop started after the trigger was made.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
            _never: None,
        }
    }
}

/// The shutdown signal. Clone one into every loop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// For [`Shutdown::never`]: the sender nobody triggers, kept alive because a dropped sender reads as
    /// shutdown.
    _never: Option<Arc<watch::Sender<bool>>>,
}

impl Shutdown {
    /// A signal that never fires, for code run outside a daemon (tests, tools).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            rx,
            _never: Some(Arc::new(tx)),
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Completes once shutdown has been triggered (at once if it already was). Cancel-safe, so it can sit
    /// in a `select!` loop.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger was dropped, which counts as shutdown too.
        let _ = rx.wait_for(|&fired| fired).await;
    }
}

/// Counts in-flight work so shutdown can wait for it to finish.
#[derive(Debug, Clone, Default)]
pub struct WorkTracker {
    inner: Arc<TrackerInner>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    in_flight: AtomicUsize,
    idle: Notify,
}

impl WorkTracker {
    pub fn new() -> Self {
        WorkTracker::default()
    }

    /// Marks one unit of work (a connection, a request) as started; it ends when the guard is dropped.
    pub fn start(&self) -> WorkGuard {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        WorkGuard {
            inner: Arc::clone(&self.inner),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Completes when no work is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Register interest before checking the count, so a guard dropped in between is not missed.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One unit of in-flight work; see [`WorkTracker::start`].
#[derive(Debug)]
pub struct WorkGuard {
    inner: Arc<TrackerInner>,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.inner.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // Proves every clone of the signal sees one trigger, including clones that wait before it fires.
    #[tokio::test]
    async fn trigger_reaches_every_clone() {
        let (trigger, shutdown) = channel();
        let waiter = {
            let s = shutdown.clone();
            tokio::spawn(async move { s.wait().await })
        };
        assert!(!shutdown.is_triggered());
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(shutdown.is_triggered());
        shutdown.wait().await;
        trigger.subscribe().wait().await;
    }

    // Proves dropping the trigger counts as shutdown, so loops cannot outlive a lost trigger.
    #[tokio::test]
    async fn dropped_trigger_counts_as_shutdown() {
        let (trigger, shutdown) = channel();
        drop(trigger);
        assert!(shutdown.is_triggered());
        tokio::time::timeout(Duration::from_secs(10), shutdown.wait())
            .await
            .unwrap();
    }

    // Proves wait_idle returns only after the last guard is dropped.
    #[tokio::test]
    async fn tracker_waits_for_in_flight_work() {
        let tracker = WorkTracker::new();
        tracker.wait_idle().await;
        let a = tracker.start();
        let b = tracker.start();
        assert_eq!(tracker.in_flight(), 2);
        let waiter = {
            let t = tracker.clone();
            tokio::spawn(async move { t.wait_idle().await })
        };
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tracker.in_flight(), 0);
    }

    // Proves a signal that never fires stays quiet.
    #[test]
    fn never_is_not_triggered() {
        assert!(!Shutdown::never().is_triggered());
    }
}
