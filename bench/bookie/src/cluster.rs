//! The benchmark's cluster: a fresh logtank-coordd and bookies (release binaries) on free loopback ports in
//! a fresh directory, the ledgers root formatted and every bookie formatted, as an operator would; stopped
//! (SIGTERM) at the end, killed on drop.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logtank_bench_storage::procs::{binary, free_port, Server};
use logtank_coord::{Coord, CoordConfig};
use logtank_ledger::{admin, ClientOptions, Layout, LedgerClient};

/// How long bookies may take to register after their start (a replay of millions of entries included).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct Cluster {
    coordd: Server,
    servers: String,
    bookies: Vec<(Server, u16)>,
    pub client: LedgerClient,
    coord: Coord,
    layout: Layout,
}

fn bookie_config(dir: &Path, port: u16, admin: u16, coord: &str, settings: &[String]) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_root = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [io]\nclass = \"none\"\n[coord]\nservers = \"{coord}\"\n[bookie]\n{}\n",
        dir.display(),
        settings.join("\n")
    )
}

impl Cluster {
    pub fn start(
        bin_dir: &Path,
        dir: &Path,
        bookies: usize,
        settings: &[String],
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let coordd_bin = binary(
            bin_dir,
            "logtank-coordd",
            "cargo build --release -p logtank-coordd",
        )?;
        let bookie_bin = binary(
            bin_dir,
            "logtank-bookie",
            "cargo build --release -p logtank-bookie",
        )?;
        let coord_port = free_port()?;
        let args: Vec<OsString> = vec![
            "--listen".into(),
            format!("127.0.0.1:{coord_port}").into(),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", free_port()?).into(),
            "--data-root".into(),
            dir.join("coordd").into(),
            "--config".into(),
            dir.join("coordd.toml").into(),
        ];
        std::fs::write(dir.join("coordd.toml"), "")?;
        let mut coordd = Server::spawn("logtank-coordd", &coordd_bin, &args, &dir.join("coordd.log"))?;
        let servers = format!("127.0.0.1:{coord_port}");
        coordd.wait_listening(servers.parse()?)?;
        let layout = Layout::new(logtank_ledger::DEFAULT_ROOT)?;
        let coord = runtime.block_on(Coord::connect(&CoordConfig::with_servers(&servers)))?;
        runtime.block_on(admin::metaformat(&coord.client(), &layout, false))?;
        let mut started = Vec::new();
        for n in 1..=bookies {
            let port = free_port()?;
            let data = dir.join(format!("bookie-{n}"));
            let config = dir.join(format!("bookie-{n}.toml"));
            std::fs::write(
                &config,
                bookie_config(&data, port, free_port()?, &servers, settings),
            )?;
            let identity = logtank_bookie::setup::Identity {
                bookie_id: format!("127.0.0.1:{port}"),
                journal_dir: data.join("journal"),
                ledgers_dir: data.join("ledgers"),
            };
            runtime.block_on(logtank_bookie::setup::format(
                &coord.client(),
                &layout,
                &identity,
                false,
            ))?;
            let args: Vec<OsString> = vec!["--config".into(), config.into()];
            let server = Server::spawn(
                &format!("bookie-{n}"),
                &bookie_bin,
                &args,
                &dir.join(format!("bookie-{n}.log")),
            )?;
            started.push((server, port));
        }
        let cluster = Cluster {
            coordd,
            servers: servers.clone(),
            bookies: started,
            client: LedgerClient::new(coord.clone(), layout.clone(), ClientOptions::default()),
            coord,
            layout,
        };
        cluster.wait_registered(runtime, bookies)?;
        Ok(cluster)
    }

    /// Waits until `count` bookies are registered writable (after their replay).
    fn wait_registered(&self, runtime: &tokio::runtime::Runtime, count: usize) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let (writable, _) = runtime.block_on(admin::list_bookies(&self.coord.client(), &self.layout))?;
            if writable.len() >= count {
                return Ok(started.elapsed());
            }
            if started.elapsed() > REGISTER_TIMEOUT {
                bail!("{count} bookies did not register within {REGISTER_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The coordd's connect string (`[coord] servers` of a client of these bookies).
    pub fn coord_servers(&self) -> &str {
        &self.servers
    }

    pub fn stop(self, _runtime: &tokio::runtime::Runtime) -> Result<()> {
        for (bookie, _) in self.bookies {
            bookie.stop()?;
        }
        self.coordd.stop()?;
        Ok(())
    }
}

/// Fills one bookie with `args.restart_entries` entries, stops it, and times its next start until it is
/// registered (its journal replayed).
pub fn restart_time(
    bin_dir: &Path,
    dir: &Path,
    args: &crate::Args,
    runtime: &tokio::runtime::Runtime,
) -> Result<String> {
    let mut cluster = Cluster::start(bin_dir, dir, 1, &args.bookie_settings, runtime)?;
    let n = args.restart_entries;
    eprintln!("filling one bookie with {n} entries of {} B", args.entry_bytes);
    let filled = Instant::now();
    runtime.block_on(crate::load::fill(&cluster.client, n, args.entry_bytes))?;
    let fill_s = filled.elapsed().as_secs_f64();
    let (bookie, port) = cluster.bookies.pop().context("one bookie")?;
    let stop = bookie.stop()?;
    let bookie_bin = binary(
        bin_dir,
        "logtank-bookie",
        "cargo build --release -p logtank-bookie",
    )?;
    let config = dir.join("bookie-1.toml");
    let args_os: Vec<OsString> = vec!["--config".into(), config.into()];
    let started = Instant::now();
    let server = Server::spawn("bookie-1", &bookie_bin, &args_os, &dir.join("bookie-1.log"))?;
    cluster.bookies.push((server, port));
    cluster.wait_registered(runtime, 1)?;
    let restart = started.elapsed();
    let journal_bytes: u64 = std::fs::read_dir(dir.join("bookie-1/journal"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    cluster.stop(runtime)?;
    Ok(format!(
        "restart of a bookie holding {n} entries ({:.1} GB of journal; filled in {fill_s:.0} s): stopped in \
         {:.2} s, serving again **{:.2} s** after its start\n",
        journal_bytes as f64 / 1e9,
        stop.as_secs_f64(),
        restart.as_secs_f64()
    ))
}
