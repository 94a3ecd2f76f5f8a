//! Disk faults under a real bookie process, injected by the power-loss file system (logtank-powerfs): an
//! entry store that cannot create its next segment (ENOSPC on every creation in its journal directory)
//! makes the bookie readonly with the reason (it moves to `available/readonly`, adds are refused with
//! EREADONLY, reads go on) instead of exiting and restarting in a loop; once the disk takes the segment it
//! is writable again by itself. Root only (the test says so and passes otherwise).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{default_server, Cluster};
use logtank_powerfs::{Fault, FaultOp, PowerFs};
use logtank_testkit::wait_for_or;

#[test]
fn an_entry_store_that_cannot_grow_makes_the_bookie_readonly_until_it_can() {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let pdir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount_under(pdir.path()).unwrap();
    let (journal, ledgers) = (fs.path().join("journal"), fs.path().join("ledgers"));
    let keys = format!(
        "journal_dir = \"{}\"\nledgers_dir = \"{}\"\nframe_bytes_max = 65536\nsegment_size_bytes = 262144\n",
        journal.display(),
        ledgers.display()
    );
    let mut cluster = Cluster::start_with(&default_server(), 0, "/ledgers", &keys, "");
    cluster.add_bookie_with_dirs(&journal, &ledgers);
    let bookie_id = cluster.bookies[0].id.clone();
    let (before, written) = cluster.write_ledger(1, 1, 1, 20);

    fs.inject(Fault::new(FaultOp::Create, nix::libc::ENOSPC).on_paths_containing("journal/"));
    // Adds of ~10 KiB until one is not acknowledged: the roll needs a segment that cannot be made.
    let acked = cluster.block_on(async {
        let writer = cluster
            .client
            .create(1, 1, 1, b"pw", Default::default())
            .await
            .unwrap();
        let mut acked = 0;
        for i in 0..200 {
            let pending = writer.append(vec![b'e'; 10_000]).await;
            let Ok(pending) = pending else { break };
            match tokio::time::timeout(Duration::from_secs(3), pending.wait()).await {
                Ok(Ok(entry)) => {
                    assert_eq!(entry, i);
                    acked += 1;
                }
                _ => break,
            }
        }
        acked
    });
    assert!(acked < 200, "a bookie whose store cannot grow kept acknowledging");
    let bookie = &cluster.bookies[0].process;
    let context = || bookie.status().to_string();
    wait_for_or(
        "the bookie to say why it is readonly",
        Duration::from_secs(10),
        || {
            bookie.status()["readonly_reasons"]
                .to_string()
                .contains("the entry store cannot create its next segment")
        },
        context,
    );
    assert!(bookie.status()["readonly_reasons"]
        .to_string()
        .contains("No space left on device"));
    wait_for_or(
        "the bookie to move to available/readonly",
        Duration::from_secs(10),
        || cluster.registered().1 == vec![bookie_id.clone()],
        context,
    );
    // Reads go on.
    assert_eq!(cluster.read_ledger(before, false), written);

    // Room again: writable by itself, no restart.
    fs.clear_faults();
    wait_for_or(
        "the bookie to be writable again",
        Duration::from_secs(10),
        || cluster.registered().0 == vec![bookie_id.clone()],
        context,
    );
    let (after, written) = cluster.write_ledger(1, 1, 1, 50);
    assert_eq!(cluster.read_ledger(after, false), written);
    assert!(cluster.bookies[0].process.is_running(), "the bookie never exited");
    eprintln!("{acked} adds acknowledged before the store could not grow");
}
