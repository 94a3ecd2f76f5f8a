//! The systemd readiness protocol (`sd_notify(3)`): READY, STATUS, WATCHDOG, RELOADING, STOPPING.
//!
//! Units are `Type=notify`, so systemd considers a daemon started only when it sends `READY=1`, and the
//! watchdog kills it when `WATCHDOG=1` stops arriving. Everything here is a no-op when `NOTIFY_SOCKET` is
//! unset (a daemon started by hand or by a test).
//!
//! Every call passes `false` as sd-notify's `unset_env` flag: `true` removes `NOTIFY_SOCKET` from the
//! environment after the first message, and every later WATCHDOG/STATUS/STOPPING is then silently dropped.
//!
//! A failed send is logged once per run of failures and otherwise ignored: losing a notification must not
//! stop the daemon (systemd's own timeouts handle a daemon that never gets through).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to the service manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    /// Whether the current run of failures was already logged.
    failing: Arc<AtomicBool>,
}

impl Notifier {
    /// Enabled when `NOTIFY_SOCKET` is set.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty());
        Notifier {
            enabled,
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A notifier that sends nothing, for in-process tests.
    pub fn disabled() -> Self {
        Notifier {
            enabled: false,
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// `READY=1` with a `STATUS=` line, in one message.
    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// `STATUS=`: the one-line state `systemctl status` shows.
    pub fn status(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Status(&status)]);
    }

    /// `WATCHDOG=1`. Call it from the loop that does the work, so a stuck loop stops the pings.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (the current CLOCK_MONOTONIC), which `Type=notify-reload`
    /// (systemd 253+) requires to match the reload with the request; without it `systemctl reload` hangs
    /// until its timeout. Follow with [`Notifier::ready`] when the reload is done, whether it worked or not.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(e) => {
                log::warn!("cannot read CLOCK_MONOTONIC for MONOTONIC_USEC: {e}");
                self.send(&[NotifyState::Reloading]);
            }
        }
    }

    /// `STOPPING=1` with a `STATUS=` line.
    pub fn stopping(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
    }

    /// `EXTEND_TIMEOUT_USEC=`: asks for `extra` more time, from now, to finish starting or stopping (a long
    /// journal recovery), instead of being killed by `TimeoutStartSec=`/`TimeoutStopSec=`.
    pub fn extend_timeout(&self, extra: Duration) {
        let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, the usual margin. `None` when the watchdog
    /// is off, or `WATCHDOG_PID` names another process (sd-notify requires it to be our pid).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        let mut usec = 0u64;
        if self.enabled && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            // Never zero: a zero period would make the event loop's interval panic.
            Some(Duration::from_micros((usec / 2).max(1)))
        } else {
            None
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        match sd_notify::notify(false, states) {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
                }
            }
        }
    }
}

/// STATUS= ends at the newline; fold a multi-line text so nothing after the first line is lost.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a multi-line status is folded into one line rather than truncated.
    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a / b / c");
        assert_eq!(one_line("plain"), "plain");
    }

    // Proves a disabled notifier sends nothing and reports no watchdog.
    #[test]
    fn disabled_is_a_no_op() {
        let n = Notifier::disabled();
        n.ready("x");
        n.watchdog();
        assert_eq!(n.watchdog_interval(), None);
    }
}
