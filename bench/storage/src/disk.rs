//! The disk's own limits, measured in the same run as the servers (bench/journal's approach): sequential
//! bandwidth with `dd oflag=direct`, and the latency of one 4 KiB write + fdatasync into a zero-filled file
//! (what a group commit waits for at least once).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Samples of the single-fdatasync measurement.
pub const FDATASYNC_SAMPLES: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct Disk {
    /// Bytes/s of `dd if=/dev/zero bs=1M oflag=direct`.
    pub dd_bytes_per_s: f64,
    pub fdatasync_p50: Duration,
    pub fdatasync_p99: Duration,
}

pub fn measure(dir: &Path, dd_mib: u64) -> Result<Disk> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join("dd.bin");
    let started = Instant::now();
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", "oflag=direct", "status=none"])
        .arg(format!("count={dd_mib}"))
        .status()
        .context("running dd")?;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        bail!("dd failed: {status}");
    }
    let (p50, p99) = single_fdatasync(dir)?;
    Ok(Disk {
        dd_bytes_per_s: (dd_mib << 20) as f64 / elapsed.as_secs_f64(),
        fdatasync_p50: p50,
        fdatasync_p99: p99,
    })
}

fn single_fdatasync(dir: &Path) -> Result<(Duration, Duration)> {
    let path = dir.join("fdatasync.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    file.write_all_at(&vec![0u8; 4096 * FDATASYNC_SAMPLES], 0)?;
    file.sync_all()?;
    let block = [0x33u8; 4096];
    let mut samples: Vec<Duration> = (0..FDATASYNC_SAMPLES as u64)
        .map(|i| {
            let started = Instant::now();
            file.write_all_at(&block, i * 4096)?;
            file.sync_data()?;
            Ok(started.elapsed())
        })
        .collect::<std::io::Result<_>>()?;
    std::fs::remove_file(&path)?;
    samples.sort();
    Ok((samples[samples.len() / 2], samples[samples.len() * 99 / 100]))
}
