//! The storage commands (`send`, `generate`, `read`, `recover`, `tail`, `indexes`, `status`) as a person runs
//! them: the real `logtank` binary, against the real `logtank-writer` and `logtank-indexes` where a server is
//! needed (see `common`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{number_after, stderr, stdout, Suite, WAIT_MAX};
use serde_json::Value;

fn logtank() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_logtank"));
    // Nothing listens there: a command that needs a server fails fast and says so.
    command
        .env("LOGTANK_WRITER", "127.0.0.1:1")
        .env("LOGTANK_READER", "127.0.0.1:1")
        .env("LOGTANK_MANAGER", "127.0.0.1:1")
        .stdin(Stdio::null());
    command
}

/// The records of JSON lines, without the writer's timestamps, in order.
fn records_of(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("timestamp_ms");
            v
        })
        .collect()
}

// Proves bad JSON lines are refused with their line number and reason before anything is sent (no writer
// is needed to find out), and the exit status says so.
#[test]
fn send_refuses_bad_lines_with_their_number() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"docid\": \"a\", \"index_code\": \"i\"}\n{\"docid\": \"b\"\n",
            "line 2: EOF while parsing",
        ),
        ("\n\n{\"index_code\": \"i\"}\n", "line 3: no \"docid\""),
        (
            "{\"docid\": \"a\"}\n",
            "line 1: no \"index_code\" (give one per record, or a default with --index)",
        ),
        (
            "{\"docid\": \"a\", \"index_code\": \"a/b\"}\n",
            "line 1: invalid index_code \"a/b\"",
        ),
        (
            "{\"docid\": \"a\", \"index_code\": \"i\", \"colour\": 1}\n",
            "line 1: unknown field `colour`",
        ),
        (
            "{\"docid\": \"a\", \"index_code\": \"i\", \"variables\": {\"0\": \"x\"}}\n",
            "line 1: invalid type",
        ),
        ("not json\n", "line 1: not a JSON object"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("{i}.json"));
        std::fs::write(&file, text).unwrap();
        let output = logtank().arg("send").arg(&file).output().unwrap();
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(err.contains("nothing was sent"), "{err}");
        assert!(err.contains(&format!("{i}.json: line")), "names the file: {err}");
    }
    // From stdin, the input is called stdin.
    let mut child = logtank()
        .args(["send", "--index", "i", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"docid\": 3}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("stdin: line 1: invalid type: integer `3`"),
        "{}",
        stderr(&output)
    );
    // A bad default index is refused before reading anything.
    let output = logtank().args(["send", "--index", ".."]).output().unwrap();
    assert!(
        stderr(&output).contains("--index: invalid index_code"),
        "{}",
        stderr(&output)
    );
}

// Proves `generate --stdout` is a function of the seed (whatever the connection count), prints records
// `send` accepts, and spreads over --indexes.
#[test]
fn generate_stdout_is_deterministic_with_a_seed() {
    let run = |args: &[&str]| {
        let output = logtank()
            .args(["generate", "s", "300", "--stdout"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        (stdout(&output), stderr(&output))
    };
    let (a, summary) = run(&["--seed", "42"]);
    let (b, _) = run(&["--seed", "42", "--connections", "4"]);
    let (c, _) = run(&["--seed", "43"]);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.lines().count(), 300);
    assert!(summary.contains("generated 300 records"), "{summary}");
    assert!(summary.contains("documents after replay: "), "{summary}");
    for (i, line) in a.lines().enumerate() {
        logtank_cli::records::parse_line(line, i as u64 + 1, None)
            .unwrap()
            .unwrap();
    }
    let (spread, _) = run(&["--indexes", "3", "--index", "load", "--record-bytes", "200"]);
    let codes: std::collections::BTreeSet<String> = records_of(&spread)
        .iter()
        .map(|r| r["index_code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        codes.into_iter().collect::<Vec<_>>(),
        ["load-0", "load-1", "load-2"]
    );
}

// Proves commands that need a server say which one they could not reach and how to point elsewhere.
#[test]
fn unreachable_servers_are_named() {
    for (args, what) in [
        (vec!["read", "x"], "cannot reach the reader at 127.0.0.1:1"),
        (vec!["recover", "x"], "cannot reach the reader at 127.0.0.1:1"),
        (vec!["indexes", "list"], "cannot reach the manager at 127.0.0.1:1"),
        (
            vec!["generate", "x", "10"],
            "cannot reach the writer at 127.0.0.1:1",
        ),
    ] {
        let output = logtank().args(&args).output().unwrap();
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(err.contains("LOGTANK_"), "{err}");
    }
}

// Proves what `send` writes, `read` gives back: the same records in the same order, every field kind, with
// the writer's timestamps added; and `read --summary` counts them.
#[test]
fn send_then_read_gives_back_the_same_records() {
    let suite = Suite::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let input = [
        r#"{"docid": "a", "fields": {"title": "first", "text": "héllo wörld"}, "variables": {"0": 1.5, "7": -2}, "categories": {"color": "red"}}"#,
        r#"{"docid": "b", "deleted": false, "fields": {"text": "second"}}"#,
        r#"{"index_code": "other", "docid": "z", "fields": {"text": "elsewhere"}}"#,
        r#"{"docid": "a", "variables": {"1": 3.25}}"#,
        r#"{"docid": "b", "deleted": true}"#,
        "",
        r#"{"docid": "c", "deleted": true, "fields": {"text": "replaced"}, "categories": {}}"#,
        r#"{"docid": "a", "categories": {"size": "xl"}, "timestamp_ms": 5}"#,
    ];
    let file = dir.path().join("records.json");
    std::fs::write(&file, input.join("\n")).unwrap();
    let sent = suite.run(&[
        "send",
        "--index",
        "mine",
        "--batch-size",
        "3",
        file.to_str().unwrap(),
    ]);
    let summary = stdout(&sent);
    assert!(summary.starts_with("sent 7 records, 3 batches"), "{summary}");
    assert!(summary.contains("MB/s"), "{summary}");

    let read = suite.run(&["read", "mine"]);
    let mut expected = records_of(&input.join("\n"));
    expected.retain(|r| r.get("index_code").is_none());
    for r in &mut expected {
        let o = r.as_object_mut().unwrap();
        o.insert("index_code".into(), "mine".into());
        o.entry("deleted").or_insert(false.into());
    }
    // Numbers come back as doubles; compare values, not spellings.
    let normalise = |v: Vec<Value>| -> Vec<Value> {
        v.into_iter()
            .map(|r| serde_json::from_str(&r.to_string().replace(":-2}", ":-2.0}")).unwrap())
            .collect()
    };
    let got = records_of(&stdout(&read));
    assert_eq!(
        normalise(got.clone()),
        normalise(expected),
        "read:\n{}",
        stdout(&read)
    );
    for line in stdout(&read).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["timestamp_ms"].as_i64().unwrap() > 1_600_000_000_000, "{line}");
    }
    assert!(
        stderr(&read).contains("read mine: 6 records"),
        "{}",
        stderr(&read)
    );
    let summary = suite.run(&["read", "mine", "--summary"]);
    assert!(
        stdout(&summary).starts_with("read mine: 6 records, "),
        "{}",
        stdout(&summary)
    );
    let other = suite.run(&["read", "other", "--json"]);
    assert_eq!(records_of(&stdout(&other)).len(), 1);
}

// Proves `generate N` then `recover` reports N records and the document count the generator's model
// predicts, over several connections and indexes too.
#[test]
fn generate_then_recover_reports_every_record() {
    let suite = Suite::start(&[]);
    let generated = suite.run(&["generate", "demo", "2000", "--seed", "3", "--batch-size", "64"]);
    let text = stdout(&generated);
    assert!(text.starts_with("sent 2000 records, 32 batches"), "{text}");
    let documents = number_after(&text, "documents after replay: ");
    let recovered = suite.run(&["recover", "demo"]);
    let report = stdout(&recovered);
    assert_eq!(number_after(&report, "recovered demo: "), 2000, "{report}");
    assert_eq!(
        number_after(&report, "\ndocuments after replay: "),
        documents,
        "{report}"
    );

    let spread = suite.run(&[
        "generate",
        "load",
        "3000",
        "--indexes",
        "3",
        "--connections",
        "3",
        "--record-bytes",
        "300",
        "--seed",
        "8",
    ]);
    let text = stdout(&spread);
    let mut records = 0;
    for i in 0..3 {
        let code = format!("load-{i}");
        let expected = number_after(&text, &format!("  {code}: "));
        let report = stdout(&suite.run(&["recover", &code, "--retry"]));
        records += number_after(&report, &format!("recovered {code}: "));
        assert_eq!(
            number_after(&report, "\ndocuments after replay: "),
            expected,
            "{code}: {report}"
        );
    }
    assert_eq!(records, 3000);
}

// Proves the log manager commands: once the writer's raw segments roll and are dealt, `indexes list` shows
// the index, `info` its segments, `raw` the dealer's position, and `optimize`/`queue`/`delete` are answered.
#[test]
fn indexes_commands_show_a_dealt_index() {
    let suite = Suite::start(&[
        "writer.segment_size_bytes=262144",
        "writer.batch_bytes_max=131072",
    ]);
    let generated = suite.run(&[
        "generate",
        "dealt",
        "400",
        "--record-bytes",
        "1000",
        "--seed",
        "2",
    ]);
    let documents = number_after(&stdout(&generated), "documents after replay: ");
    // The dealer creates the index's directory (what `list` shows) before it renames segments into it.
    let deadline = Instant::now() + WAIT_MAX;
    let info = loop {
        let list = stdout(&suite.run(&["indexes", "list"]));
        if list.lines().any(|l| l == "dealt") {
            let info = stdout(&suite.run(&["indexes", "info", "dealt"]));
            if !info.contains("no per-index segments yet") {
                break info;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never dealt: {list:?}\n{}",
            suite.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(info.starts_with("index dealt: "), "{info}");
    assert!(info.contains("sorted  "), "{info}");
    let json: Value =
        serde_json::from_slice(&suite.run(&["indexes", "info", "dealt", "--json"]).stdout).unwrap();
    assert!(json["unoptimized_record_count"].as_i64().unwrap() > 0, "{json}");
    let raw = stdout(&suite.run(&["indexes", "raw"]));
    assert!(raw.starts_with("raw log: dealt up to sequence "), "{raw}");
    assert!(number_after(&raw, "dealt up to sequence ") > 0, "{raw}");
    let queued = stdout(&suite.run(&["indexes", "optimize", "dealt", "--priority", "-1"]));
    assert_eq!(
        queued.trim(),
        "queued dealt for optimization (priority -1, score 0)"
    );
    suite.run(&["indexes", "queue"]);
    // Whatever was dealt, sorted or optimized meanwhile (compacting records), a replay gives every document.
    let report = stdout(&suite.run(&["recover", "dealt", "--retry"]));
    assert!(number_after(&report, "recovered dealt: ") <= 400, "{report}");
    assert_eq!(
        number_after(&report, "\ndocuments after replay: "),
        documents,
        "{report}"
    );
    let missing = suite
        .logtank()
        .args(["indexes", "info", "nope"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("refused get_index_log_info: index \"nope\" does not exist"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(
        stdout(&suite.run(&["indexes", "delete", "dealt"])).trim(),
        "queued dealt for deletion"
    );
}

// Proves a server's refusal reaches the user as the server's message with a non-zero exit: an unknown
// index, and a host that is no longer the master.
#[test]
fn server_errors_are_printed_and_fail() {
    let suite = Suite::start(&[]);
    let output = suite.logtank().args(["read", "ghost"]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refused read_page \"ghost\": index \"ghost\" does not exist on this host"),
        "{}",
        stderr(&output)
    );
    suite.run(&["generate", "g", "10"]);
    std::fs::remove_file(suite.root.join("master")).unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    let err = loop {
        let output = suite.logtank().args(["recover", "g"]).output().unwrap();
        if !output.status.success() {
            break stderr(&output);
        }
        assert!(
            Instant::now() < deadline,
            "still served without the master marker"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(err.contains("not the master"), "{err}");
    assert!(err.contains("recovery of \"g\" stopped after 0 records"), "{err}");
}

// Proves `tail` prints only what arrives after it started, from several indexes, including an index that
// did not exist when it started.
#[test]
fn tail_follows_new_records() {
    let suite = Suite::start(&[]);
    suite.run(&["generate", "old", "50", "--index", "t1"]);
    let mut tail = suite
        .logtank()
        .args(["tail", "t1", "t2", "--interval-ms", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // t2 does not exist yet: tail says it waits for it (on stderr) once it has caught up.
    let err = tail.stderr.take().unwrap();
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let waiting = erx.recv_timeout(WAIT_MAX).unwrap();
    assert!(
        waiting.contains("\"t2\" does not exist on this host; waiting for it"),
        "{waiting}"
    );

    let mut expected = Vec::new();
    for round in 0..3 {
        let mut lines = Vec::new();
        for (code, docid) in [("t1", format!("n{round}")), ("t2", format!("m{round}"))] {
            lines.push(format!(
                "{{\"index_code\": \"{code}\", \"docid\": \"{docid}\", \"fields\": {{\"r\": \"{round}\"}}}}"
            ));
            expected.push((code.to_string(), docid));
        }
        let mut send = suite
            .logtank()
            .arg("send")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        send.stdin
            .take()
            .unwrap()
            .write_all(lines.join("\n").as_bytes())
            .unwrap();
        assert!(send.wait().unwrap().success());
        std::thread::sleep(Duration::from_millis(120));
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let line = rx
            .recv_timeout(WAIT_MAX)
            .unwrap_or_else(|_| panic!("tail printed only {got:?}"));
        let v: Value = serde_json::from_str(&line).unwrap();
        got.push((
            v["index_code"].as_str().unwrap().to_string(),
            v["docid"].as_str().unwrap().to_string(),
        ));
    }
    // Per index in order; nothing of the 50 old records; nothing twice.
    for code in ["t1", "t2"] {
        let of = |v: &Vec<(String, String)>| v.iter().filter(|(c, _)| c == code).cloned().collect::<Vec<_>>();
        assert_eq!(of(&got), of(&expected));
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "tail printed more than was sent"
    );
    tail.kill().unwrap();
    tail.wait().unwrap();
}

// Proves `status` shows one line per daemon from its /status (down for one that does not answer, exit 1)
// and the marker files.
#[test]
fn status_shows_daemons_and_markers() {
    let suite = Suite::start(&[]);
    let output = suite
        .logtank()
        .args(["status", "--writer-admin", &suite.writer_admin.to_string()])
        .args(["--indexes-admin", &suite.indexes_admin.to_string()])
        .args(["--coordd-admin", "127.0.0.1:1", "--data-root"])
        .arg(&suite.root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "coordd is not running");
    let text = stdout(&output);
    let lines: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k, v.trim())))
        .collect();
    assert!(lines["coordd"].contains("down ("), "{text}");
    assert!(lines["writer"].contains("running, role "), "{text}");
    assert!(lines["writer"].contains("writable"), "{text}");
    assert!(lines["indexes"].contains("running, role master"), "{text}");
    assert!(
        lines["markers"].ends_with("master yes, safe_to_read yes, readonly no"),
        "{text}"
    );
}

// Proves fan-out (`--writer A,B,C --required N`): every writer gets every batch; with one writer gone,
// `--required 2` still succeeds when it is optional and reports the batches it missed, and `--required 3`
// fails naming it, for `generate` and `send` alike.
#[test]
fn fan_out_sends_every_batch_to_every_writer_and_reports_optional_failures() {
    let machines = [Suite::start(&[]), Suite::start(&[]), Suite::start(&[])];
    let all: Vec<String> = machines.iter().map(|m| m.writer.to_string()).collect();
    let all = all.join(",");
    let text = stdout(&machines[0].run(&["generate", "fan", "600", "--seed", "5", "--writer", &all]));
    assert!(text.starts_with("sent 600 records"), "{text}");
    let documents = number_after(&text, "documents after replay: ");
    for m in &machines {
        let report = stdout(&m.run(&["recover", "fan", "--retry"]));
        assert_eq!(number_after(&report, "recovered fan: "), 600, "{report}");
        assert_eq!(
            number_after(&report, "\ndocuments after replay: "),
            documents,
            "{report}"
        );
    }

    let [a, b, c] = machines;
    let gone = c.writer.to_string();
    drop(c);
    let output = a.run(&[
        "generate",
        "half",
        "300",
        "--batch-size",
        "100",
        "--writer",
        &all,
        "--required",
        "2",
    ]);
    let err = stderr(&output);
    assert!(
        err.contains(&format!("optional writer {gone} missed 3 batches")),
        "{err}"
    );
    for m in [&a, &b] {
        let report = stdout(&m.run(&["recover", "half", "--retry"]));
        assert_eq!(number_after(&report, "recovered half: "), 300, "{report}");
    }

    let output = a
        .logtank()
        .args(["generate", "strict", "100", "--writer", &all, "--required", "3"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains(&gone), "names the writer that is gone: {err}");

    let mut child = a
        .logtank()
        .args([
            "send",
            "--index",
            "sent",
            "--batch-size",
            "1",
            "--writer",
            &all,
            "--required",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"docid\": \"x\"}\n{\"docid\": \"y\"}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("optional writer {gone} missed 2 batches")));
    let file = a.root.join("one.json");
    std::fs::write(&file, "{\"docid\": \"z\"}\n").unwrap();
    let output = a
        .logtank()
        .args(["send", "--index", "sent", "--writer", &all, "--required", "3"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&gone), "{}", stderr(&output));
    let output = a
        .logtank()
        .args(["send", "--writer", &all, "--required", "4"])
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("required must be 1 to 3"),
        "{}",
        stderr(&output)
    );
}
