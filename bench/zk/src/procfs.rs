//! What the report says about processes: a server's RSS and CPU time from `/proc/PID/`, the load tool's own
//! CPU time from `getrusage`. Missing or unreadable values are `None`, never an error: the server may exit.

use nix::sys::resource::{getrusage, UsageWho};
use nix::unistd::{sysconf, SysconfVar};

/// `VmRSS` of `/proc/PID/status`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU seconds of every thread of process `pid` so far (`utime`, `stime` of `/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is rest[0], so utime (14) and stime (15) are rest[11] and rest[12].
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|&h| h > 0)?;
    Some(ticks as f64 / hz as f64)
}

/// This process's user + system CPU seconds so far.
pub fn own_cpu_seconds() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let (a, b) = (u.user_time(), u.system_time());
        a.tv_sec() as f64 + b.tv_sec() as f64 + (a.tv_usec() + b.tv_usec()) as f64 / 1e6
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_this_process() {
        // Our own pid has an RSS and a CPU time, and a pid that cannot exist has neither.
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(own_cpu_seconds() >= 0.0);
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}
