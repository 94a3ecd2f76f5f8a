//! `logtank zk` as a real process against real servers: Debian's ZooKeeper always, logtank-coordd too when
//! `LOGTANK_COORDD` names its binary (the server helper is logtank-coord's `test-support`).
// Helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests; a failed unwrap in a
// test helper is a test failure, which is what we want.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use logtank_coord::test_support::{for_each_server, TcpProxy, TestServer};

/// The longest we wait for a line from a running `zk watch`.
const LINE_WAIT_MAX: Duration = Duration::from_secs(30);

fn logtank(server: &TestServer) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_logtank"));
    command.args(["zk", "--server", &server.connect_string()]);
    command
}

fn zk(server: &TestServer, args: &[&str]) -> Output {
    logtank(server).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs a command that must succeed and returns its stdout.
fn zk_ok(server: &TestServer, args: &[&str]) -> String {
    let out = zk(server, args);
    assert!(
        out.status.success(),
        "logtank zk {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail and returns its stderr.
fn zk_err(server: &TestServer, args: &[&str]) -> String {
    let out = zk(server, args);
    assert!(
        !out.status.success(),
        "logtank zk {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Feeds `script` to the shell on stdin (not a terminal: no prompt).
fn zk_script(server: &TestServer, script: &str) -> Output {
    let mut child = logtank(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A running `logtank zk watch …` whose output lines arrive on channels.
struct Watching {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Watching {
    fn start(server: &TestServer, args: &[&str]) -> Watching {
        let mut child = logtank(server)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let watching = Watching {
            child,
            stdout,
            stderr,
        };
        // The command says so on stderr once its watch is set; only then can a change be seen.
        let said = watching.stderr.recv_timeout(LINE_WAIT_MAX).unwrap();
        assert!(said.starts_with("watching "), "{said}");
        watching
    }

    fn next_line(&self) -> String {
        self.stdout.recv_timeout(LINE_WAIT_MAX).unwrap()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

// Proves the basic one-shot commands: create prints the path, get/set/ls/delete do what zkCli's do, and the
// stat output has zkCli's fields in zkCli's order.
#[test]
fn one_shot_create_get_set_ls_delete() {
    for_each_server(|server| {
        assert_eq!(zk_ok(server, &["create", "/a", "hello"]), "/a\n");
        assert_eq!(zk_ok(server, &["get", "/a"]), "hello\n");
        assert_eq!(zk_ok(server, &["set", "/a", "two words"]), "");
        let out = zk_ok(server, &["get", "-s", "/a"]);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("two words"));
        let keys: Vec<&str> = lines.map(|l| l.split(" = ").next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "cZxid",
                "ctime",
                "mZxid",
                "mtime",
                "pZxid",
                "cversion",
                "dataVersion",
                "aclVersion",
                "ephemeralOwner",
                "dataLength",
                "numChildren"
            ]
        );
        let stat = zk_ok(server, &["stat", "/a"]);
        assert!(stat.contains("\ndataVersion = 1\n"), "{stat}");
        assert!(stat.contains("\ndataLength = 9\n"), "{stat}");
        assert!(stat.contains("\nephemeralOwner = 0x0\n"), "{stat}");
        assert!(stat.starts_with("cZxid = 0x"), "{stat}");

        zk_ok(server, &["create", "/a/b"]);
        zk_ok(server, &["create", "/a/c", "-dash"]);
        assert_eq!(zk_ok(server, &["get", "/a/c"]), "-dash\n");
        assert_eq!(zk_ok(server, &["ls", "/a"]), "b\nc\n");
        let ls_stat = zk_ok(server, &["ls", "-s", "/a"]);
        assert!(ls_stat.starts_with("b\nc\ncZxid = "), "{ls_stat}");
        assert!(ls_stat.contains("\nnumChildren = 2\n"), "{ls_stat}");
        assert!(zk_ok(server, &["ls", "/"]).lines().any(|l| l == "a"));

        zk_ok(server, &["delete", "-v", "0", "/a/b"]);
        zk_ok(server, &["delete", "/a/c"]);
        zk_ok(server, &["delete", "/a"]);
        assert!(zk_err(server, &["get", "/a"]).contains("Node does not exist: /a"));
    });
}

// Proves every failure exits non-zero with a message naming the problem and the path.
#[test]
fn failures_exit_non_zero_with_a_clear_message() {
    for_each_server(|server| {
        zk_ok(server, &["create", "/f", "x"]);
        zk_ok(server, &["create", "/f/child"]);
        for (args, message) in [
            (&["get", "/missing"][..], "Node does not exist: /missing"),
            (&["create", "/f"], "Node already exists: /f"),
            (&["create", "/nope/child"], "Node does not exist: /nope/child"),
            (&["set", "-v", "7", "/f", "y"], "Version mismatch: /f"),
            (&["delete", "-v", "7", "/f/child"], "Version mismatch: /f/child"),
            (&["delete", "/f"], "Node not empty: /f"),
            (&["deleteall", "/missing"], "Node does not exist: /missing"),
            (&["stat", "/missing"], "Node does not exist: /missing"),
            (&["get", "relative"], "relative"),
            (&["frobnicate", "/f"], "unrecognized subcommand"),
            (&["ls"], "required arguments were not provided"),
        ] {
            let stderr = zk_err(server, args);
            assert!(stderr.contains(message), "{args:?}: {stderr}");
        }
        zk_ok(server, &["create", "-e", "/f2"]);
        // The ephemeral went with the command's session, so this parent is free again.
        zk_ok(server, &["create", "/f2"]);
    });
    // Nothing listening: a connection error that names the server, after a bounded wait.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_logtank"))
        .args(["zk", "--server", &format!("127.0.0.1:{port}"), "ls", "/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("could not connect to coordination at 127.0.0.1:{port}")),
        "{stderr}"
    );
}

// Proves create's flags: sequential prints the numbered path, ephemeral nodes go when the command's session
// closes at exit, containers are created.
#[test]
fn create_sequential_ephemeral_and_container() {
    for_each_server(|server| {
        zk_ok(server, &["create", "/q"]);
        assert_eq!(
            zk_ok(server, &["create", "-s", "/q/item-", "a"]),
            "/q/item-0000000000\n"
        );
        assert_eq!(
            zk_ok(server, &["create", "-s", "/q/item-", "b"]),
            "/q/item-0000000001\n"
        );
        assert_eq!(zk_ok(server, &["get", "/q/item-0000000001"]), "b\n");

        assert_eq!(zk_ok(server, &["create", "-e", "/eph"]), "/eph\n");
        assert!(zk_err(server, &["stat", "/eph"]).contains("Node does not exist: /eph"));
        let seq = zk_ok(server, &["create", "-e", "-s", "/q/e-"]);
        assert!(seq.starts_with("/q/e-00000000"), "{seq}");

        assert_eq!(zk_ok(server, &["create", "-c", "/box"]), "/box\n");
        zk_ok(server, &["create", "/box/thing"]);
        assert_eq!(zk_ok(server, &["ls", "/box"]), "thing\n");
    });
}

// Proves ls -R lists a whole subtree in order and deleteall removes it.
#[test]
fn ls_recursive_and_deleteall() {
    for_each_server(|server| {
        for path in ["/t", "/t/b", "/t/a", "/t/a/x", "/t/a/x/deep", "/t/c"] {
            zk_ok(server, &["create", path]);
        }
        assert_eq!(
            zk_ok(server, &["ls", "-R", "/t"]),
            "/t\n/t/a\n/t/a/x\n/t/a/x/deep\n/t/b\n/t/c\n"
        );
        zk_ok(server, &["deleteall", "/t"]);
        assert!(zk_err(server, &["ls", "/t"]).contains("Node does not exist: /t"));
        assert!(!zk_ok(server, &["ls", "/"]).lines().any(|l| l == "t"));
    });
}

// Proves the shell reads a script from stdin: every line runs in one session (so an ephemeral node is seen by
// later lines), quoting and comments work, a failed line does not stop the rest but makes the exit status 1,
// `quit` ends it, and no prompt is printed when stdin is not a terminal.
#[test]
fn script_on_stdin_runs_line_by_line_without_a_prompt() {
    for_each_server(|server| {
        let out = zk_script(
            server,
            "# set up\n\
             create -e /s \"one two\"\n\
             get /s\n\
             \n\
             get /missing\n\
             set /s 'three'\n\
             get /s\n\
             quit\n\
             get /s\n",
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stdout, "/s\none two\nthree\n");
        assert_eq!(stderr.trim(), "Node does not exist: /missing");
        assert_eq!(out.status.code(), Some(1));

        let clean = zk_script(server, "create /ok\nls /ok\n");
        assert!(clean.status.success());
        assert_eq!(String::from_utf8(clean.stdout).unwrap(), "/ok\n");
        // The script's ephemeral node went when its session closed.
        assert!(zk_err(server, &["stat", "/s"]).contains("Node does not exist: /s"));
    });
}

// Proves `watch PATH` prints the next event on the node (data) or its children and exits 0, and `get -w`
// prints the data and then the next change.
#[test]
fn watch_prints_the_next_event() {
    for_each_server(|server| {
        zk_ok(server, &["create", "/w", "0"]);
        let data = Watching::start(server, &["watch", "/w"]);
        zk_ok(server, &["set", "/w", "1"]);
        assert_eq!(
            data.next_line(),
            "WatchedEvent state:SyncConnected type:NodeDataChanged path:/w"
        );

        let children = Watching::start(server, &["watch", "/w"]);
        zk_ok(server, &["create", "/w/kid"]);
        assert_eq!(
            children.next_line(),
            "WatchedEvent state:SyncConnected type:NodeChildrenChanged path:/w"
        );

        let absent = Watching::start(server, &["watch", "/later"]);
        zk_ok(server, &["create", "/later"]);
        assert_eq!(
            absent.next_line(),
            "WatchedEvent state:SyncConnected type:NodeCreated path:/later"
        );

        let mut get = logtank(server)
            .args(["get", "-w", "/w"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = lines_of(get.stdout.take().unwrap());
        assert_eq!(lines.recv_timeout(LINE_WAIT_MAX).unwrap(), "1");
        zk_ok(server, &["delete", "/w/kid"]);
        zk_ok(server, &["delete", "/w"]);
        assert_eq!(
            lines.recv_timeout(LINE_WAIT_MAX).unwrap(),
            "WatchedEvent state:SyncConnected type:NodeDeleted path:/w"
        );
        assert!(get.wait().unwrap().success());
        for mut watching in [data, children, absent] {
            assert!(watching.child.wait().unwrap().success());
        }
    });
}

// Proves `watch -r` streams every event at and below a node, in order, until end of input, then exits 0.
#[test]
fn watch_recursive_streams_until_end_of_input() {
    for_each_server(|server| {
        let mut watching = Watching::start(server, &["watch", "-r", "/r"]);
        zk_ok(server, &["create", "/r"]);
        zk_ok(server, &["create", "/r/x", "1"]);
        zk_ok(server, &["set", "/r/x", "2"]);
        zk_ok(server, &["delete", "/r/x"]);
        for expected in [
            "type:NodeCreated path:/r",
            "type:NodeCreated path:/r/x",
            "type:NodeDataChanged path:/r/x",
            "type:NodeDeleted path:/r/x",
        ] {
            let line = watching.next_line();
            assert_eq!(line, format!("WatchedEvent state:SyncConnected {expected}"));
        }
        drop(watching.child.stdin.take()); // end of input
        assert!(watching.child.wait().unwrap().success());

        // With stdin from /dev/null (a background job) it streams until killed instead of stopping at once.
        let mut background = logtank(server)
            .args(["watch", "-r", "/bg"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(background.stdout.take().unwrap());
        let stderr = lines_of(background.stderr.take().unwrap());
        assert!(stderr
            .recv_timeout(LINE_WAIT_MAX)
            .unwrap()
            .starts_with("watching "));
        zk_ok(server, &["create", "/bg"]);
        zk_ok(server, &["create", "/bg/1"]);
        assert!(stdout.recv_timeout(LINE_WAIT_MAX).unwrap().ends_with("path:/bg"));
        assert!(stdout
            .recv_timeout(LINE_WAIT_MAX)
            .unwrap()
            .ends_with("path:/bg/1"));
        assert!(
            background.try_wait().unwrap().is_none(),
            "stopped on /dev/null's end of input"
        );
        background.kill().unwrap();
        background.wait().unwrap();
    });
}

// Proves `watch -r` keeps streaming after its connection dropped and came back within the session (the client
// library does not restore persistent watches by itself; the command sets its watch again).
#[test]
fn watch_recursive_survives_a_reconnect() {
    for_each_server(|server| {
        let proxy = TcpProxy::start(server.port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_logtank"))
            .args(["zk", "--server", &proxy.connect_string(), "watch", "-r", "/rc"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        assert!(stderr
            .recv_timeout(LINE_WAIT_MAX)
            .unwrap()
            .starts_with("watching "));
        zk_ok(server, &["create", "/rc"]);
        assert!(stdout
            .recv_timeout(LINE_WAIT_MAX)
            .unwrap()
            .ends_with("type:NodeCreated path:/rc"));

        proxy.cut();
        assert_eq!(
            stdout.recv_timeout(LINE_WAIT_MAX).unwrap(),
            "WatchedEvent state:Disconnected type:None path:null"
        );
        proxy.heal();
        assert_eq!(
            stdout.recv_timeout(LINE_WAIT_MAX).unwrap(),
            "WatchedEvent state:SyncConnected type:None path:null"
        );
        assert!(stderr
            .recv_timeout(LINE_WAIT_MAX)
            .unwrap()
            .starts_with("reconnected: watching /rc again"));
        zk_ok(server, &["create", "/rc/after"]);
        assert!(stdout
            .recv_timeout(LINE_WAIT_MAX)
            .unwrap()
            .ends_with("type:NodeCreated path:/rc/after"));
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    });
}

// Proves getAcl, sync and help print what zkCli users expect.
#[test]
fn get_acl_sync_and_help() {
    for_each_server(|server| {
        zk_ok(server, &["create", "/acl"]);
        assert_eq!(zk_ok(server, &["getAcl", "/acl"]), "'world,'anyone\n: cdrwa\n");
        assert_eq!(zk_ok(server, &["sync", "/acl"]), "Sync is OK\n");
        let help = zk_ok(server, &["help"]);
        for command in [
            "ls",
            "get",
            "stat",
            "create",
            "set",
            "delete",
            "deleteall",
            "watch",
            "sync",
            "getAcl",
            "quit",
        ] {
            assert!(
                help.contains(&format!("\n  {command} ")),
                "{command} missing from help: {help}"
            );
        }
    });
}
