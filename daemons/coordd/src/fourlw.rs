//! Four-letter words (`ruok`, `srvr`, `stat`, `mntr`, `conf`, `cons`, `envi`, `wchs`, `wchc`, `wchp`,
//! `isro`, `dirs`, `dump`), formatted as ZooKeeper 3.8 formats them, because monitoring scripts and kazoo
//! (`server_version()` reads `envi`) parse that text.

use std::fmt::Write as _;

use crate::core::Core;

/// The ZooKeeper version coordd reports: the protocol level it implements.
pub const ZOOKEEPER_COMPAT_VERSION: &str = "3.8.0";

fn version_line() -> String {
    format!(
        "{ZOOKEEPER_COMPAT_VERSION}-logtank-coordd-{}",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn answer(word: &str, core: &Core) -> String {
    let st = core.status();
    let cfg = core.config();
    let mut s = String::new();
    match word {
        "ruok" => s.push_str("imok"),
        "isro" => s.push_str("rw"),
        "srvr" | "stat" => {
            let _ = writeln!(s, "Zookeeper version: {}, built on logtank", version_line());
            if word == "stat" {
                s.push_str("Clients:\n");
                for (peer, _, received, sent) in core.connections() {
                    let _ = writeln!(s, " /{peer}[1](queued=0,recved={received},sent={sent})");
                }
                s.push('\n');
            }
            let _ = writeln!(s, "Latency min/avg/max: 0/0.0/0");
            let _ = writeln!(s, "Received: {}", st.received);
            let _ = writeln!(s, "Sent: {}", st.sent);
            let _ = writeln!(s, "Connections: {}", st.connections);
            let _ = writeln!(s, "Outstanding: {}", st.outstanding);
            let _ = writeln!(s, "Zxid: 0x{:x}", st.zxid);
            let _ = writeln!(s, "Mode: standalone");
            let _ = writeln!(s, "Node count: {}", st.znodes);
        }
        "mntr" => {
            let rows: [(&str, String); 14] = [
                ("zk_version", version_line()),
                ("zk_server_state", "standalone".into()),
                ("zk_packets_received", st.received.to_string()),
                ("zk_packets_sent", st.sent.to_string()),
                ("zk_num_alive_connections", st.connections.to_string()),
                ("zk_outstanding_requests", st.outstanding.to_string()),
                ("zk_znode_count", st.znodes.to_string()),
                ("zk_watch_count", st.watches.to_string()),
                ("zk_ephemerals_count", st.ephemerals.to_string()),
                ("zk_approximate_data_size", st.approximate_data_bytes.to_string()),
                ("zk_open_file_descriptor_count", open_fds().to_string()),
                ("zk_max_file_descriptor_count", max_fds().to_string()),
                ("zk_global_sessions", st.sessions.to_string()),
                ("zk_last_proposal_size", "-1".into()),
            ];
            for (k, v) in rows {
                let _ = writeln!(s, "{k}\t{v}");
            }
        }
        "conf" => {
            let _ = writeln!(
                s,
                "clientPort={}",
                cfg.server.common.listen.rsplit(':').next().unwrap_or("")
            );
            let _ = writeln!(s, "clientPortAddress={}", cfg.server.common.listen);
            let _ = writeln!(s, "dataDir={}", cfg.server.data_dir().display());
            let _ = writeln!(
                s,
                "dataLogDir={}",
                crate::persist::log_dir(&cfg.server.data_dir()).display()
            );
            let _ = writeln!(s, "tickTime={}", cfg.server.tick_ms);
            let _ = writeln!(s, "maxClientCnxns={}", cfg.limits.connections_per_ip_max);
            let _ = writeln!(s, "minSessionTimeout={}", cfg.server.min_session_timeout_ms());
            let _ = writeln!(s, "maxSessionTimeout={}", cfg.server.max_session_timeout_ms());
            let _ = writeln!(s, "serverId=0");
        }
        "cons" => {
            for (peer, session, received, sent) in core.connections() {
                let sid = session.map_or(String::from("-"), |s| format!("0x{s:x}"));
                let _ = writeln!(s, " /{peer}[1](queued=0,recved={received},sent={sent},sid={sid})");
            }
            s.push('\n');
        }
        "envi" => {
            s.push_str("Environment:\n");
            let _ = writeln!(s, "zookeeper.version={}, built on logtank", version_line());
            let _ = writeln!(s, "host.name={}", hostname());
            let _ = writeln!(s, "os.name=Linux");
            let _ = writeln!(
                s,
                "user.dir={}",
                std::env::current_dir().unwrap_or_default().display()
            );
            let _ = writeln!(s, "server.implementation=logtank-coordd");
        }
        "wchs" => {
            let w = core.watches();
            let _ = writeln!(
                s,
                "{} connections watching {} paths",
                w.sessions_watching(),
                w.paths_watched()
            );
            let _ = writeln!(s, "Total watches:{}", w.total());
        }
        "wchc" => {
            for (session, paths) in core.watches().by_session() {
                let _ = writeln!(s, "0x{session:x}");
                for p in paths {
                    let _ = writeln!(s, "\t{p}");
                }
            }
        }
        "wchp" => {
            let mut by_path: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
            for (session, paths) in core.watches().by_session() {
                for p in paths {
                    by_path.entry(p.to_string()).or_default().push(session);
                }
            }
            for (p, sessions) in by_path {
                let _ = writeln!(s, "{p}");
                for session in sessions {
                    let _ = writeln!(s, "\t0x{session:x}");
                }
            }
        }
        "dirs" => {
            let dir = cfg.server.data_dir();
            let _ = writeln!(s, "datadir_size: {}", dir_size(&dir));
            let _ = writeln!(s, "logdir_size: {}", dir_size(&crate::persist::log_dir(&dir)));
        }
        "dump" => {
            let _ = writeln!(s, "SessionTracker dump:");
            let _ = writeln!(s, "Global sessions: {}", st.sessions);
            let _ = writeln!(s, "ephemeral nodes dump:");
            let _ = writeln!(s, "Ephemeral count: {}", st.ephemerals);
        }
        other => {
            let _ = writeln!(s, "{other} is not executed because it is not in the whitelist.");
        }
    }
    s
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn max_fds() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
