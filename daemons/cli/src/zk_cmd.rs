//! `logtank zk`: a ZooKeeper shell that works against logtank-coordd and a real ZooKeeper ensemble alike.
//!
//! `logtank zk [--server CONNECT_STRING] COMMAND ARGS…` runs one command and exits (non-zero, with a message
//! such as `Node does not exist: /a`, when it fails), so scripts can use it. Without a command it reads
//! commands from stdin, one per line (shell-like quoting; `#` starts a comment), with a prompt only when stdin
//! is a terminal; it then exits 1 if any command failed. Output follows zkCli where that helps (stat fields,
//! `getAcl`, watch events) and is one item per line where scripts read it (`ls`, `create`).
//!
//! Commands are parsed by clap from the same table in both modes, so `help` and the error messages are the
//! same everywhere. The session is one `zookeeper-client` session, closed (ephemeral nodes and all) before the
//! command exits.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use logtank_coord::zookeeper_client::{
    Acl, Acls, AddWatchMode, Client, CreateMode, EventType, OneshotWatcher, Permission, SessionState, Stat,
    WatchedEvent,
};
use logtank_coord::{CoordConfig, ZkError, DEFAULT_SERVERS};
use tokio::sync::{mpsc, watch};

/// How long the shell tries to reach the server before it says it cannot: a person is waiting.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long closing the session may take at exit before we leave it to expire.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Lines read ahead from stdin while a command runs.
const STDIN_LINES_QUEUED_MAX: usize = 64;
/// The most nodes `ls -R` and `deleteall` walk: far beyond any logtank tree, small enough to hold in memory.
const TREE_NODES_MAX: usize = 1_000_000;

#[derive(Args, Debug, Clone)]
pub struct ZkArgs {
    /// ZooKeeper connect string: host:port[,host:port…][/chroot] (coordd or a ZooKeeper ensemble).
    #[arg(long, default_value = DEFAULT_SERVERS)]
    pub server: String,
    /// The command to run (see `logtank zk help`); without one, commands are read from stdin.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

// One shell command line, parsed by clap with the command as "binary name" (multicall), so `help` lists the
// commands and each has `-h`.
#[derive(Parser, Debug)]
#[command(
    about = "logtank zk commands (paths are absolute; quote data with spaces: set /a \"two words\")",
    multicall = true,
    subcommand_value_name = "COMMAND",
    subcommand_help_heading = "Commands"
)]
struct Line {
    #[command(subcommand)]
    command: ZkCommand,
}

#[derive(Subcommand, Debug)]
enum ZkCommand {
    /// List the children of a node, one per line (-R: every path below it; -s: then its stat).
    Ls {
        #[arg(short = 's')]
        stat: bool,
        #[arg(short = 'R')]
        recursive: bool,
        path: String,
    },
    /// Print a node's data (-s: then its stat; -w: then wait for and print the next change).
    Get {
        #[arg(short = 's')]
        stat: bool,
        #[arg(short = 'w')]
        watch: bool,
        path: String,
    },
    /// Print a node's stat.
    Stat { path: String },
    /// Create a node (-e ephemeral, -s sequential, -c container) and print its path.
    Create {
        #[arg(short = 'e')]
        ephemeral: bool,
        #[arg(short = 's')]
        sequential: bool,
        #[arg(short = 'c', conflicts_with_all = ["ephemeral", "sequential"])]
        container: bool,
        path: String,
        #[arg(allow_hyphen_values = true)]
        data: Option<String>,
    },
    /// Set a node's data (-v: only if its data version is VERSION).
    Set {
        #[arg(short = 'v', value_name = "VERSION")]
        version: Option<i32>,
        path: String,
        #[arg(allow_hyphen_values = true)]
        data: String,
    },
    /// Delete a node without children (-v: only if its data version is VERSION).
    Delete {
        #[arg(short = 'v', value_name = "VERSION")]
        version: Option<i32>,
        path: String,
    },
    /// Delete a node and everything below it.
    Deleteall { path: String },
    /// Wait for the next change of a node or its children and print it (-r: stream every change at or below
    /// the node until Ctrl-C or end of input; with stdin from /dev/null, until killed).
    Watch {
        #[arg(short = 'r')]
        recursive: bool,
        path: String,
    },
    /// Make this session's view as fresh as the leader's.
    Sync { path: String },
    /// Print a node's ACL.
    #[command(name = "getAcl", alias = "getacl")]
    GetAcl { path: String },
    /// Leave the shell.
    #[command(alias = "exit")]
    Quit,
}

pub fn run(args: ZkArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        if args.command.is_empty() {
            interactive(&args.server).await
        } else {
            one_shot(&args.server, &args.command).await
        }
    })
}

/// Runs the command given on the command line.
async fn one_shot(server: &str, words: &[String]) -> Result<ExitCode> {
    let command = match parse(words) {
        Parsed::Command(command) => command,
        Parsed::Quit => return Ok(ExitCode::SUCCESS),
        Parsed::Printed { failed: false } => return Ok(ExitCode::SUCCESS),
        Parsed::Printed { failed: true } => return Ok(ExitCode::from(2)),
    };
    let mut shell = Shell::connect(server, Mode::OneShot).await?;
    let result = shell.execute(command).await;
    shell.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

/// Reads commands from stdin until `quit`, end of input or Ctrl-C.
async fn interactive(server: &str) -> Result<ExitCode> {
    let tty = std::io::stdin().is_terminal();
    let mut input = Input::spawn();
    let mut shell = Shell::connect(server, Mode::Interactive).await?;
    let mut failures = 0u64;
    loop {
        if tty {
            print!("zk:{server}> ");
            std::io::stdout().flush()?;
        }
        let line = tokio::select! {
            line = input.lines.recv() => line,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(line) = line else { break };
        let words = match tokenize(&line) {
            Ok(words) if words.is_empty() => continue,
            Ok(words) => words,
            Err(e) => {
                eprintln!("{e}");
                failures += 1;
                continue;
            }
        };
        let command = match parse(&words) {
            Parsed::Command(command) => command,
            Parsed::Quit => break,
            Parsed::Printed { failed } => {
                failures += u64::from(failed);
                continue;
            }
        };
        if let Err(e) = shell.execute_with_input(command, &mut input).await {
            eprintln!("{e:#}");
            failures += 1;
        }
    }
    if tty {
        println!();
    }
    shell.close().await;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

enum Parsed {
    Command(ZkCommand),
    Quit,
    /// Help or a usage error was printed; nothing to run.
    Printed {
        failed: bool,
    },
}

fn parse(words: &[String]) -> Parsed {
    match Line::try_parse_from(words) {
        Ok(Line {
            command: ZkCommand::Quit,
        }) => Parsed::Quit,
        Ok(line) => Parsed::Command(line.command),
        Err(e) => {
            let failed = e.use_stderr();
            // Help goes to stdout, usage errors to stderr; clap knows which is which.
            let _ = e.print();
            Parsed::Printed { failed }
        }
    }
}

/// Splits a line into words like a shell does: whitespace separates, '…' and "…" quote, \ escapes (outside
/// single quotes), # at the start of a word begins a comment.
fn tokenize(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => bail!("unterminated ' in: {line}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => bail!("unterminated \" in: {line}"),
                        },
                        Some(c) => word.push(c),
                        None => bail!("unterminated \" in: {line}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Stdin, read line by line on a thread of its own (a blocked read must not hold the runtime), plus a flag
/// that turns true at end of input (so `watch -r` can stop on it without eating queued commands).
struct Input {
    lines: mpsc::Receiver<String>,
    eof: watch::Receiver<bool>,
}

impl Input {
    fn spawn() -> Input {
        let (line_sender, lines) = mpsc::channel(STDIN_LINES_QUEUED_MAX);
        let (eof_sender, eof) = watch::channel(false);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line_sender.blocking_send(line).is_err() {
                    return;
                }
            }
            eof_sender.send_replace(true);
        });
        Input { lines, eof }
    }

    async fn wait_eof(&mut self) {
        let _ = self.eof.wait_for(|eof| *eof).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One command, then exit: a `get -w` waits for its event, or it would be lost.
    OneShot,
    /// A session of many commands: a `get -w` event is printed whenever it comes.
    Interactive,
}

struct Shell {
    config: CoordConfig,
    client: Client,
    mode: Mode,
}

impl Shell {
    async fn connect(server: &str, mode: Mode) -> Result<Shell> {
        let config = CoordConfig {
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            auth: crate::endpoint::coord_auth_from_env(),
            ..CoordConfig::with_servers(server)
        };
        let client = logtank_coord::connect(&config).await?;
        Ok(Shell { config, client, mode })
    }

    /// Closes the session (so ephemeral nodes go now, not a session timeout later) and waits for the server
    /// to confirm, for at most [`CLOSE_WAIT`].
    async fn close(self) {
        let mut states = self.client.state_watcher();
        drop(self.client);
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while !states.changed().await.is_terminated() {}
        })
        .await;
    }

    /// A session that ended (expired while the shell sat idle) is replaced before the next command.
    async fn live_client(&mut self) -> Result<&Client> {
        if self.client.state().is_terminated() {
            eprintln!(
                "session {} ended ({}); connecting a new one",
                self.client.session_id(),
                self.client.state()
            );
            self.client = logtank_coord::connect(&self.config).await?;
        }
        Ok(&self.client)
    }

    async fn execute(&mut self, command: ZkCommand) -> Result<()> {
        let mut input = None;
        self.run(command, &mut input).await
    }

    async fn execute_with_input(&mut self, command: ZkCommand, input: &mut Input) -> Result<()> {
        self.run(command, &mut Some(input)).await
    }

    async fn run(&mut self, command: ZkCommand, input: &mut Option<&mut Input>) -> Result<()> {
        let mode = self.mode;
        let client = self.live_client().await?;
        // Output is gathered and written when the command is done (or before it waits), so no stdout lock is
        // held across an await.
        let mut out = Vec::new();
        match command {
            ZkCommand::Ls {
                stat,
                recursive,
                path,
            } => {
                if recursive {
                    for p in tree(client, &path).await? {
                        writeln!(out, "{p}")?;
                    }
                } else {
                    let (mut children, _) =
                        client.get_children(&path).await.map_err(|e| zk_error(e, &path))?;
                    children.sort();
                    for child in children {
                        writeln!(out, "{child}")?;
                    }
                }
                if stat {
                    let stat = stat_of(client, &path).await?;
                    write_stat(&mut out, &stat)?;
                }
            }
            ZkCommand::Get { stat, watch, path } => {
                let (data, node_stat, watcher) = if watch {
                    let (data, stat, watcher) = client
                        .get_and_watch_data(&path)
                        .await
                        .map_err(|e| zk_error(e, &path))?;
                    (data, stat, Some(watcher))
                } else {
                    let (data, stat) = client.get_data(&path).await.map_err(|e| zk_error(e, &path))?;
                    (data, stat, None)
                };
                out.write_all(&data)?;
                writeln!(out)?;
                if stat {
                    write_stat(&mut out, &node_stat)?;
                }
                print_out(&mut out)?;
                if let Some(watcher) = watcher {
                    match mode {
                        Mode::OneShot => print_event(&watcher.changed().await)?,
                        Mode::Interactive => {
                            tokio::spawn(async move {
                                let _ = print_event(&watcher.changed().await);
                            });
                        }
                    }
                }
            }
            ZkCommand::Stat { path } => {
                let stat = stat_of(client, &path).await?;
                write_stat(&mut out, &stat)?;
            }
            ZkCommand::Create {
                ephemeral,
                sequential,
                container,
                path,
                data,
            } => {
                let mode = match (ephemeral, sequential, container) {
                    (_, _, true) => CreateMode::Container,
                    (true, true, _) => CreateMode::EphemeralSequential,
                    (true, false, _) => CreateMode::Ephemeral,
                    (false, true, _) => CreateMode::PersistentSequential,
                    (false, false, _) => CreateMode::Persistent,
                };
                let data = data.unwrap_or_default();
                let (_, sequence) = client
                    .create(&path, data.as_bytes(), &mode.with_acls(Acls::anyone_all()))
                    .await
                    .map_err(|e| zk_error(e, &path))?;
                if sequential {
                    writeln!(out, "{path}{sequence}")?;
                } else {
                    writeln!(out, "{path}")?;
                }
            }
            ZkCommand::Set { version, path, data } => {
                client
                    .set_data(&path, data.as_bytes(), version)
                    .await
                    .map_err(|e| zk_error(e, &path))?;
            }
            ZkCommand::Delete { version, path } => {
                client
                    .delete(&path, version)
                    .await
                    .map_err(|e| zk_error(e, &path))?;
            }
            ZkCommand::Deleteall { path } => delete_all(client, &path).await?,
            ZkCommand::Watch { recursive, path } => {
                if recursive {
                    watch_recursive(client, &path, input).await?;
                } else {
                    watch_once(client, &path).await?;
                }
            }
            ZkCommand::Sync { path } => {
                client.sync(&path).await.map_err(|e| zk_error(e, &path))?;
                writeln!(out, "Sync is OK")?;
            }
            ZkCommand::GetAcl { path } => {
                let (acls, _) = client.get_acl(&path).await.map_err(|e| zk_error(e, &path))?;
                for acl in &acls {
                    write_acl(&mut out, acl)?;
                }
            }
            ZkCommand::Quit => {}
        }
        print_out(&mut out)
    }
}

fn print_out(out: &mut Vec<u8>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out)?;
    stdout.flush()?;
    out.clear();
    Ok(())
}

async fn stat_of(client: &Client, path: &str) -> Result<Stat> {
    client
        .check_stat(path)
        .await
        .map_err(|e| zk_error(e, path))?
        .ok_or_else(|| zk_error(ZkError::NoNode, path))
}

/// `path` and every path below it, depth first, children sorted.
async fn tree(client: &Client, path: &str) -> Result<Vec<String>> {
    // Fails with "Node does not exist" for a missing top node, like every other command.
    stat_of(client, path).await?;
    let mut found = Vec::new();
    let mut stack = vec![path.to_string()];
    while let Some(node) = stack.pop() {
        if found.len() >= TREE_NODES_MAX {
            bail!("{path}: more than {TREE_NODES_MAX} nodes below it");
        }
        let children = match client.list_children(&node).await {
            Ok(children) => children,
            Err(ZkError::NoNode) => continue, // deleted while we walked
            Err(e) => return Err(zk_error(e, &node)),
        };
        let mut children: Vec<String> = children.iter().map(|c| child_path(&node, c)).collect();
        children.sort_unstable_by(|a, b| b.cmp(a)); // popped in ascending order
        stack.extend(children);
        found.push(node);
    }
    Ok(found)
}

/// Deletes `path` and its subtree, deepest first. `/` itself and `/zookeeper` (the server's own) stay.
async fn delete_all(client: &Client, path: &str) -> Result<()> {
    let nodes = tree(client, path).await?;
    for node in nodes.iter().rev() {
        if node == "/" || node == "/zookeeper" || node.starts_with("/zookeeper/") {
            continue;
        }
        match client.delete(node, None).await {
            Ok(()) | Err(ZkError::NoNode) => {}
            Err(e) => return Err(zk_error(e, node)),
        }
    }
    Ok(())
}

/// Sets a data (or existence) watch and a child watch on `path` and prints whichever event comes first.
async fn watch_once(client: &Client, path: &str) -> Result<()> {
    let data_watch: OneshotWatcher = match client.get_and_watch_data(path).await {
        Ok((_, _, watcher)) => watcher,
        Err(ZkError::NoNode) => {
            let (_, watcher) = client
                .check_and_watch_stat(path)
                .await
                .map_err(|e| zk_error(e, path))?;
            watcher
        }
        Err(e) => return Err(zk_error(e, path)),
    };
    let child_watch = match client.get_and_watch_children(path).await {
        Ok((_, _, watcher)) => Some(watcher),
        Err(ZkError::NoNode) => None,
        Err(e) => return Err(zk_error(e, path)),
    };
    eprintln!("watching {path} (Ctrl-C to stop)");
    let child_event = async move {
        match child_watch {
            Some(w) => w.changed().await,
            None => std::future::pending().await,
        }
    };
    let event = tokio::select! {
        event = data_watch.changed() => event,
        event = child_event => event,
        _ = tokio::signal::ctrl_c() => bail!("interrupted while watching {path}"),
    };
    print_event(&event)?;
    Ok(())
}

/// Streams every event at or below `path` (a persistent recursive watch) until Ctrl-C, end of input, or the
/// end of the session.
async fn watch_recursive(client: &Client, path: &str, input: &mut Option<&mut Input>) -> Result<()> {
    let mut watcher = client
        .watch(path, AddWatchMode::PersistentRecursive)
        .await
        .map_err(|e| zk_error(e, path))?;
    // One-shot mode has no stdin reader yet: start one just to notice the end of input. Unless stdin is
    // /dev/null (a background job, a unit): that input has ended before it began, and streaming until killed
    // is what such a caller wants.
    let mut own_input = None;
    let input: Option<&mut Input> = match input {
        Some(input) => Some(input),
        None if stdin_is_dev_null() => None,
        None => Some(own_input.insert(Input::spawn())),
    };
    let end_of_input = async move {
        match input {
            Some(input) => input.wait_eof().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(end_of_input);
    eprintln!("watching {path} and below (Ctrl-C or end of input to stop)");
    loop {
        let event = tokio::select! {
            event = watcher.changed() => event,
            _ = tokio::signal::ctrl_c() => {
                eprintln!(); // end the line the terminal's ^C left open
                return Ok(());
            }
            _ = &mut end_of_input => return Ok(()),
        };
        print_event(&event)?;
        if event.event_type != EventType::Session {
            continue;
        }
        if event.session_state.is_terminated() {
            // The watcher must not be polled after a terminal state (the client library panics).
            bail!("session ended ({}) while watching {path}", event.session_state);
        }
        if event.session_state == SessionState::SyncConnected {
            // zookeeper-client 0.11 restores one-shot watches on reconnect but not persistent ones (its
            // SetWatches leaves them out), so the server no longer has ours: add it again. Events between the
            // disconnect and now are not replayed (ZOOKEEPER-4698).
            watcher = client
                .watch(path, AddWatchMode::PersistentRecursive)
                .await
                .map_err(|e| zk_error(e, path))?;
            eprintln!("reconnected: watching {path} again (changes while disconnected are not shown)");
        }
    }
}

/// Whether stdin is /dev/null (same device and inode).
fn stdin_is_dev_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata("/proc/self/fd/0"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(stdin), Ok(null)) => stdin.dev() == null.dev() && stdin.ino() == null.ino(),
        _ => false,
    }
}

fn child_path(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// The zkCli wording for the errors people see most, with the path they concern.
fn zk_error(e: ZkError, path: &str) -> anyhow::Error {
    match e {
        ZkError::NoNode => anyhow!("Node does not exist: {path}"),
        ZkError::NodeExists => anyhow!("Node already exists: {path}"),
        ZkError::BadVersion => anyhow!("Version mismatch: {path}"),
        ZkError::NotEmpty => anyhow!("Node not empty: {path}"),
        ZkError::NoChildrenForEphemerals => anyhow!("Ephemerals cannot have children: {path}"),
        ZkError::NoAuth => anyhow!("Insufficient permission: {path}"),
        ZkError::InvalidAcl => anyhow!("Invalid ACL: {path}"),
        ZkError::BadArguments(why) => anyhow!("Invalid arguments for {path}: {why}"),
        ZkError::Unimplemented => anyhow!("The server does not implement this operation: {path}"),
        other => anyhow!("{path}: {other}"),
    }
}

fn write_stat(out: &mut impl Write, stat: &Stat) -> std::io::Result<()> {
    writeln!(out, "cZxid = {:#x}", stat.czxid)?;
    writeln!(out, "ctime = {}", time(stat.ctime))?;
    writeln!(out, "mZxid = {:#x}", stat.mzxid)?;
    writeln!(out, "mtime = {}", time(stat.mtime))?;
    writeln!(out, "pZxid = {:#x}", stat.pzxid)?;
    writeln!(out, "cversion = {}", stat.cversion)?;
    writeln!(out, "dataVersion = {}", stat.version)?;
    writeln!(out, "aclVersion = {}", stat.aversion)?;
    writeln!(out, "ephemeralOwner = {:#x}", stat.ephemeral_owner)?;
    writeln!(out, "dataLength = {}", stat.data_length)?;
    writeln!(out, "numChildren = {}", stat.num_children)
}

/// A node time (milliseconds since the epoch) as RFC 3339 UTC; zkCli prints the JVM's local `Date`.
fn time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

/// zkCli's form: `'scheme,'id` then `: cdrwa`.
fn write_acl(out: &mut impl Write, acl: &Acl) -> std::io::Result<()> {
    let permission = acl.permission();
    let letters: String = [
        (Permission::CREATE, 'c'),
        (Permission::DELETE, 'd'),
        (Permission::READ, 'r'),
        (Permission::WRITE, 'w'),
        (Permission::ADMIN, 'a'),
    ]
    .into_iter()
    .filter(|(p, _)| permission.has(*p))
    .map(|(_, c)| c)
    .collect();
    writeln!(out, "'{},'{}", acl.scheme(), acl.id())?;
    writeln!(out, ": {letters}")
}

/// zkCli's form: `WatchedEvent state:SyncConnected type:NodeDataChanged path:/a`.
fn print_event(event: &WatchedEvent) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let state = match event.session_state {
        SessionState::SyncConnected => "SyncConnected".to_string(),
        other => other.to_string(),
    };
    if event.event_type == EventType::Session {
        writeln!(out, "WatchedEvent state:{state} type:None path:null")?;
    } else {
        writeln!(
            out,
            "WatchedEvent state:{state} type:{} path:{}",
            event.event_type, event.path
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokenize(line).unwrap_or_else(|e| panic!("{e}"))
    }

    // Proves quoting works like a shell's, so data with spaces and quotes can be set from a script.
    #[test]
    fn tokenize_quotes_escapes_and_comments() {
        assert_eq!(words("  ls   /a  "), ["ls", "/a"]);
        assert_eq!(words(r#"set /a "hello world""#), ["set", "/a", "hello world"]);
        assert_eq!(
            words(r#"set /a 'it''s' x\ y "q\"d""#),
            ["set", "/a", "its", "x y", "q\"d"]
        );
        assert_eq!(words(r#"create /e """#), ["create", "/e", ""]);
        assert_eq!(words("# a comment"), Vec::<String>::new());
        assert_eq!(words("get /a # why"), ["get", "/a"]);
        assert_eq!(words("set /a b#c"), ["set", "/a", "b#c"]);
        assert!(tokenize("set /a 'open").is_err());
        assert!(tokenize("set /a \"open").is_err());
    }

    // Proves the command table parses the documented flags, including data that looks like a flag.
    #[test]
    fn commands_parse() {
        let parse = |line: &str| Line::try_parse_from(words(line)).map(|l| l.command);
        assert!(matches!(
            parse("ls -s -R /a"),
            Ok(ZkCommand::Ls {
                stat: true,
                recursive: true,
                ..
            })
        ));
        assert!(matches!(
            parse("create -e -s /q/n data"),
            Ok(ZkCommand::Create {
                ephemeral: true,
                sequential: true,
                container: false,
                ..
            })
        ));
        assert!(parse("create -c -e /q").is_err());
        assert!(matches!(
            parse("set -v 3 /a -1"),
            Ok(ZkCommand::Set { version: Some(3), .. })
        ));
        assert!(matches!(parse("getAcl /"), Ok(ZkCommand::GetAcl { .. })));
        assert!(matches!(
            parse("watch -r /"),
            Ok(ZkCommand::Watch { recursive: true, .. })
        ));
        assert!(matches!(parse("quit"), Ok(ZkCommand::Quit)));
        assert!(parse("frobnicate /").is_err());
        assert!(parse("get").is_err());
    }

    #[test]
    fn child_paths() {
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/a", "b"), "/a/b");
    }

    #[test]
    fn acl_and_time_formats() {
        let mut out = Vec::new();
        let acl = Acl::new(Permission::ALL, logtank_coord::zookeeper_client::AuthId::anyone());
        write_acl(&mut out, &acl).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from_utf8_lossy(&out), "'world,'anyone\n: cdrwa\n");
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
    }
}
