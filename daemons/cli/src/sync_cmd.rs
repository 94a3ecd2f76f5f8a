//! `logtank sync`: one run of a slave's replication from its master. systemd's `logtank-sync.timer` runs it
//! through `logtank-sync.service` on hosts without `/data/master`; an operator may run it by hand as the
//! owner of the data (`sudo -u logtank logtank sync`).
//!
//! IndexTank's `synchronize.sh` flow, made safe (docs/replication.md):
//!
//! 1. On a master (`<data>/master` exists) it does nothing and exits 0.
//! 2. A complete copy left in `storage/migrated` by an earlier run (interrupted before or during its
//!    adoption) is adopted first: [`Storage::adopt_snapshot`] is idempotent. Own raw segments an adoption
//!    moved to `raw/history` are removed after `raw_history_retention_hours` (no cleaner runs on a slave).
//! 3. `storage/migrating` is emptied; the master's `storage/dealer*.info` are copied into it first (so the
//!    segments copied after them can only cover more than the info says, never less). If the master dealt
//!    nothing new since the snapshot this host adopted last and this host is already safe to read, the run
//!    stops there.
//! 4. The per-index segment files are copied in three passes, unsorted, then sorted, then optimized, each
//!    with `--link-dest` against the current local copy (unchanged files become hard links). The order is
//!    what makes a copy taken while the master sorts and optimizes complete: a file deleted on the master
//!    was replaced by one of a later pass before it was deleted. Nothing else is copied (no raw log, no
//!    temporary `.tmp-*`/`.run-*` files, no `last_read`).
//! 5. Any failure of rsync (a file vanished under it, exit 24, included) leaves the partial copy in
//!    `storage/migrating`, says why, and exits non-zero; the next run starts over. A partial copy is never
//!    adopted.
//! 6. Every copied file and directory is fsynced, `migrating` is renamed to `migrated` (and the rename made
//!    durable), and the snapshot is adopted: the slave's own raw log is cut where the master's coverage ends
//!    (minus `overlap_ms`) and `storage/safe_to_read` created if coverage is proven.
//!
//! The master is `sync.master` (a host, `host:port`), or the host of coordination's
//! `/logtank/services/recovery` (the master's reader registers it) when that is empty. The transport is
//! an rsync daemon module (`rsync://HOST:PORT/MODULE/`, `logtank-rsyncd.service` on the master) or rsync
//! over ssh (`[USER@]HOST:/data/storage/`).
//!
//! SIGTERM or SIGINT stops a copy (rsync is killed, nothing is adopted) but never an adoption in progress:
//! that finishes first, so a promotion that stops this unit does not leave a half-swapped storage.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use logtank_coord::{Coord, CoordConfig};
use logtank_runtime::config::{self as runtime_config, ConfigError, ConfigSource, LogConfig, Override};
use logtank_storage::{Adoption, Layout, LockRole, Storage, StorageError, StorageOptions};
use serde::{Deserialize, Serialize};

/// Where the config is when `--config` is not given (it may be absent: built-in defaults then).
pub const DEFAULT_CONFIG: &str = "/etc/logtank/sync.toml";
/// The exit status of a config error, as the daemons use (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// What this host adopted last: the master's dealer infos, for the "nothing new" check. In `storage/`,
/// beside the adopted ones; not named `dealer*` so it never travels with a snapshot.
pub const LAST_ADOPTED: &str = "sync.adopted.info";
/// The dealer infos a snapshot must have (the storage layer's names).
const NEXT_SEQ_INFO: &str = "dealer.next_seq.info";
const DEALT_UNTIL_INFO: &str = "dealer.dealt_until_ms.info";
const SEQ_OFFSET_INFO: &str = "dealer.seq_offset.info";
/// How often a running rsync is checked for a stop signal.
const POLL: Duration = Duration::from_millis(100);
/// The most of rsync's stderr a failure message quotes.
const RSYNC_STDERR_MAX: usize = 4000;

#[derive(Args, Debug, Clone)]
pub struct SyncArgs {
    /// The config file (default /etc/logtank/sync.toml; if that is missing, the built-in defaults).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set sync.master=10.0.0.5 (repeatable; applied after the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Check the config, print the effective one as TOML, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Copy and adopt even if the master dealt nothing since the last adopted snapshot.
    #[arg(long)]
    pub force: bool,
}

/// `/etc/logtank/sync.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub sync: SyncSection,
    pub log: LogConfig,
    /// Where to find the master when `sync.master` is empty.
    pub coord: CoordConfig,
}

/// How the master's storage is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The master's rsync daemon module (`logtank-rsyncd.service`): `rsync://HOST:PORT/MODULE/`.
    #[default]
    RsyncDaemon,
    /// rsync over ssh: `[USER@]HOST:SSH_STORAGE/`; this host's `logtank` user needs a key the master accepts.
    Ssh,
}

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSection {
    /// This host's data root (its `master` marker, `storage/`).
    pub data_root: PathBuf,
    /// The master: `host`, `host:port` (port of its rsync daemon, or of ssh), `[v6]`, `[v6]:port`. Empty:
    /// the host registered at `/logtank/services/recovery` (`[coord] servers`).
    pub master: String,
    pub transport: Transport,
    /// The master's rsync daemon port, unless `master` names one.
    pub rsync_port: u16,
    /// The module exporting the master's `storage/` directory.
    pub rsync_module: String,
    /// ssh: the user to log in as on the master (empty: ssh's default, i.e. this user or ~/.ssh/config).
    pub ssh_user: String,
    /// ssh: extra options, one argument each, e.g. ["-i", "/var/lib/logtank/.ssh/id_ed25519"].
    pub ssh_options: Vec<String>,
    /// ssh: the master's storage directory.
    pub ssh_storage: PathBuf,
    /// Clock skew between the writers plus a margin: the own raw log is kept from this long before the
    /// newest record the master dealt (replaying the overlap is harmless).
    pub overlap_ms: u64,
    /// rsync's I/O timeout (and connect timeout): a transfer that makes no progress this long fails.
    pub timeout_s: u64,
    /// rsync --bwlimit in KiB/s; 0: no limit.
    pub bwlimit_kib: u64,
    /// The own raw segments an adoption moved to `raw/history` are removed this long after their last
    /// write (on a master, logtank-indexes' cleaner does it with `pipeline.raw_history_retention_hours`);
    /// 0: never.
    pub raw_history_retention_hours: u64,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            data_root: PathBuf::from("/data"),
            master: String::new(),
            transport: Transport::RsyncDaemon,
            rsync_port: 873,
            rsync_module: "logtank".into(),
            ssh_user: String::new(),
            ssh_options: Vec::new(),
            ssh_storage: PathBuf::from("/data/storage"),
            overlap_ms: logtank_storage::DEFAULT_ADOPTION_OVERLAP.as_millis() as u64,
            timeout_s: 300,
            bwlimit_kib: 0,
            raw_history_retention_hours: 168,
        }
    }
}

impl SyncConfig {
    /// What serde cannot check key by key: `(key, message)`.
    fn validate(&self) -> Result<(), (String, String)> {
        let s = &self.sync;
        let bad = |key: &str, message: String| Err((format!("sync.{key}"), message));
        if !s.data_root.is_absolute() {
            return bad("data_root", "must be an absolute path".into());
        }
        if !s.master.trim().is_empty() {
            if let Err(e) = parse_master(&s.master) {
                return bad("master", e);
            }
        } else if let Err(e) = self.coord.validate() {
            // Checked only when it is used.
            return Err(("coord".into(), e));
        }
        if s.rsync_port == 0 {
            return bad("rsync_port", "must be a port (1-65535)".into());
        }
        if s.rsync_module.is_empty()
            || !s
                .rsync_module
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return bad(
                "rsync_module",
                format!("{:?} is not a module name ([A-Za-z0-9._-]+)", s.rsync_module),
            );
        }
        if !s.ssh_user.is_empty()
            && !s
                .ssh_user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return bad("ssh_user", format!("{:?} is not a user name", s.ssh_user));
        }
        if let Some(o) = s.ssh_options.iter().find(|o| o.contains(['\'', '"', '\n'])) {
            return bad(
                "ssh_options",
                format!("{o:?}: quotes and newlines are not supported"),
            );
        }
        if !s.ssh_storage.is_absolute() {
            return bad("ssh_storage", "must be an absolute path".into());
        }
        if s.timeout_s == 0 {
            return bad("timeout_s", "must be positive".into());
        }
        Ok(())
    }
}

/// Loads the config like the daemons do: built-in defaults, the file (unknown keys and wrong types
/// reported with file:line), `--set` overrides, then the checks that need more than one key.
pub fn load_config(source: &ConfigSource, overrides: &[Override]) -> Result<SyncConfig, ConfigError> {
    let config: SyncConfig = runtime_config::load(source, overrides)?;
    config.validate().map_err(|(key, message)| {
        let mut origin = source.path.display().to_string();
        if !overrides.is_empty() {
            origin.push_str(" + command-line overrides");
        }
        ConfigError::Invalid { origin, key, message }
    })?;
    Ok(config)
}

/// Splits `master` into a host (IPv6 in brackets) and an optional port.
pub fn parse_master(text: &str) -> Result<(String, Option<u16>), String> {
    let text = text.trim();
    let bad = |why: &str| {
        Err(format!(
            "{text:?}: {why} (expected host, host:port, [v6] or [v6]:port)"
        ))
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad("no closing ]");
        };
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return bad("not an IPv6 address");
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(port) => Some(port),
                None => return bad("junk after ]"),
            },
        };
        (format!("[{v6}]"), port)
    } else if text.matches(':').count() > 1 {
        if !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return bad("not an IPv6 address");
        }
        (format!("[{text}]"), None)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (text.to_string(), None),
        }
    };
    if !host.starts_with('[')
        && (host.is_empty()
            || host.starts_with(['-', '.'])
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        return bad("not a host name or address");
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => return bad("not a port"),
        },
    };
    Ok((host, port))
}

/// Where the copy comes from: the rsync source prefix (ending in `/`) and, for ssh, the remote shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub url: String,
    pub remote_shell: Option<String>,
}

impl Source {
    pub fn new(section: &SyncSection, host: &str, port: Option<u16>) -> Source {
        match section.transport {
            Transport::RsyncDaemon => Source {
                url: format!(
                    "rsync://{host}:{}/{}/",
                    port.unwrap_or(section.rsync_port),
                    section.rsync_module
                ),
                remote_shell: None,
            },
            Transport::Ssh => {
                let mut shell = String::from("ssh");
                for option in &section.ssh_options {
                    shell.push(' ');
                    shell.push_str(&quote(option));
                }
                // After the operator's options: ssh takes the first value of an option it is given.
                if let Some(port) = port {
                    let _ = write!(shell, " -p {port}");
                }
                let _ = write!(shell, " -o BatchMode=yes -o ConnectTimeout={}", section.timeout_s);
                let user = if section.ssh_user.is_empty() {
                    String::new()
                } else {
                    format!("{}@", section.ssh_user)
                };
                let storage = section.ssh_storage.display().to_string();
                Source {
                    url: format!("{user}{host}:{}/", storage.trim_end_matches('/')),
                    remote_shell: Some(shell),
                }
            }
        }
    }
}

/// Quotes one ssh option for rsync's `-e`, which splits on spaces and honours quotes.
fn quote(option: &str) -> String {
    if option.is_empty() || option.contains(char::is_whitespace) {
        format!("'{option}'")
    } else {
        option.to_string()
    }
}

/// One of the copy's passes: what it copies, as rsync filter rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    DealerInfo,
    Unsorted,
    Sorted,
    Optimized,
}

impl Pass {
    pub const SEGMENTS: [Pass; 3] = [Pass::Unsorted, Pass::Sorted, Pass::Optimized];

    pub fn name(self) -> &'static str {
        match self {
            Pass::DealerInfo => "dealer info",
            Pass::Unsorted => "unsorted segments",
            Pass::Sorted => "sorted segments",
            Pass::Optimized => "optimized segments",
        }
    }

    /// rsync `--filter` rules (first match wins; everything not included is excluded).
    pub fn filters(self) -> Vec<String> {
        let (dir, kind) = match self {
            Pass::DealerInfo => return vec!["+ /dealer*.info".into(), "- *".into()],
            Pass::Unsorted => ("segments", "unsorted"),
            Pass::Sorted => ("segments", "sorted"),
            Pass::Optimized => ("optimized", "optimized"),
        };
        vec![
            // Temporary files (`.tmp-…`, a sort's `.run-…`) never travel.
            "- .*".into(),
            "+ /indexes/".into(),
            "+ /indexes/*/".into(),
            format!("+ /indexes/*/{dir}/"),
            format!("+ /indexes/*/{dir}/*.{kind}_*"),
            "- *".into(),
        ]
    }
}

/// rsync's arguments for one pass into `dest`.
pub fn rsync_args(
    section: &SyncSection,
    source: &Source,
    pass: Pass,
    link_dest: Option<&Path>,
    dest: &Path,
) -> Vec<OsString> {
    // -a, but never a symlink, device or special file from the master: a segment that is a link to
    // /etc/shadow would otherwise be copied as a link and served as index history.
    let mut args: Vec<OsString> = vec![
        "-a".into(),
        "--no-links".into(),
        "--no-devices".into(),
        "--no-specials".into(),
        format!("--timeout={}", section.timeout_s).into(),
    ];
    match &source.remote_shell {
        None => args.push(format!("--contimeout={}", section.timeout_s).into()),
        Some(shell) => {
            args.push("-e".into());
            args.push(shell.into());
        }
    }
    if section.bwlimit_kib > 0 {
        args.push(format!("--bwlimit={}", section.bwlimit_kib).into());
    }
    if let Some(link_dest) = link_dest {
        let mut arg = OsString::from("--link-dest=");
        arg.push(link_dest.as_os_str());
        arg.push("/");
        args.push(arg);
    }
    for rule in pass.filters() {
        args.push(format!("--filter={rule}").into());
    }
    args.push(source.url.clone().into());
    let mut dest = dest.as_os_str().to_owned();
    dest.push("/");
    args.push(dest);
    args
}

/// What rsync's exit status means (rsync(1), EXIT VALUES), with what to do where it helps.
pub fn rsync_exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error (is this rsync too old?)",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files or directories",
        5 => "error starting the client-server protocol (a wrong module name, or the master refused us: see its rsyncd.conf)",
        10 => "socket I/O error: the master cannot be reached (is logtank-rsyncd running there, is the port right?)",
        11 => "file I/O error",
        12 => "error in the rsync protocol data stream",
        20 => "interrupted by a signal",
        23 => "partial transfer due to an error",
        24 => "some files vanished on the master while they were copied (it was sorting, optimizing or cleaning)",
        30 => "timeout in data send/receive (sync.timeout_s)",
        35 => "timeout waiting for the master's rsync daemon (sync.timeout_s)",
        255 => "ssh failed (host key, authentication, or the master cannot be reached)",
        _ => "rsync failed",
    }
}

/// What one run did.
#[derive(Debug)]
pub enum Outcome {
    /// This host is the master.
    Master,
    /// The master has dealt nothing new since the snapshot this host adopted last.
    Unchanged {
        master: String,
        next_seq: u64,
    },
    /// The master has dealt nothing yet.
    NothingDealt {
        master: String,
    },
    Adopted(Box<Adopted>),
}

#[derive(Debug)]
pub struct Adopted {
    pub master: String,
    pub tally: Tally,
    pub master_next_seq: u64,
    pub master_dealt_until_ms: u64,
    pub adoption: Adoption,
}

/// Files of the copied snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
    /// Files shared (hard-linked) with the copy this host had: unchanged on the master.
    pub linked: u64,
    pub linked_bytes: u64,
}

pub fn run(args: SyncArgs) -> Result<ExitCode> {
    let source = match &args.config {
        Some(path) => ConfigSource::explicit(path),
        None => ConfigSource {
            path: DEFAULT_CONFIG.into(),
            is_default: true,
        },
    };
    let mut overrides = Vec::new();
    for set in &args.set {
        match Override::parse_set(set) {
            Ok(o) => overrides.push(o),
            Err(e) => {
                eprintln!("logtank sync: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        }
    }
    let config = match load_config(&source, &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("logtank sync: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    if args.check_config {
        print!("{}", runtime_config::to_toml_string(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    logtank_runtime::logging::init("sync", &config.log).context("setting up logging")?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    match sync_once(&config, args.force, &stop) {
        Ok(outcome) => {
            log::info!("{}", summary(&config, &outcome));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            log::error!("sync failed: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The one line a run logs.
pub fn summary(config: &SyncConfig, outcome: &Outcome) -> String {
    let root = config.sync.data_root.display();
    match outcome {
        Outcome::Master => format!("sync: this host is the master ({root}/master exists): nothing to do"),
        Outcome::Unchanged { master, next_seq } => format!(
            "sync: {master} has dealt nothing new since the snapshot adopted last (dealt to its sequence \
             {next_seq}) and this host is safe to read: nothing copied"
        ),
        Outcome::NothingDealt { master } => format!(
            "sync: {master} has dealt nothing yet (no {NEXT_SEQ_INFO} or {DEALT_UNTIL_INFO} in its storage): \
             nothing to adopt"
        ),
        Outcome::Adopted(a) => {
            let t = &a.tally;
            format!(
                "sync: adopted the snapshot of {} (dealt to its sequence {}, until {} ms): {} files, {} bytes \
                 ({} unchanged files hard-linked, {} copied, {} bytes); own raw log kept from sequence {} \
                 ({} older segments moved to history); safe_to_read: {}",
                a.master,
                a.master_next_seq,
                a.master_dealt_until_ms,
                t.files,
                t.bytes,
                t.linked,
                t.files - t.linked,
                t.bytes - t.linked_bytes,
                a.adoption.next_seq,
                a.adoption.pruned_segments,
                if a.adoption.safe_to_read {
                    "yes"
                } else {
                    "NO (this host's raw log does not reach back to where the snapshot ends yet)"
                }
            )
        }
    }
}

/// One run of the sync (see the module documentation).
pub fn sync_once(config: &SyncConfig, force: bool, stop: &AtomicBool) -> Result<Outcome> {
    let section = &config.sync;
    let layout = Layout::new(&section.data_root);
    if layout.is_master() {
        return Ok(Outcome::Master);
    }
    check_owner(&layout)?;
    let options = StorageOptions {
        raw_history_retention: Duration::from_secs(section.raw_history_retention_hours.saturating_mul(3600)),
        ..StorageOptions::default()
    };
    let storage = Storage::open(layout.clone(), options)
        .with_context(|| format!("opening the storage in {}", layout.storage().display()))?;
    let overlap = Duration::from_millis(section.overlap_ms);

    if layout.migrated().is_dir() {
        log::info!(
            "sync: {} holds a complete copy not adopted yet (an earlier run was interrupted): adopting it first",
            layout.migrated().display()
        );
        adopt(&storage, overlap, None)?;
    }

    if section.raw_history_retention_hours > 0 {
        let removed = storage
            .expire_raw_history()
            .with_context(|| format!("expiring {}", layout.raw_history().display()))?;
        if removed > 0 {
            log::info!(
                "sync: removed {removed} raw history segments older than {} hours from {}",
                section.raw_history_retention_hours,
                layout.raw_history().display()
            );
        }
    }

    let (host, port) = master_host(config, stop)?;
    let source = Source::new(section, &host, port);
    let master = source.url.clone();
    let staging = layout.migrating();
    remove_dir_all(&staging)?;
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;

    rsync(section, &source, Pass::DealerInfo, None, &staging, stop)?;
    let read = |name: &str| read_u64(&staging.join(name));
    let (Some(next_seq), Some(dealt_until_ms)) = (read(NEXT_SEQ_INFO)?, read(DEALT_UNTIL_INFO)?) else {
        remove_dir_all(&staging)?;
        return Ok(Outcome::NothingDealt { master });
    };
    let offset = read(SEQ_OFFSET_INFO)?.unwrap_or(0);
    let fingerprint = format!("next_seq={next_seq} seq_offset={offset} dealt_until_ms={dealt_until_ms}\n");
    let last_adopted = layout.storage().join(LAST_ADOPTED);
    if !force
        && layout.is_safe_to_read()
        && fs::read_to_string(&last_adopted).is_ok_and(|last| last == fingerprint)
    {
        remove_dir_all(&staging)?;
        return Ok(Outcome::Unchanged { master, next_seq });
    }

    for pass in Pass::SEGMENTS {
        rsync(section, &source, pass, Some(&layout.storage()), &staging, stop)?;
    }
    let mut tally = Tally::default();
    sync_tree(&staging, &mut tally).with_context(|| format!("fsyncing the copy in {}", staging.display()))?;
    if stop.load(Ordering::Relaxed) {
        bail!("stopped by a signal before the copy was adopted; the next run starts over");
    }
    if layout.is_master() {
        // Promoted while copying: a master never adopts.
        remove_dir_all(&staging)?;
        return Ok(Outcome::Master);
    }
    logtank_durable::rename_durably(&staging, &layout.migrated()).with_context(|| {
        format!(
            "renaming {} to {}",
            staging.display(),
            layout.migrated().display()
        )
    })?;
    let adoption = adopt(&storage, overlap, Some(&fingerprint))?
        .ok_or_else(|| anyhow!("{} vanished before its adoption", layout.migrated().display()))?;
    Ok(Outcome::Adopted(Box::new(Adopted {
        master,
        tally,
        master_next_seq: next_seq,
        master_dealt_until_ms: dealt_until_ms,
        adoption,
    })))
}

/// Adopts `storage/migrated`. A snapshot the storage layer finds incomplete is removed (the next copy
/// replaces it); `fingerprint` (the master's dealer infos) is recorded once adopted.
fn adopt(storage: &Storage, overlap: Duration, fingerprint: Option<&str>) -> Result<Option<Adoption>> {
    let layout = storage.layout();
    let migrated = layout.migrated();
    let last_adopted = layout.storage().join(LAST_ADOPTED);
    // The dealer's lock while adopting: logtank-indexes never deals beside a half-done adoption, and a
    // host whose logtank-indexes runs (a master, or one being promoted) adopts nothing: its dealer
    // finishes a complete copy itself at start.
    let _dealer = layout.lock(LockRole::Dealer).map_err(|e| match e {
        StorageError::Locked { .. } => anyhow!(
            "{e}; so this host deals its own raw log (it is the master, or being promoted) and the copy in {} \
             is not adopted by the sync",
            migrated.display()
        ),
        e => anyhow!(e).context("taking the dealer lock to adopt"),
    })?;
    // Forget what was adopted before: if this adoption stops half-way, the next run must not skip.
    remove_file(&last_adopted)?;
    match storage.adopt_snapshot(overlap) {
        Ok(adoption) => {
            if let (Some(fingerprint), Some(_)) = (fingerprint, &adoption) {
                fs::write(&last_adopted, fingerprint)
                    .with_context(|| format!("writing {}", last_adopted.display()))?;
            }
            Ok(adoption)
        }
        Err(StorageError::Invalid(why)) => {
            log::warn!("sync: {why}; removing it");
            remove_dir_all(&migrated)?;
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("adopting {}", migrated.display())),
    }
}

/// The master's host and the port to use, from the config or from coordination.
fn master_host(config: &SyncConfig, stop: &AtomicBool) -> Result<(String, Option<u16>)> {
    let master = config.sync.master.trim();
    if !master.is_empty() {
        return parse_master(master).map_err(|e| anyhow!("sync.master: {e}"));
    }
    let endpoint = recovery_endpoint(&config.coord, stop)?;
    let (host, _reader_port) =
        parse_master(&endpoint).map_err(|e| anyhow!("{} holds {e}", logtank_coord::paths::RECOVERY))?;
    log::info!(
        "sync: the master is {host} (its reader {endpoint} is registered at {} on {})",
        logtank_coord::paths::RECOVERY,
        config.coord.servers
    );
    Ok((host, None))
}

/// Reads `/logtank/services/recovery` (data `host:port` of the master's reader).
fn recovery_endpoint(coord: &CoordConfig, stop: &AtomicBool) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let deadline = coord.connect_timeout() + coord.session_timeout();
    let endpoint = runtime.block_on(async {
        let read = tokio::time::timeout(deadline, async {
            let session = Coord::connect(coord).await?;
            session.recovery_endpoint().await
        });
        // A stop signal (a promotion stops this unit) must not wait for coordination.
        let stopped = async {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::select! {
            endpoint = read => Some(endpoint),
            () = stopped => None,
        }
    });
    let where_ = format!(
        "{} on {} ([coord] servers)",
        logtank_coord::paths::RECOVERY,
        coord.servers
    );
    let Some(endpoint) = endpoint else {
        bail!("stopped by a signal while reading {where_}; nothing was adopted");
    };
    match endpoint {
        Err(_) => bail!(
            "no answer from coordination within {} s reading {where_}",
            deadline.as_secs()
        ),
        Ok(Err(e)) => Err(anyhow!("reading {where_}: {e}")),
        Ok(Ok(None)) => bail!(
            "no master is registered at {where_}, and sync.master is empty: is the master's logtank-indexes \
             running with [coord] servers pointing there? Or set sync.master"
        ),
        Ok(Ok(Some(endpoint))) => Ok(endpoint),
    }
}

/// Refuses to run as root on a storage owned by someone else: the copy would be root's, and the daemons
/// (user logtank) could not deal into it after a promotion.
fn check_owner(layout: &Layout) -> Result<()> {
    let storage = layout.storage();
    let Ok(meta) = fs::metadata(&storage) else {
        return Ok(());
    };
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 && meta.uid() != 0 {
        bail!(
            "running as root, but {} belongs to uid {}: the copy would belong to root and the daemons could \
             not use it. Run it as that user (sudo -u logtank logtank sync) or `systemctl start \
             logtank-sync.service`",
            storage.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// Runs rsync for one pass; a stop signal kills it.
fn rsync(
    section: &SyncSection,
    source: &Source,
    pass: Pass,
    link_dest: Option<&Path>,
    dest: &Path,
    stop: &AtomicBool,
) -> Result<()> {
    let args = rsync_args(section, source, pass, link_dest, dest);
    let started = Instant::now();
    let mut child = Command::new("rsync")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running rsync (is it installed? apt-get install rsync)")?;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.read_to_end(&mut text);
        }
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for rsync")? {
            break status;
        }
        if stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "stopped by a signal while copying the {} from {}; nothing was adopted, the next run starts over",
                pass.name(),
                source.url
            );
        }
        std::thread::sleep(POLL);
    };
    let text = reader.join().unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    if status.success() {
        log::debug!(
            "sync: copied the {} from {} in {:?}",
            pass.name(),
            source.url,
            started.elapsed()
        );
        if !text.is_empty() {
            log::warn!("sync: rsync said: {text}");
        }
        return Ok(());
    }
    let quoted = if text.len() > RSYNC_STDERR_MAX {
        let mut cut = text.len() - RSYNC_STDERR_MAX;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        &text[cut..]
    } else {
        text
    };
    let meaning = status.code().map_or("killed by a signal", rsync_exit_meaning);
    bail!(
        "copying the {} from {} failed ({status}: {meaning}); nothing was adopted, the next run starts over. \
         rsync said: {}",
        pass.name(),
        source.url,
        if quoted.is_empty() { "nothing" } else { quoted }
    )
}

/// fsyncs every file and directory under `dir` (rsync does not), counting the files.
/// fsyncs every file and directory of the copy, and refuses anything that is neither (rsync is told not to
/// copy symlinks, devices or specials; an rsync that did anyway must not get them adopted).
fn sync_tree(dir: &Path, tally: &mut Tally) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is not a regular file or directory ({:?}): refusing to adopt the copy",
                    path.display(),
                    meta.file_type()
                ),
            ));
        }
        if meta.is_dir() {
            sync_tree(&path, tally)?;
        } else if meta.is_file() {
            fs::File::open(&path)?.sync_all()?;
            tally.files += 1;
            tally.bytes += meta.len();
            if meta.nlink() > 1 {
                tally.linked += 1;
                tally.linked_bytes += meta.len();
            }
        }
    }
    Ok(logtank_durable::fsync_dir(dir)?)
}

fn read_u64(path: &Path) -> Result<Option<u64>> {
    match fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{}: not a number: {text:?}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn remove_dir_all(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(transport: Transport) -> SyncSection {
        SyncSection {
            transport,
            ..SyncSection::default()
        }
    }

    #[test]
    fn masters_are_parsed() {
        let ok = |s: &str, host: &str, port: Option<u16>| {
            assert_eq!(parse_master(s), Ok((host.to_string(), port)), "{s}");
        };
        ok("storage1", "storage1", None);
        ok("storage1.example.com:8873", "storage1.example.com", Some(8873));
        ok("10.0.0.5", "10.0.0.5", None);
        ok("[::1]", "[::1]", None);
        ok("[fe80::1]:873", "[fe80::1]", Some(873));
        ok("fe80::1", "[fe80::1]", None);
        for bad in [
            "",
            ":873",
            "h:0",
            "h:x",
            "-oProxyCommand=x",
            "a b",
            "u@h",
            "[::1",
            "[::1]x",
            "h/p",
        ] {
            assert!(parse_master(bad).is_err(), "{bad}");
        }
    }

    // Proves the copy's passes and their filters are IndexTank's include patterns and nothing else, and the
    // source of each transport is where the master's storage is.
    #[test]
    fn rsync_arguments() {
        let daemon = section(Transport::RsyncDaemon);
        let source = Source::new(&daemon, "m1", None);
        assert_eq!(source.url, "rsync://m1:873/logtank/");
        assert_eq!(
            Source::new(&daemon, "[::1]", Some(10873)).url,
            "rsync://[::1]:10873/logtank/"
        );
        let args = rsync_args(
            &daemon,
            &source,
            Pass::Sorted,
            Some(Path::new("/data/storage")),
            Path::new("/data/storage/migrating"),
        );
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "-a",
                "--no-links",
                "--no-devices",
                "--no-specials",
                "--timeout=300",
                "--contimeout=300",
                "--link-dest=/data/storage/",
                "--filter=- .*",
                "--filter=+ /indexes/",
                "--filter=+ /indexes/*/",
                "--filter=+ /indexes/*/segments/",
                "--filter=+ /indexes/*/segments/*.sorted_*",
                "--filter=- *",
                "rsync://m1:873/logtank/",
                "/data/storage/migrating/",
            ]
        );
        assert_eq!(
            Pass::Optimized.filters()[3..5],
            ["+ /indexes/*/optimized/", "+ /indexes/*/optimized/*.optimized_*"]
        );
        assert_eq!(Pass::DealerInfo.filters(), ["+ /dealer*.info", "- *"]);

        let ssh = SyncSection {
            ssh_user: "logtank".into(),
            ssh_options: vec!["-i".into(), "/var/lib/logtank/.ssh/id ed25519".into()],
            bwlimit_kib: 1000,
            ..section(Transport::Ssh)
        };
        let source = Source::new(&ssh, "m1", Some(2222));
        assert_eq!(source.url, "logtank@m1:/data/storage/");
        assert_eq!(
            source.remote_shell.as_deref(),
            Some("ssh -i '/var/lib/logtank/.ssh/id ed25519' -p 2222 -o BatchMode=yes -o ConnectTimeout=300")
        );
        let args = rsync_args(&ssh, &source, Pass::DealerInfo, None, Path::new("/s"));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args[3..8],
            [
                "--no-specials",
                "--timeout=300",
                "-e",
                source.remote_shell.as_deref().unwrap_or(""),
                "--bwlimit=1000"
            ]
        );
        assert_eq!(args[args.len() - 2..], ["logtank@m1:/data/storage/", "/s/"]);
    }

    #[test]
    fn config_checks() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("sync.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
            load_config(&ConfigSource::explicit(&file), &[]).map_err(|e| e.to_string())
        };
        let config = load("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.sync, SyncSection::default());
        assert_eq!(config.coord.servers, "127.0.0.1:2181");
        let config =
            load("[sync]\nmaster = \"m1:8873\"\ntransport = \"ssh\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.sync.transport, Transport::Ssh);
        let e = load("[sync]\n\nmastr = \"m1\"\n").expect_err("unknown key");
        assert!(e.contains("sync.toml:3") && e.contains("unknown field"), "{e}");
        let e = load("[sync]\ntransport = \"ftp\"\n").expect_err("bad transport");
        assert!(e.contains("sync.toml:2"), "{e}");
        let e = load("[sync]\nmaster = \"a b\"\n").expect_err("bad master");
        assert!(e.contains("key 'sync.master'"), "{e}");
        let e = load("[sync]\nrsync_module = \"a/b\"\n").expect_err("bad module");
        assert!(e.contains("key 'sync.rsync_module'"), "{e}");
        let e = load("[sync]\ndata_root = \"data\"\n").expect_err("relative root");
        assert!(e.contains("key 'sync.data_root'"), "{e}");
    }
}
