//! logtank-coord against a three-server ensemble of Debian's ZooKeeper on this machine, with the leader
//! killed (SIGKILL) mid-test: the daemons' registrations, the recovery endpoint and the epoch come back
//! (the sessions move to a surviving server and are not expired), writes go on with the new leader, and the
//! killed server rejoins. The bookies' registrations and ledger metadata are covered the same way in
//! `daemons/bookie/tests/cluster.rs` (`an_ensemble_that_loses_its_leader_keeps_bookies_and_ledgers`).
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use logtank_coord::test_support::{ServerKind, TestServer};
use logtank_coord::zookeeper_client::Client;
use logtank_coord::{paths, Coord, CoordConfig};

/// Past a leader election and a session's move to another server.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, for at most [`WAIT_MAX`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(started.elapsed() < WAIT_MAX, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn registrations_the_recovery_endpoint_and_epochs_survive_the_leaders_death() {
    if !logtank_coord::test_support::ensemble_tests_enabled() {
        return;
    }
    let mut ensemble = TestServer::start(&ServerKind::ZooKeeperEnsemble);
    let servers = ensemble.connect_string();
    eprintln!("--- ensemble at {servers}, leader {:?}", ensemble.leader());
    let config = CoordConfig {
        // Longer than an election: the sessions must move over, not expire.
        session_timeout_ms: 20_000,
        connect_timeout_ms: 30_000,
        ..CoordConfig::with_servers(servers.clone())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let storage_path = paths::storage_service("127.0.0.1:15000");
    let (writer, master, registration, endpoint) = runtime.block_on(async {
        let writer = Coord::connect(&config).await.unwrap();
        let registration = writer.register(&storage_path, b"127.0.0.1:15000").await.unwrap();
        let master = Coord::connect(&config).await.unwrap();
        let endpoint = master.register(paths::RECOVERY, b"10.0.0.1:15100").await.unwrap();
        assert_eq!(master.bump_epoch().await.unwrap(), 1);
        (writer, master, registration, endpoint)
    });
    let sessions = (writer.client().session_id(), master.client().session_id());

    let killed = ensemble.kill_leader();
    eprintln!("--- killed server {killed}");
    runtime.block_on(async {
        // A new leader among the two left, and the state it serves is the old one.
        let observer = eventually("a client of the surviving servers", || {
            let servers = servers.clone();
            async move { Client::connect(&servers).await.ok() }
        })
        .await;
        let (data, stat) = eventually("the writer's registration", || {
            let (observer, path) = (&observer, &storage_path);
            async move { observer.get_data(path).await.ok() }
        })
        .await;
        assert_eq!(data, b"127.0.0.1:15000");
        assert_eq!(stat.ephemeral_owner, sessions.0 .0, "still the writer's session");
        let endpoint_now = eventually("the recovery endpoint", || async {
            master.recovery_endpoint().await.ok().flatten()
        })
        .await;
        assert_eq!(endpoint_now, "10.0.0.1:15100");
        // Writes go on with the new leader.
        let epoch = eventually("an epoch bump under the new leader", || async {
            master.bump_epoch().await.ok()
        })
        .await;
        assert_eq!(epoch, 2);
        assert_eq!(writer.epoch().await.unwrap(), 2);
        assert_eq!(
            (writer.client().session_id(), master.client().session_id()),
            sessions,
            "the sessions moved to a surviving server without expiring"
        );
    });
    assert!(ensemble.leader().is_some_and(|l| l != killed), "a new leader");

    // The killed server rejoins and serves the same state.
    ensemble.restart_member(killed);
    runtime.block_on(async {
        assert_eq!(master.bump_epoch().await.unwrap(), 3);
        registration.deregister().await.unwrap();
        endpoint.deregister().await.unwrap();
        assert_eq!(writer.recovery_endpoint().await.unwrap(), None);
    });
}
