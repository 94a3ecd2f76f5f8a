//! `logtank ledgers …` and `logtank bookie …`: set up a bookie cluster, look at it, and write and read
//! ledgers through logtank-ledger's client. Every command takes `--coord HOST:PORT` (env `LOGTANK_COORD`,
//! default 127.0.0.1:2181) and `--root PATH` (env `LOGTANK_LEDGERS_ROOT`, default `/ledgers`).
//!
//! Scripts rely on two of them: `ledgers write` adds each line of standard input as one entry, prints the
//! new ledger's id once it is closed and exits non-zero if any entry was not acknowledged; `ledgers read`
//! prints a ledger's entries one per line, in order.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use logtank_coord::{Coord, CoordConfig, DEFAULT_SERVERS};
use logtank_ledger::{admin, ClientOptions, Layout, LedgerClient, DEFAULT_ROOT};
use logtank_runtime::config::{self as runtime_config, ConfigSource, Override};

/// How long a command tries to reach coordination: a person (or a script) is waiting.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

#[derive(Args, Debug, Clone)]
pub struct Cluster {
    /// Coordination: a ZooKeeper connect string (coordd or a ZooKeeper ensemble).
    #[arg(long, env = "LOGTANK_COORD", default_value = DEFAULT_SERVERS, global = true)]
    pub coord: String,
    /// The ledgers root in coordination.
    #[arg(long, env = "LOGTANK_LEDGERS_ROOT", default_value = DEFAULT_ROOT, global = true)]
    pub root: String,
}

impl Cluster {
    fn layout(&self) -> Result<Layout> {
        Ok(Layout::new(&self.root)?)
    }

    async fn connect(&self) -> Result<Coord> {
        let config = CoordConfig {
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            auth: crate::endpoint::coord_auth_from_env(),
            ..CoordConfig::with_servers(&self.coord)
        };
        Coord::connect(&config)
            .await
            .with_context(|| format!("connecting to coordination at {} (--coord)", self.coord))
    }

    pub(crate) async fn client(&self) -> Result<LedgerClient> {
        Ok(LedgerClient::new(
            self.connect().await?,
            self.layout()?,
            ClientOptions::default(),
        ))
    }
}

#[derive(Args, Debug)]
pub struct LedgersArgs {
    #[command(flatten)]
    pub cluster: Cluster,
    #[command(subcommand)]
    pub command: LedgersCommand,
}

#[derive(Subcommand, Debug)]
pub enum LedgersCommand {
    /// Create the ledgers root, INSTANCEID and what the layout needs (once per cluster). Asks first.
    Metaformat {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Format a root that holds ledgers (their metadata is deleted; every bookie must be formatted again).
        #[arg(long)]
        force: bool,
    },
    /// Create a ledger and print its id (it stays open, with no entries).
    Create(QuorumArgs),
    /// Add each line of standard input as one entry of a new ledger; print its id once it is closed.
    Write(QuorumArgs),
    /// Print a ledger's entries, one per line, in order (an open ledger up to its last add confirmed).
    Read {
        ledger: u64,
        #[arg(long, default_value = "")]
        password: String,
        /// The first entry to print.
        #[arg(long, default_value_t = 0)]
        from: i64,
        /// Recover (fence and close) an open ledger first, so every entry its writer had acknowledged is read.
        #[arg(long)]
        recover: bool,
    },
    /// Print a ledger's entries as they are added, until it is closed (or Ctrl-C).
    Tail {
        ledger: u64,
        #[arg(long, default_value_t = 0)]
        from: i64,
    },
    /// List the ledgers under the root (-l: with state, quorums and last entry).
    List {
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Print a ledger's metadata (JSON).
    Info { ledger: u64 },
    /// Fence, recover and close an open ledger; print its last entry.
    Recover {
        ledger: u64,
        #[arg(long, default_value = "")]
        password: String,
    },
    /// Delete a ledger (the bookies reclaim its entries at their next garbage collection).
    Delete { ledger: u64 },
}

#[derive(Args, Debug)]
pub struct QuorumArgs {
    /// Bookies the ledger is spread over (E).
    #[arg(long = "ensemble", short = 'e', default_value_t = 3)]
    pub ensemble: usize,
    /// Bookies each entry is written to (Qw).
    #[arg(long = "write-quorum", short = 'w', default_value_t = 2)]
    pub write_quorum: usize,
    /// Bookies that must have an entry before it is acknowledged (Qa).
    #[arg(long = "ack-quorum", short = 'a', default_value_t = 2)]
    pub ack_quorum: usize,
    /// The ledger's password (its master key is derived from it; recovery needs it).
    #[arg(long, default_value = "")]
    pub password: String,
    /// Custom metadata, KEY=VALUE (repeatable).
    #[arg(long = "custom", value_name = "KEY=VALUE")]
    pub custom: Vec<String>,
}

impl QuorumArgs {
    async fn create(&self, client: &LedgerClient) -> Result<logtank_ledger::LedgerWriter> {
        let custom = custom(&self.custom)?;
        Ok(client
            .create(
                self.ensemble,
                self.write_quorum,
                self.ack_quorum,
                self.password.as_bytes(),
                custom,
            )
            .await?)
    }
}

#[derive(Args, Debug)]
pub struct BookieArgs {
    #[command(flatten)]
    pub cluster: Cluster,
    #[command(subcommand)]
    pub command: BookieCommand,
}

#[derive(Subcommand, Debug)]
pub enum BookieCommand {
    /// Write a bookie's cookie into its directories and into coordination (once per bookie, before its
    /// first start). Reads the bookie's own config file.
    Format {
        /// The bookie's config (/etc/logtank/bookie-N.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override `server.data_root` (its journal and ledgers directories follow).
        #[arg(long)]
        data_root: Option<String>,
        /// Override `server.listen` (the bookie id is this address unless `bookie.advertise` says otherwise).
        #[arg(long)]
        listen: Option<String>,
        /// Format directories that hold another bookie's data (it is deleted).
        #[arg(long)]
        force: bool,
    },
    /// The bookies registered: writable, then readonly.
    List,
}

/// Warnings of the ledger client (an ensemble change, a bookie that failed) go to stderr; `LOGTANK_LOG`
/// (`info`, `debug`) shows more.
fn init_logging() {
    let level = std::env::var("LOGTANK_LOG").unwrap_or_else(|_| "warn".into());
    let config = logtank_runtime::LogConfig { level, syslog: None };
    if let Err(e) = logtank_runtime::logging::init("cli", &config) {
        eprintln!("logtank: cannot set up logging ({e}); continuing without it");
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run_ledgers(args: LedgersArgs) -> Result<ExitCode> {
    runtime()?.block_on(ledgers(args))
}

pub fn run_bookie(args: BookieArgs) -> Result<ExitCode> {
    runtime()?.block_on(bookie(args))
}

async fn ledgers(args: LedgersArgs) -> Result<ExitCode> {
    let cluster = &args.cluster;
    match args.command {
        LedgersCommand::Metaformat { yes, force } => metaformat(cluster, yes, force).await,
        LedgersCommand::Create(q) => {
            let writer = q.create(&cluster.client().await?).await?;
            println!("{}", writer.id());
            Ok(ExitCode::SUCCESS)
        }
        LedgersCommand::Write(q) => write(cluster, q).await,
        LedgersCommand::Read {
            ledger,
            password,
            from,
            recover,
        } => {
            let client = cluster.client().await?;
            let reader = client.open(ledger, password.as_bytes(), recover).await?;
            let last = match reader.last_entry() {
                Some(last) => last,
                None => reader.last_add_confirmed().await?,
            };
            let mut out = std::io::stdout().lock();
            // In slices, so a long ledger is not held in memory at once.
            let mut next = from;
            while next <= last {
                let to = (next + 999).min(last);
                for (_, payload) in reader.read_range(next, to).await? {
                    out.write_all(&payload)?;
                    out.write_all(b"\n")?;
                }
                next = to + 1;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        LedgersCommand::Tail { ledger, from } => {
            let client = cluster.client().await?;
            let mut reader = client.open(ledger, b"", false).await?;
            let mut failed = None;
            reader
                .tail(from, |_, payload| {
                    let mut out = std::io::stdout().lock();
                    let written = out
                        .write_all(&payload)
                        .and_then(|()| out.write_all(b"\n"))
                        .and_then(|()| out.flush());
                    match written {
                        Ok(()) => true,
                        Err(e) => {
                            failed = Some(e);
                            false
                        }
                    }
                })
                .await?;
            match failed {
                Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Some(e) => Err(e.into()),
                None => Ok(ExitCode::SUCCESS),
            }
        }
        LedgersCommand::List { long } => {
            let client = cluster.client().await?;
            for id in client.list().await? {
                if long {
                    let m = client.metadata(id).await?;
                    println!(
                        "{id}\t{:?}\tE={} Qw={} Qa={}\tlast entry {}\t{} bytes\t{}",
                        m.state,
                        m.ensemble_size,
                        m.write_quorum,
                        m.ack_quorum,
                        m.last_entry_id,
                        m.length,
                        m.current_ensemble().join(",")
                    );
                } else {
                    println!("{id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LedgersCommand::Info { ledger } => {
            let client = cluster.client().await?;
            let m = client.metadata(ledger).await?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            Ok(ExitCode::SUCCESS)
        }
        LedgersCommand::Recover { ledger, password } => {
            let client = cluster.client().await?;
            let reader = client.open(ledger, password.as_bytes(), true).await?;
            let m = reader.metadata();
            println!(
                "ledger {ledger} closed at entry {} ({} bytes)",
                m.last_entry_id, m.length
            );
            Ok(ExitCode::SUCCESS)
        }
        LedgersCommand::Delete { ledger } => {
            cluster.client().await?.delete(ledger).await?;
            eprintln!(
                "deleted ledger {ledger}; its bookies reclaim the space at their next garbage collection"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn custom(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--custom {p:?}: expected KEY=VALUE"),
        })
        .collect()
}

async fn metaformat(cluster: &Cluster, yes: bool, force: bool) -> Result<ExitCode> {
    let layout = cluster.layout()?;
    let coord = cluster.connect().await?;
    let client = coord.client();
    let survey = admin::survey(&client, &layout).await?;
    if survey.ledgers > 0 && !force {
        bail!(
            "{} holds {} ledgers: formatting would orphan them. Use --force to delete their metadata (every bookie \
             must then be formatted again)",
            layout.root(),
            survey.ledgers
        );
    }
    if survey.exists && !yes {
        eprintln!(
            "{} exists (instance id {}, {} ledgers, {} cookies). Formatting gives the cluster a new instance id: every \
             bookie must be formatted again.",
            layout.root(),
            survey.instance_id.as_deref().unwrap_or("none"),
            survey.ledgers,
            survey.cookies.len()
        );
        if !confirm("Format it?")? {
            eprintln!("nothing changed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let id = admin::metaformat(&client, &layout, force).await?;
    println!("formatted {} (instance id {id})", layout.root());
    Ok(ExitCode::SUCCESS)
}

/// Asks on stderr, reads a line from stdin; anything but y/yes is no (so does a closed stdin).
fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

async fn write(cluster: &Cluster, q: QuorumArgs) -> Result<ExitCode> {
    let writer = q.create(&cluster.client().await?).await?;
    let started = Instant::now();
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1024);
    // stdin is blocking: read it on its own thread.
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if lines_tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = lines_tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let mut pending = std::collections::VecDeque::new();
    let mut entries = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    while let Some(line) = lines.recv().await {
        let line = line.context("reading standard input")?;
        match writer.append(line).await {
            Ok(p) => pending.push_back(p),
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
        // Keep the acknowledgements flowing without waiting on each one.
        while pending.len() > 10_000 {
            if let Some(p) = pending.pop_front() {
                if let Err(e) = p.wait().await {
                    failure = Some(e.into());
                    break;
                }
                entries += 1;
            }
        }
        if failure.is_some() {
            break;
        }
    }
    for p in pending {
        match p.wait().await {
            Ok(_) => entries += 1,
            Err(e) => {
                failure.get_or_insert(e.into());
            }
        }
    }
    let id = writer.id();
    if let Some(e) = failure {
        return Err(e.context(format!(
            "ledger {id}: {entries} entries acknowledged before the failure"
        )));
    }
    let metadata = writer.close().await?;
    eprintln!(
        "ledger {id}: {entries} entries, {} bytes, closed at entry {} in {:.2} s",
        metadata.length,
        metadata.last_entry_id,
        started.elapsed().as_secs_f64()
    );
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

async fn bookie(args: BookieArgs) -> Result<ExitCode> {
    let cluster = &args.cluster;
    match args.command {
        BookieCommand::Format {
            config,
            data_root,
            listen,
            force,
        } => format(cluster, config, data_root, listen, force).await,
        BookieCommand::List => {
            let coord = cluster.connect().await?;
            let (writable, readonly) = admin::list_bookies(&coord.client(), &cluster.layout()?).await?;
            for b in &writable {
                println!("{b}\twritable");
            }
            for b in &readonly {
                println!("{b}\treadonly");
            }
            if writable.is_empty() && readonly.is_empty() {
                eprintln!("no bookie is registered under {}/available", cluster.root);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn format(
    cluster: &Cluster,
    config: Option<PathBuf>,
    data_root: Option<String>,
    listen: Option<String>,
    force: bool,
) -> Result<ExitCode> {
    let source = match config {
        Some(path) => ConfigSource::explicit(path),
        None => ConfigSource::default_for("bookie"),
    };
    let mut overrides = Vec::new();
    if let Some(root) = &data_root {
        overrides.push(Override::from_flag("--data-root", "server.data_root", root));
    }
    if let Some(listen) = &listen {
        overrides.push(Override::from_flag("--listen", "server.listen", listen));
    }
    let config: logtank_bookie::BookieConfig = runtime_config::load_daemon_config(&source, &overrides)?;
    let bound: std::net::SocketAddr = config
        .server
        .listen
        .parse()
        .with_context(|| format!("server.listen = {:?} is not an address", config.server.listen))?;
    if bound.port() == 0 && config.bookie.advertise.is_none() {
        bail!("server.listen has port 0: a bookie's id is its address, so format needs the port it will listen on");
    }
    let identity = logtank_bookie::setup::Identity {
        bookie_id: logtank_coord::advertised(config.bookie.advertise.as_deref(), bound),
        journal_dir: config.journal_dir(),
        ledgers_dir: config.ledgers_dir(),
    };
    // The bookie's own [coord] and root, unless given on the command line.
    let cluster = Cluster {
        coord: if cluster.coord == DEFAULT_SERVERS {
            config.coord.servers.clone()
        } else {
            cluster.coord.clone()
        },
        root: if cluster.root == DEFAULT_ROOT {
            config.bookie.ledgers_root.clone()
        } else {
            cluster.root.clone()
        },
    };
    let coord = cluster.connect().await?;
    let done = logtank_bookie::setup::format(&coord.client(), &cluster.layout()?, &identity, force).await?;
    for path in &done.removed {
        eprintln!("removed {}", path.display());
    }
    println!(
        "formatted bookie {} (cluster {}): {} and {}",
        done.cookie.bookie_id, done.cookie.instance_id, done.cookie.journal_dir, done.cookie.ledgers_dir
    );
    Ok(ExitCode::SUCCESS)
}
