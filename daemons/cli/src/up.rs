//! `logtank up`: the whole suite on this machine, in the foreground, on loopback, one data directory.
//!
//! It starts every daemon binary that exists (coordd, then the writer, then the indexes reader), waits until
//! each answers `GET /ping` on its admin port, prints where every endpoint is, and on Ctrl-C (or SIGTERM) stops
//! them in reverse order with SIGTERM (SIGKILL after `--stop-timeout-s`). If a daemon dies on its own, the rest
//! are stopped and `up` exits non-zero. Each daemon's log lines are shown prefixed with its name.
//!
//! The host it makes is a master with complete data: it creates the marker files `<data>/master` and
//! `<data>/storage/safe_to_read` (DESIGN §2), so the indexes reader serves reads and runs the pipeline at
//! once. The writer and the indexes reader point at the coordd it started (`coord.servers`); without a
//! coordd binary they run without coordination.

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
}

/// The coordd endpoint of the suite, the first daemon started.
const COORDD: &str = "coordd";

/// The suite in start order, with the ports of DESIGN §2.
pub fn suite(host: IpAddr, offset: u16) -> Vec<DaemonSpec> {
    let p = |port: u16| port.saturating_add(offset);
    vec![
        DaemonSpec {
            name: COORDD,
            binary: "logtank-coordd",
            endpoints: vec![("ZooKeeper protocol", p(2181))],
            admin_port: p(9152),
            extra_args: vec![],
            uses_coord: false,
        },
        DaemonSpec {
            name: "writer",
            binary: "logtank-writer",
            endpoints: vec![("storage writer (Thrift)", p(15000))],
            admin_port: p(9150),
            extra_args: vec![],
            uses_coord: true,
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
        },
    ]
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
    let mut running: Vec<Running> = Vec::new();
    let mut coord_servers = None;
    for mut spec in suite(args.host, args.port_offset) {
        let Some(binary) = locate(&args, spec.binary) else {
            missing.push(spec.binary);
            continue;
        };
        if let (true, Some(servers)) = (spec.uses_coord, &coord_servers) {
            spec.extra_args.push("--set".into());
            spec.extra_args.push(format!("coord.servers={servers}"));
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
                stop_all(&mut running, Duration::from_secs(args.stop_timeout_s));
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
    for r in &running {
        for (what, port) in &r.spec.endpoints {
            println!("  {:<8} {:<26} {}:{}", r.spec.name, what, args.host, port);
        }
        println!(
            "  {:<8} {:<26} http://{}:{}/status",
            r.spec.name, "admin (ping/metrics/status)", args.host, r.spec.admin_port
        );
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
    println!("logtank up: stopping");
    let clean = stop_all(&mut running, Duration::from_secs(args.stop_timeout_s));
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
    let mut command = Command::new(binary);
    command
        .arg("--data-root")
        .arg(data_dir)
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
        if ping(admin) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!("it exited during start-up ({status})");
        }
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "no answer on http://{admin}/ping within {} s",
                READY_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
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
pub fn ping(admin: SocketAddr) -> bool {
    matches!(
        crate::status::http_get(&admin.to_string(), "/ping"),
        Ok((200, body)) if body.trim_end() == "pong"
    )
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
