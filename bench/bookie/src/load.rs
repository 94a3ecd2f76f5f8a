//! The load: ledgers written at once, each keeping `in_flight` adds in flight (acknowledgements come in
//! order, so the oldest add is the one awaited), optionally paced to a total rate. An add's latency is from
//! its `append` to its acknowledgement.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;
use logtank_bench_zk::histogram::Histogram;
use logtank_ledger::LedgerClient;

#[derive(Debug, Clone)]
pub struct LoadResult {
    pub entries: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl LoadResult {
    pub fn entries_per_s(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }

    pub fn payload_bytes_per_s(&self) -> f64 {
        self.payload_bytes as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mb_per_s(&self) -> f64 {
        self.payload_bytes_per_s() / 1e6
    }
}

pub async fn run(client: &LedgerClient, args: &crate::Args, rate: Option<f64>) -> Result<LoadResult> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.ledgers {
        let writer = client.create(3, 3, 2, b"bench", Default::default()).await?;
        let in_flight = args.in_flight;
        let payload = vec![0x5au8; args.entry_bytes];
        let interval = rate.map(|r| Duration::from_secs_f64(args.ledgers as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::default();
            let mut pending = VecDeque::new();
            let mut entries = 0u64;
            let mut next_at = Instant::now();
            while Instant::now() < deadline {
                if pending.len() >= in_flight {
                    let (sent, add): (Instant, logtank_ledger::PendingAdd) =
                        pending.pop_front().expect("in flight");
                    add.wait().await?;
                    histogram.record(sent.elapsed().as_nanos() as u64);
                    entries += 1;
                    continue;
                }
                if let Some(interval) = interval {
                    let now = Instant::now();
                    if next_at > now {
                        // Acknowledge what is in while waiting for the next send slot.
                        if let Some((sent, add)) = pending.pop_front() {
                            add.wait().await?;
                            histogram.record(sent.elapsed().as_nanos() as u64);
                            entries += 1;
                        } else {
                            tokio::time::sleep(next_at - now).await;
                        }
                        continue;
                    }
                    next_at += interval;
                }
                let sent = Instant::now();
                pending.push_back((sent, writer.append(payload.clone()).await?));
            }
            for (sent, add) in pending {
                add.wait().await?;
                histogram.record(sent.elapsed().as_nanos() as u64);
                entries += 1;
            }
            writer.close().await?;
            anyhow::Ok((entries, histogram))
        }));
    }
    let mut histogram = Histogram::default();
    let mut entries = 0;
    for task in tasks {
        let (n, h) = task.await??;
        entries += n;
        histogram.merge(&h);
    }
    let q = |p: f64| Duration::from_nanos(histogram.quantile(p));
    Ok(LoadResult {
        entries,
        payload_bytes: entries * args.entry_bytes as u64,
        elapsed: started.elapsed(),
        p50: q(0.5),
        p99: q(0.99),
        p999: q(0.999),
    })
}

/// Writes `count` entries of `entry_bytes` to one bookie (E = Qw = Qa = 1), four ledgers at once.
pub async fn fill(client: &LedgerClient, count: u64, entry_bytes: usize) -> Result<()> {
    const LEDGERS: u64 = 4;
    const IN_FLIGHT: usize = 1000;
    let mut tasks = Vec::new();
    for l in 0..LEDGERS {
        let writer = client.create(1, 1, 1, b"bench", Default::default()).await?;
        let share = count / LEDGERS + u64::from(l < count % LEDGERS);
        tasks.push(tokio::spawn(async move {
            let payload = vec![0x5au8; entry_bytes];
            let mut pending = VecDeque::new();
            for _ in 0..share {
                if pending.len() >= IN_FLIGHT {
                    let add: logtank_ledger::PendingAdd = pending.pop_front().expect("in flight");
                    add.wait().await?;
                }
                pending.push_back(writer.append(payload.clone()).await?);
            }
            for add in pending {
                add.wait().await?;
            }
            writer.close().await?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
