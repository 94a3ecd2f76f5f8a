//! Process signals as messages: SIGTERM and SIGINT mean shut down, SIGHUP means reload the config.
//!
//! A signal handler may do almost nothing safely, so signal-hook's iterator turns signals into ordinary
//! values on a dedicated thread, which forwards them into a bounded channel the daemon's event loop selects
//! on. This keeps the loop free of signal-safety concerns and independent of tokio's signal driver.

use std::io;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use tokio::sync::mpsc;

/// Signals waiting for the event loop. Repeats of a signal carry no extra meaning, so a small queue is
/// plenty; when it is full the signal thread waits, and the kernel coalesces further signals meanwhile.
pub const SIGNAL_QUEUE_MAX: usize = 16;

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
    Shutdown,
    /// SIGHUP (`systemctl reload`).
    Reload,
}

/// Receives [`Signal`]s. Dropping it stops the signal thread; signals then get their default action again
/// only after the process has no registration left, so drop it late.
#[derive(Debug)]
pub struct SignalListener {
    rx: mpsc::Receiver<Signal>,
    handle: Handle,
    _thread: JoinHandle<()>,
}

impl SignalListener {
    /// Registers the handlers and starts the forwarding thread. From here on SIGTERM, SIGINT and SIGHUP no
    /// longer kill the process: they wait in the queue for [`SignalListener::recv`].
    pub fn start() -> io::Result<Self> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let handle = signals.handle();
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name("logtank-signals".to_owned())
            .spawn(move || {
                for signo in signals.forever() {
                    let (signal, name) = match signo {
                        SIGHUP => (Signal::Reload, "SIGHUP"),
                        SIGINT => (Signal::Shutdown, "SIGINT"),
                        _ => (Signal::Shutdown, "SIGTERM"),
                    };
                    log::info!("received {name}");
                    if tx.blocking_send(signal).is_err() {
                        // The listener was dropped: nobody is left to act on signals.
                        return;
                    }
                }
            })?;
        Ok(SignalListener {
            rx,
            handle,
            _thread: thread,
        })
    }

    /// The next signal; `None` only if the signal thread died.
    pub async fn recv(&mut self) -> Option<Signal> {
        self.rx.recv().await
    }
}

impl Drop for SignalListener {
    fn drop(&mut self) {
        // Ends `forever()` so the thread exits; joining is unnecessary and could only delay exit.
        self.handle.close();
    }
}
