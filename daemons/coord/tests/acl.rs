//! With `coord.auth` credentials, the nodes logtank creates are `auth:ALL, world:READ`: a client of a shared
//! coordination service without them reads the recovery endpoint and the epoch but cannot rewrite or
//! delete them. Against Debian's ZooKeeper, and logtank-coordd when `LOGTANK_COORDD` names it.
//!
//! Its own test binary: the ACL choice is process-wide (one daemon, one coordination identity), so the
//! unauthenticated tests of `coord.rs` must not share this process.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use logtank_coord::test_support::for_each_server;
use logtank_coord::zookeeper_client::{Client, Error as ZkError};
use logtank_coord::{paths, Coord, CoordConfig};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn nodes_created_with_credentials_are_read_only_to_others() {
    for_each_server(|server| {
        block_on(async {
            let config = CoordConfig {
                connect_timeout_ms: 20_000,
                auth: Some("logtank:s3cret".into()),
                ..CoordConfig::with_servers(server.connect_string())
            };
            let coord = match Coord::connect(&config).await {
                Ok(c) => c,
                Err(e) => panic!("{e}: {}", server.log_tail()),
            };
            assert_eq!(coord.bump_epoch().await.unwrap(), 1);
            let endpoint = format!("{}/host-a:15100", paths::STORAGE_SERVICES);
            let _registration = coord.register(&endpoint, b"host-a:15100").await.unwrap();

            let outsider = Client::connect(&server.connect_string()).await.unwrap();
            // Reads are open (a sync first: this session may sit on an ensemble follower).
            outsider.sync(&endpoint).await.unwrap();
            let (epoch, _) = outsider.get_data(paths::EPOCH).await.unwrap();
            assert_eq!(epoch, b"1");
            assert!(outsider.check_stat(&endpoint).await.unwrap().is_some());
            // Changes are not.
            assert!(matches!(
                outsider.set_data(paths::EPOCH, b"99", None).await,
                Err(ZkError::NoAuth)
            ));
            assert!(matches!(
                outsider.delete(&endpoint, None).await,
                Err(ZkError::NoAuth)
            ));
            assert!(matches!(
                outsider.delete(paths::EPOCH, None).await,
                Err(ZkError::NoAuth)
            ));
            // Wrong credentials are no better.
            let wrong = Client::connector()
                .with_auth("digest", b"logtank:guess")
                .connect(&server.connect_string())
                .await
                .unwrap();
            assert!(matches!(
                wrong.set_data(paths::EPOCH, b"99", None).await,
                Err(ZkError::NoAuth)
            ));
            // The daemon itself goes on changing them.
            assert_eq!(coord.bump_epoch().await.unwrap(), 2);
            tokio::time::sleep(Duration::from_millis(10)).await;
        });
    });
}
