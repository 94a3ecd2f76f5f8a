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

/// Jiffies the whole machine spent busy (user, nice, system, irq, softirq, steal) and in total, and its CPU
/// count, from `/proc/stat`: the CPU other processes used during a phase is this minus the server's and ours.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
    cpus: usize,
}

pub fn machine_cpu() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let f: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let total = busy + get(3) + get(4);
    let cpus = lines.filter(|l| l.starts_with("cpu")).count();
    Some(MachineCpu { busy, total, cpus })
}

/// The machine's CPU use between two samples, in percent of one CPU (200 = two CPUs busy).
pub fn machine_cpu_percent(before: MachineCpu, after: MachineCpu) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|&t| t > 0)?;
    let busy = after.busy.saturating_sub(before.busy);
    Some(100.0 * after.cpus as f64 * busy as f64 / total as f64)
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
        let a = machine_cpu().unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {}
        let b = machine_cpu().unwrap();
        let pct = machine_cpu_percent(a, b).unwrap_or(0.0);
        assert!((0.0..=100.0 * a.cpus as f64 + 1e-9).contains(&pct), "{pct}");
        assert_eq!(rss_bytes(u32::MAX), None);
    }
}
