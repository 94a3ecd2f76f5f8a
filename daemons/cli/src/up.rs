//! `logtank up`: the whole suite on this machine, in the foreground, on loopback, one data directory.
//!
//! It starts every daemon binary that exists (coordd, then three bookies, then the writer, then the indexes
//! reader), each once the one before is ready (its admin `/status` says `running`: it sent systemd READY), prints where every endpoint is, and on Ctrl-C (or SIGTERM) stops
//! them in reverse order with SIGTERM (SIGKILL after `--stop-timeout-s`). If a daemon dies on its own, the rest
//! are stopped and `up` exits non-zero. Each daemon's log lines are shown prefixed with its name.
//!
//! The host it makes is a master with complete data: it creates the marker files `<data>/master` and
//! `<data>/storage/safe_to_read` (DESIGN §2), so the indexes reader serves reads and runs the pipeline at
//! once. The writer and the indexes reader point at the coordd it started (`coord.servers`); without a
//! coordd binary they run without coordination. The bookies (3181–3183, admin 9161–9163, data in
//! `<data>/bookie-N`) need coordination: the first time, `up` formats the ledgers root `/ledgers` and each
//! bookie (its cookie), as `logtank ledgers metaformat` and `logtank bookie format` would. With
//! `--replicate` the writer runs in bookies mode (`replication.mode = "bookies"`, the defaults E=3 Qw=3 Qa=2):
//! every acknowledged batch is on the three bookies too (`docs/replication.md`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a daemon may take to answer its first `/ping` (journal recovery included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Data directory shared by the daemons (the equivalent of /data).
    #[arg(long, default_value = "./logtank-data")]
    pub data_dir: PathBuf,
    /// Address every daemon listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Added to every default port (e.g. 1 puts the writer on 15001), to run two suites side by side.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Where the daemon binaries are (default: beside this executable, then /usr/sbin, then PATH).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Seconds each daemon gets to stop cleanly before it is killed.
    #[arg(long, default_value_t = 30)]
    pub stop_timeout_s: u64,
    /// The writer replicates its log to the three bookies (`replication.mode = "bookies"`).
    #[arg(long)]
    pub replicate: bool,
}

/// One daemon of the suite and the ports it serves.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    pub name: &'static str,
    pub binary: &'static str,
    /// The service endpoints, as (what, port), the first one passed as `--listen`.
    pub endpoints: Vec<(&'static str, u16)>,
    pub admin_port: u16,
    pub extra_args: Vec<String>,
    /// Whether it is pointed at the suite's coordd (`--set coord.servers=…`) when one runs.
    pub uses_coord: bool,
    /// A data directory of its own under the suite's (a bookie's), instead of the suite's itself.
    pub data_subdir: Option<String>,
    /// A bookie: it needs coordination, and a cookie before its first start.
    pub bookie: bool,
}

/// Bookies `up` runs: instance N on 3180+N, admin 9160+N.
pub const BOOKIES: u16 = 3;

/// The coordd endpoint of the suite, the first daemon started.
const COORDD: &str = "coordd";

/// The suite in start order, with the ports of DESIGN §2.
pub fn suite(host: IpAddr, offset: u16) -> Vec<DaemonSpec> {
    let p = |port: u16| port.saturating_add(offset);
    let mut specs = vec![DaemonSpec {
        name: COORDD,
        binary: "logtank-coordd",
        endpoints: vec![("ZooKeeper protocol", p(2181))],
        admin_port: p(9152),
        extra_args: vec![],
        uses_coord: false,
        data_subdir: None,
        bookie: false,
    }];
    for n in 1..=BOOKIES {
        specs.push(DaemonSpec {
            name: ["bookie-1", "bookie-2", "bookie-3"][usize::from(n - 1)],
            binary: "logtank-bookie",
            endpoints: vec![("bookie protocol", p(3180 + n))],
            admin_port: p(9160 + n),
            extra_args: vec!["--instance".into(), n.to_string()],
            uses_coord: true,
            data_subdir: Some(format!("bookie-{n}")),
            bookie: true,
        });
    }
    specs.extend([
        DaemonSpec {
            name: "writer",
            binary: "logtank-writer",
            endpoints: vec![("storage writer (Thrift)", p(15000))],
            admin_port: p(9150),
            extra_args: vec![],
            uses_coord: true,
            data_subdir: None,
            bookie: false,
        },
        DaemonSpec {
            name: "indexes",
            binary: "logtank-indexes",
            endpoints: vec![
                ("recovery reader (Thrift)", p(15100)),
                ("log manager (Thrift)", p(16000)),
            ],
            admin_port: p(9151),
            extra_args: vec![
                "--manager-listen".into(),
                SocketAddr::new(host, p(16000)).to_string(),
            ],
            uses_coord: true,
            data_subdir: None,
            bookie: false,
        },
    ]);
    specs
}

/// Makes `data_dir` the data of an active master (DESIGN §2 markers), as `touch /data/master` does.
fn create_markers(data_dir: &Path) -> Result<()> {
    let storage = data_dir.join("storage");
    std::fs::create_dir_all(&storage).with_context(|| format!("creating {}", storage.display()))?;
    for marker in [data_dir.join("master"), storage.join("safe_to_read")] {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&marker)
            .with_context(|| format!("creating the marker {}", marker.display()))?;
    }
    Ok(())
}

struct Running {
    spec: DaemonSpec,
    child: Child,
}

pub fn run(args: UpArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    create_markers(&data_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }

    let mut missing = Vec::new();
    // Stopped when `up` returns, whatever the way (an error, a panic on a closed stdout included).
    let mut started = Started {
        running: Vec::new(),
        timeout: Duration::from_secs(args.stop_timeout_s),
    };
    let running = &mut started.running;
    let mut coord_servers = None;
    for mut spec in suite(args.host, args.port_offset) {
        let Some(binary) = locate(&args, spec.binary) else {
            if !missing.contains(&spec.binary) {
                missing.push(spec.binary);
            }
            continue;
        };
        if spec.bookie {
            let Some(servers) = &coord_servers else {
                eprintln!(
                    "logtank up: {} needs coordination, and no coordd runs; not started",
                    spec.name
                );
                continue;
            };
            if let Err(e) = format_bookie(&spec, *servers, &data_dir, args.host) {
                eprintln!("logtank up: {} could not be formatted: {e:#}", spec.name);
                stop_all(running, Duration::from_secs(args.stop_timeout_s));
                return Ok(ExitCode::FAILURE);
            }
        }
        if let (true, Some(servers)) = (spec.uses_coord, &coord_servers) {
            spec.extra_args.push("--set".into());
            spec.extra_args.push(format!("coord.servers={servers}"));
        }
        if spec.binary == "logtank-writer" && args.replicate {
            let bookies = running.iter().filter(|r| r.spec.bookie).count();
            if bookies < usize::from(BOOKIES) {
                eprintln!(
                    "logtank up: --replicate needs coordd and {BOOKIES} bookies, and {bookies} run \
                     (are logtank-coordd and logtank-bookie built?)"
                );
                stop_all(running, Duration::from_secs(args.stop_timeout_s));
                return Ok(ExitCode::FAILURE);
            }
            spec.extra_args.push("--set".into());
            spec.extra_args.push("replication.mode=bookies".into());
        }
        match start(&spec, &binary, &args, &data_dir, &stop) {
            Ok(child) => {
                if spec.name == COORDD {
                    coord_servers = Some(SocketAddr::new(args.host, spec.endpoints[0].1));
                }
                running.push(Running { spec, child })
            }
            Err(e) => {
                eprintln!("logtank up: {} did not start: {e:#}", spec.name);
                stop_all(running, Duration::from_secs(args.stop_timeout_s));
                return Ok(ExitCode::FAILURE);
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }

    println!(
        "logtank up: data in {} (this host is the master: master and storage/safe_to_read exist)",
        data_dir.display()
    );
    for r in running.iter() {
        for (what, port) in &r.spec.endpoints {
            println!("  {:<8} {:<26} {}:{}", r.spec.name, what, args.host, port);
        }
        println!(
            "  {:<8} {:<26} http://{}:{}/status",
            r.spec.name, "admin (ping/metrics/status)", args.host, r.spec.admin_port
        );
    }
    if args.replicate {
        println!("  the writer replicates every batch to the {BOOKIES} bookies (ensemble 3, write quorum 3, ack quorum 2)");
    }
    if !missing.is_empty() {
        println!("  not built yet, so not started: {}", missing.join(", "));
    }
    println!("Press Ctrl-C to stop.");
    std::io::stdout().flush()?;

    let mut failed = false;
    while !stop.load(Ordering::Relaxed) {
        if let Some(r) = running
            .iter_mut()
            .find_map(|r| r.child.try_wait().ok().flatten().map(|s| (r.spec.name, s)))
        {
            eprintln!(
                "logtank up: {} exited on its own ({}); stopping the rest",
                r.0, r.1
            );
            failed = true;
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    // Not println!: with stdout gone (a closed pipe) it would panic before the daemons are stopped.
    let _ = writeln!(std::io::stdout(), "logtank up: stopping");
    let clean = stop_all(running, Duration::from_secs(args.stop_timeout_s));
    Ok(if clean && !failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn locate(args: &UpArgs, binary: &str) -> Option<PathBuf> {
    match &args.bin_dir {
        Some(dir) => Some(dir.join(binary)).filter(|p| p.is_file()),
        None => crate::find_binary(binary),
    }
}

/// Starts one daemon, relays its output with a name prefix, and waits until its admin port answers `/ping`.
fn start(
    spec: &DaemonSpec,
    binary: &Path,
    args: &UpArgs,
    data_dir: &Path,
    stop: &AtomicBool,
) -> Result<Child> {
    let listen = SocketAddr::new(args.host, spec.endpoints[0].1);
    let admin = SocketAddr::new(args.host, spec.admin_port);
    let daemon_data = match &spec.data_subdir {
        Some(sub) => data_dir.join(sub),
        None => data_dir.to_path_buf(),
    };
    let mut command = Command::new(binary);
    command
        .arg("--data-root")
        .arg(&daemon_data)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin-listen")
        .arg(admin.to_string())
        // A config file the operator did not write must not leak in: built-in defaults unless they pass one.
        .arg("--config")
        .arg(data_dir.join(format!("{}.toml", spec.name)))
        .args(&spec.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let config = data_dir.join(format!("{}.toml", spec.name));
    if !config.exists() {
        std::fs::write(
            &config,
            format!(
                "# {} settings for `logtank up`; see /etc/logtank/ for every key.\n",
                spec.name
            ),
        )?;
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("running {}", binary.display()))?;
    relay(spec.name, child.stdout.take());
    relay(spec.name, child.stderr.take());
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready(admin) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!("it exited during start-up ({status})");
        }
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "not ready (http://{admin}/status did not say running) within {} s",
                READY_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The first time: formats the ledgers root (when it has no instance id) and the bookie (when its journal
/// directory has no cookie), in process, against the suite's coordd.
fn format_bookie(spec: &DaemonSpec, coord: SocketAddr, data_dir: &Path, host: IpAddr) -> Result<()> {
    let data = data_dir.join(spec.data_subdir.as_deref().unwrap_or_default());
    let identity = logtank_bookie::setup::Identity {
        bookie_id: SocketAddr::new(host, spec.endpoints[0].1).to_string(),
        journal_dir: data.join("journal"),
        ledgers_dir: data.join("ledgers"),
    };
    if logtank_ledger::cookie::read_dir_cookie(&identity.journal_dir)?.is_some() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = logtank_coord::CoordConfig::with_servers(coord.to_string());
        let coord = logtank_coord::Coord::connect(&config).await?;
        let layout = logtank_ledger::Layout::new(logtank_ledger::DEFAULT_ROOT)?;
        let client = coord.client();
        if logtank_ledger::admin::instance_id(&client, &layout)
            .await?
            .is_none()
        {
            let id = logtank_ledger::admin::metaformat(&client, &layout, false).await?;
            println!("logtank up: formatted {} (instance id {id})", layout.root());
        }
        let done = logtank_bookie::setup::format(&client, &layout, &identity, false).await?;
        println!("logtank up: formatted bookie {}", done.cookie.bookie_id);
        anyhow::Ok(())
    })
}

fn relay(name: &'static str, stream: Option<impl Read + Send + 'static>) {
    let Some(stream) = stream else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            eprintln!("[{name}] {line}");
        }
    });
}

/// True when `GET /ping` answers `pong`.
/// Ready as systemd means it: the daemon's `/status` says `running`, i.e. its setup is done (a journal
/// recovered, a bookie registered) and it sent READY=1. `/ping` answers earlier, during setup.
fn ready(admin: SocketAddr) -> bool {
    matches!(
        crate::status::fetch_status(&admin.to_string()),
        Ok(doc) if doc.get("state").and_then(serde_json::Value::as_str) == Some("running")
    )
}

pub fn ping(admin: SocketAddr) -> bool {
    matches!(
        crate::status::http_get(&admin.to_string(), "/ping"),
        Ok((200, body)) if body.trim_end() == "pong"
    )
}

/// The daemons `up` started, stopped on drop.
struct Started {
    running: Vec<Running>,
    timeout: Duration,
}

impl Drop for Started {
    fn drop(&mut self) {
        stop_all(&mut self.running, self.timeout);
    }
}

/// Stops daemons in reverse start order: SIGTERM, then SIGKILL after `timeout`. True if all exited 0.
fn stop_all(running: &mut Vec<Running>, timeout: Duration) -> bool {
    let mut clean = true;
    while let Some(mut r) = running.pop() {
        let pid = Pid::from_raw(r.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match r.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL / 4),
                _ => {
                    eprintln!(
                        "logtank up: {} did not stop within {} s; killing it",
                        r.spec.name,
                        timeout.as_secs()
                    );
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    break None;
                }
            }
        };
        match status {
            Some(s) if s.success() => println!("logtank up: {} stopped", r.spec.name),
            Some(s) => {
                eprintln!("logtank up: {} stopped with {s}", r.spec.name);
                clean = false;
            }
            None => clean = false,
        }
    }
    clean
}
