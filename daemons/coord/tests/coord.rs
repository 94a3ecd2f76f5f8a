//! logtank-coord against real servers: Debian's ZooKeeper always, logtank-coordd too when `LOGTANK_COORDD`
//! names its binary. Each test starts its own server(s) in a temp dir on a free port; nothing is mocked.
// Helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests; a failed unwrap in a
// test helper is a test failure, which is what we want.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use logtank_coord::test_support::{for_each_server, TcpProxy, TestServer};
use logtank_coord::zookeeper_client::{Acls, Client, CreateMode, SessionState, Stat};
use logtank_coord::{paths, Coord, CoordConfig, CoordError};

/// The longest any condition below is polled for: past a session timeout (10 s) and a renewal.
const WAIT_MAX: Duration = Duration::from_secs(60);

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn config(server: &TestServer) -> CoordConfig {
    CoordConfig {
        connect_timeout_ms: 20_000,
        ..CoordConfig::with_servers(server.connect_string())
    }
}

/// A plain client, standing in for another daemon or an operator.
async fn observer(server: &TestServer) -> Client {
    Client::connect(&server.connect_string()).await.unwrap()
}

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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `get_data` of a node another session wrote: a `sync` first, as a ZooKeeper client must (this one may
/// be connected to an ensemble follower behind the server that took the write).
async fn synced_get(client: &Client, path: &str) -> (Vec<u8>, Stat) {
    client.sync(path).await.unwrap();
    client.get_data(path).await.unwrap()
}

async fn stat_of(client: &Client, path: &str) -> Option<Stat> {
    client.check_stat(path).await.unwrap()
}

/// The shortest session timeout both servers grant with a 2 s tick (2 ticks), so expiry tests are quick.
const SHORT_SESSION_MS: u64 = 4000;

/// A config that reaches `server` through `proxy`, with a short session timeout.
fn partitionable(proxy: &TcpProxy) -> CoordConfig {
    CoordConfig {
        session_timeout_ms: SHORT_SESSION_MS,
        connect_timeout_ms: 20_000,
        ..CoordConfig::with_servers(proxy.connect_string())
    }
}

/// Ends `coord`'s current session by a partition: cuts the proxy until the session has expired (the server
/// stops hearing from it; the client gives up reconnecting), then heals it. Returns the ended session's id.
async fn expire_session(coord: &Coord, proxy: &TcpProxy) -> i64 {
    let victim = coord.client();
    let id = victim.session_id().0;
    proxy.cut();
    eventually("the session to expire", || {
        let state = victim.state();
        async move { (state == SessionState::Expired).then_some(()) }
    })
    .await;
    proxy.heal();
    id
}

// Proves a registration is an ephemeral node of the daemon's session, with its parents created and its data
// in place, and that it goes when deregistered.
#[test]
fn register_creates_an_ephemeral_node_with_parents() {
    for_each_server(|server| {
        block_on(async {
            let coord = Coord::connect(&config(server)).await.unwrap();
            let path = paths::storage_service("127.0.0.1:15000");
            let registration = coord.register(&path, b"127.0.0.1:15000").await.unwrap();
            assert_eq!(registration.session(), Some(coord.client().session_id()));

            let other = observer(server).await;
            let (data, stat) = synced_get(&other, &path).await;
            assert_eq!(data, b"127.0.0.1:15000");
            assert_eq!(stat.ephemeral_owner, coord.client().session_id().0);
            let parent = stat_of(&other, paths::STORAGE_SERVICES).await.unwrap();
            assert_eq!(parent.ephemeral_owner, 0, "parents are persistent");

            registration.deregister().await.unwrap();
            // Another session may read from a server behind the one that took the delete (an ensemble):
            // `sync` first, as a ZooKeeper client must.
            other.sync(&path).await.unwrap();
            assert!(stat_of(&other, &path).await.is_none());
        })
    });
}

// Proves the registration comes back, in a new session, after the server ended the daemon's session.
#[test]
fn registration_comes_back_after_session_expiry() {
    for_each_server(|server| {
        block_on(async {
            let proxy = TcpProxy::start(server.port());
            let coord = Coord::connect(&partitionable(&proxy)).await.unwrap();
            let path = paths::storage_service("127.0.0.1:15001");
            let registration = coord.register(&path, b"127.0.0.1:15001").await.unwrap();
            let other = observer(server).await;

            let old = expire_session(&coord, &proxy).await;
            let owner = eventually("the node in a new session", || {
                let other = other.clone();
                let path = path.clone();
                async move {
                    let stat = stat_of(&other, &path).await?;
                    (stat.ephemeral_owner != old).then_some(stat.ephemeral_owner)
                }
            })
            .await;
            assert_eq!(owner, coord.client().session_id().0);
            let new_session = eventually("the registration to report its new session", || {
                let session = registration.session();
                async move { session.filter(|s| s.0 != old) }
            })
            .await;
            assert_eq!(new_session.0, owner);
            assert_eq!(synced_get(&other, &path).await.0, b"127.0.0.1:15001");
            // The renewed session serves everything else too.
            assert_eq!(coord.bump_epoch().await.unwrap(), 1);
        })
    });
}

// Proves a registration deleted by hand is created again while its daemon runs.
#[test]
fn registration_comes_back_after_deletion() {
    for_each_server(|server| {
        block_on(async {
            let coord = Coord::connect(&config(server)).await.unwrap();
            let path = paths::storage_service("127.0.0.1:15002");
            let _registration = coord.register(&path, b"x").await.unwrap();
            let other = observer(server).await;
            other.delete(&path, None).await.unwrap();
            eventually("the node to come back", || {
                let other = other.clone();
                let path = path.clone();
                async move { stat_of(&other, &path).await }
            })
            .await;
        })
    });
}

// Proves a node left by another session is waited out (it goes when that session ends), and a persistent node
// in the way is refused at once with an error naming it.
#[test]
fn register_waits_out_a_stale_node_and_refuses_a_persistent_one() {
    for_each_server(|server| {
        block_on(async {
            let coord = Coord::connect(&config(server)).await.unwrap();
            let other = observer(server).await;
            let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
            let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
            other.mkdir(paths::STORAGE_SERVICES, &persistent).await.unwrap();

            let stale = paths::storage_service("127.0.0.1:15003");
            let previous_run = observer(server).await;
            previous_run.create(&stale, b"old", &ephemeral).await.unwrap();
            let registering = tokio::spawn({
                let coord = coord.clone();
                let stale = stale.clone();
                async move { coord.register(&stale, b"new").await }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !registering.is_finished(),
                "register must wait for the stale node"
            );
            drop(previous_run); // its session closes, its node goes
            let registration = registering.await.unwrap().unwrap();
            assert_eq!(synced_get(&other, &stale).await.0, b"new");
            drop(registration);

            let taken = paths::storage_service("127.0.0.1:15004");
            other.create(&taken, b"", &persistent).await.unwrap();
            let e = coord.register(&taken, b"").await.unwrap_err();
            assert!(matches!(e, CoordError::Occupied { .. }), "{e:?}");
            assert!(e.to_string().contains(&taken), "{e}");
        })
    });
}

// Proves the recovery endpoint is read (None when no master) and followed through registration,
// deregistration, a new master, and a renewal of the follower's own session.
#[test]
fn recovery_endpoint_is_read_and_followed() {
    for_each_server(|server| {
        block_on(async {
            let proxy = TcpProxy::start(server.port());
            let follower = Coord::connect(&partitionable(&proxy)).await.unwrap();
            assert_eq!(follower.recovery_endpoint().await.unwrap(), None);
            let mut watcher = follower.watch_recovery_endpoint();
            assert_eq!(watcher.changed().await.unwrap(), None);

            let master = Coord::connect(&config(server)).await.unwrap();
            let registration = master.register(paths::RECOVERY, b"10.0.0.1:15100").await.unwrap();
            assert_eq!(
                watcher.changed().await.unwrap().as_deref(),
                Some("10.0.0.1:15100")
            );
            assert_eq!(
                follower.recovery_endpoint().await.unwrap().as_deref(),
                Some("10.0.0.1:15100")
            );
            registration.deregister().await.unwrap();
            assert_eq!(watcher.changed().await.unwrap(), None);

            expire_session(&follower, &proxy).await;
            let promoted = master.register(paths::RECOVERY, b"10.0.0.2:15100").await.unwrap();
            assert_eq!(
                watcher.changed().await.unwrap().as_deref(),
                Some("10.0.0.2:15100")
            );
            drop(promoted);
        })
    });
}

// Proves epochs start at 0, bump by one, and that concurrent bumps from two daemons never hand out the same
// epoch twice (the compare-and-set loop).
#[test]
fn epoch_bumps_are_compare_and_set() {
    for_each_server(|server| {
        block_on(async {
            let a = Coord::connect(&config(server)).await.unwrap();
            let b = Coord::connect(&config(server)).await.unwrap();
            assert_eq!(a.epoch().await.unwrap(), 0);
            assert_eq!(a.bump_epoch().await.unwrap(), 1);
            assert_eq!(
                b.epoch().await.unwrap(),
                1,
                "epoch() syncs: another session's bump is seen"
            );

            let bumps: Vec<_> = (0..20)
                .map(|i| {
                    let coord = if i % 2 == 0 { a.clone() } else { b.clone() };
                    tokio::spawn(async move { coord.bump_epoch().await.unwrap() })
                })
                .collect();
            let mut epochs = Vec::new();
            for bump in bumps {
                epochs.push(bump.await.unwrap());
            }
            epochs.sort_unstable();
            assert_eq!(epochs, (2..=21).collect::<Vec<u64>>());
            assert_eq!(b.epoch().await.unwrap(), 21);

            let other = observer(server).await;
            other.set_data(paths::EPOCH, b"seven", None).await.unwrap();
            let e = a.bump_epoch().await.unwrap_err();
            assert!(e.to_string().contains("seven"), "{e}");
        })
    });
}

// Proves a chroot in the connect string is created and everything lands under it.
#[test]
fn chroot_is_created_and_used() {
    for_each_server(|server| {
        block_on(async {
            let config = CoordConfig {
                servers: format!("{}/suites/one", server.connect_string()),
                ..config(server)
            };
            let coord = Coord::connect(&config).await.unwrap();
            assert_eq!(coord.bump_epoch().await.unwrap(), 1);
            let other = observer(server).await;
            assert_eq!(synced_get(&other, "/suites/one/logtank/epoch").await.0, b"1");
            assert!(stat_of(&other, paths::EPOCH).await.is_none());
        })
    });
}

// Proves connecting to a port where nothing listens fails after the connect timeout with an error that names
// the servers, instead of hanging.
#[test]
fn connect_to_nothing_fails_clearly() {
    block_on(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = CoordConfig {
            connect_timeout_ms: 1500,
            ..CoordConfig::with_servers(format!("127.0.0.1:{port}"))
        };
        let started = Instant::now();
        let e = Coord::connect(&config).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            matches!(e, CoordError::Connect { attempts, .. } if attempts > 1),
            "{e:?}"
        );
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    });
}
