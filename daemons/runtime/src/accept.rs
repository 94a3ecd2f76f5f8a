//! The bounded accept loop every TCP port of the suite runs (the storage ports of `logtank-thrift-server`,
//! coordd's client port, the bookies' to come), written once.
//!
//! [`accept_bounded`] holds one [`ConnectionPermit`] per connection and accepts only while one is free, so
//! at most `connections_max` connections are open at once and the rest wait in the kernel's backlog (where
//! the client's connect timeout applies) instead of costing a file descriptor and a task each. A failed
//! accept (EMFILE and friends) is logged and followed by [`ACCEPT_ERROR_PAUSE`], so the loop does not spin
//! while connections close. The loop ends when the [`Shutdown`] fires, dropping the listener: no connection
//! is accepted after that. What a connection does, any finer limit and the tracking of in-flight work are the
//! caller's, in `on_accept`; [`PerAddressLimit`] is the per-client-address limit the ports apply there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::shutdown::Shutdown;

/// How long the accept loop pauses after a failed accept (out of file descriptors and the like: let
/// connections close first), so it does not spin.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One of a port's `connections_max` slots. The connection's task holds it until the connection has ended;
/// dropping it lets the loop accept the next one.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
}

/// Accepts connections on `listener` until `shutdown`, at most `connections_max` open at once, and hands
/// each to `on_accept` with its peer address and its permit (TCP_NODELAY already set: every port of the
/// suite is request/reply, where Nagle's delay is pure latency). `on_accept` runs on the loop's task, so it
/// should spawn the connection's work rather than do it. `port_name` starts the loop's log lines.
///
/// `connections_max` above tokio's `Semaphore::MAX_PERMITS` is that maximum; 0 accepts nothing.
pub async fn accept_bounded(
    listener: TcpListener,
    connections_max: usize,
    port_name: &str,
    shutdown: Shutdown,
    mut on_accept: impl FnMut(TcpStream, SocketAddr, ConnectionPermit),
) {
    let slots = Arc::new(Semaphore::new(connections_max.min(Semaphore::MAX_PERMITS)));
    loop {
        // A slot first, then the accept: over the limit, clients wait in the backlog, not in our memory.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                // Only a closed semaphore fails, and this one is never closed.
                Err(_) => return,
            },
            _ = shutdown.wait() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                on_accept(stream, peer, ConnectionPermit { _permit: permit });
            }
            Err(e) => {
                log::warn!("{port_name}: accept failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    _ = shutdown.wait() => return,
                }
            }
        }
    }
}

/// Counts the open connections of each client address, so one host cannot take all of a port's
/// `connections_max` slots (and with them, every other client's service). Cheap to clone; each
/// connection holds the [`AddressSlot`] it got until it ends.
#[derive(Debug, Clone, Default)]
pub struct PerAddressLimit {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddressLimit {
    /// A slot for one more connection from `ip`, or None if it already has `max` (0 = no limit).
    pub fn try_acquire(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.counts.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's share of its address's limit; given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::shutdown;

    /// What the tests' `on_accept` passes on: the stream and its permit, held by the test.
    type Accepted = (TcpStream, ConnectionPermit);

    async fn start(
        connections_max: usize,
    ) -> (SocketAddr, shutdown::ShutdownTrigger, mpsc::Receiver<Accepted>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(accept_bounded(
            listener,
            connections_max,
            "Test",
            shutdown,
            move |s, _, p| {
                tx.try_send((s, p)).unwrap();
            },
        ));
        (addr, trigger, rx)
    }

    // Proves at most `connections_max` connections are handed over: the next is accepted only once a permit
    // is dropped, and accepted streams have TCP_NODELAY set.
    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_permit() {
        let (addr, _trigger, mut accepted) = start(1).await;
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let (first, permit) = accepted.recv().await.unwrap();
        assert!(first.nodelay().unwrap());
        let _second_client = TcpStream::connect(addr).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), accepted.recv()).await;
        assert!(
            waited.is_err(),
            "a second connection was accepted beside the first"
        );
        drop(permit);
        let second = tokio::time::timeout(Duration::from_secs(30), accepted.recv()).await;
        assert!(
            second.unwrap().is_some(),
            "the freed permit let the next connection in"
        );
    }

    // Proves shutdown ends the loop, also while it waits for a permit, and no connection is accepted after.
    #[tokio::test]
    async fn shutdown_ends_the_loop() {
        for connections_max in [0, 4] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (trigger, shutdown) = shutdown::channel();
            let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let count = accepted.clone();
            let task = tokio::spawn(accept_bounded(
                listener,
                connections_max,
                "Test",
                shutdown,
                move |_, _, _| {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                },
            ));
            trigger.trigger();
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the loop ended at shutdown")
                .unwrap();
            // The listener is gone with the loop: a connection is refused, not accepted.
            assert!(TcpStream::connect(addr).await.is_err());
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        }
    }
}
