//! `logtank bench zk` as a real process against real servers (ZooKeeper, and coordd when `LOGTANK_COORDD`
//! is set): every phase completes without errors and reports its rate as JSON.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use logtank_coord::test_support::for_each_server;

#[test]
fn bench_zk_runs_every_phase_without_errors() {
    for_each_server(|server| {
        let out = Command::new(env!("CARGO_BIN_EXE_logtank"))
            .args([
                "bench",
                "zk",
                "--server",
                &server.connect_string(),
                "--json",
                "--quiet",
            ])
            .args(["--ops", "500", "--sessions", "2", "--outstanding", "4"])
            .args(["--phases", "create,set,get,mixed,delete"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            server.kind().name(),
            String::from_utf8_lossy(&out.stderr),
            server.log_tail()
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let phases = report["phases"].as_array().unwrap();
        assert_eq!(phases.len(), 5, "{report}");
        for p in phases {
            assert_eq!(p["errors"], 0, "{p}");
            assert!(p["ops_per_sec"].as_f64().unwrap() > 0.0, "{p}");
        }
    });
}
