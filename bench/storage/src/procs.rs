//! The servers a benchmark runs (logtank-writer, redis-server, logtank-indexes): started as child processes
//! on free loopback ports with their output in a log file, waited for by connecting, stopped with SIGTERM
//! (SIGKILL after a grace period, and on drop, so a failed benchmark leaves nothing running). Also what the
//! report says about processes: CPU seconds from `/proc`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a server may take from spawn to accepting connections (the writer opens and scans its journal,
/// the indexes daemon its data root).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a server's log shown when it fails.
const LOG_TAIL_BYTES: u64 = 4096;
/// The largest HTTP response read from an admin port (`/status` is a few hundred bytes).
const HTTP_RESPONSE_BYTES_MAX: u64 = 1 << 20;

/// A loopback port nobody listens on right now (bound and released: another process could take it before
/// the server binds it, which on this machine only makes the start fail loudly).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `name` in `dir`, or an error saying how to build it.
pub fn binary(dir: &Path, name: &str, build: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it first ({build}) or pass --bin-dir",
            path.display()
        );
    }
    Ok(path)
}

/// A program on PATH, or an error saying which package has it.
pub fn on_path(name: &str, package: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH: apt-get install -y {package}"))
}

/// A running server; killed and reaped on drop.
#[derive(Debug)]
pub struct Server {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Starts `program args…` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[OsString], log: &Path) -> Result<Server> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Server {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until `addr` accepts a connection; fails if the server exits first or takes longer than
    /// [`START_TIMEOUT`].
    pub fn wait_listening(&mut self, addr: SocketAddr) -> Result<()> {
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{} exited ({status}) before listening on {addr}:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to [`STOP_TIMEOUT`] (SIGKILL after). Returns how long the exit took.
    pub fn stop(mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let started = Instant::now();
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("note: {} exited with {status} after SIGTERM", self.name);
                }
                return Ok(started.elapsed());
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM: killed",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let Ok(mut f) = File::open(&self.log) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut buf = String::new();
        use std::io::Seek;
        let _ = f.seek(std::io::SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let _ = f.take(LOG_TAIL_BYTES).read_to_string(&mut buf);
        buf
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` over HTTP/1.0 on `addr`; the body of a 200 response.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    s.take(HTTP_RESPONSE_BYTES_MAX).read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path} on {addr}: no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path} on {addr}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// User + system CPU seconds of process `pid` so far, its reaped children included (Redis forks to rewrite
/// its AOF); `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // Field 3 (state) is fields[0]: utime, stime, cutime, cstime (14–17) are fields[11..15].
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Some(ticks as f64 / clock_ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux architecture we run on (the kernel's `USER_HZ`).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// The whole machine's busy jiffies and its CPU count (`/proc/stat`).
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    pub cpus: usize,
}

impl MachineCpu {
    pub fn now() -> Option<MachineCpu> {
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
        let cpus = lines.filter(|l| l.starts_with("cpu")).count();
        Some(MachineCpu { busy, cpus })
    }

    /// CPU seconds the machine was busy between `self` and `later`, over all CPUs.
    pub fn busy_seconds_until(&self, later: &MachineCpu) -> f64 {
        // The jiffies of the `cpu` line are summed over all CPUs.
        later.busy.saturating_sub(self.busy) as f64 / clock_ticks_per_second()
    }
}

/// How quiet the machine must be before a measurement starts (`--quiet-wait-s`, `--quiet-cpu-percent`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Quiet {
    /// Before each measurement wait up to this long for the machine to be quiet (0 = do not wait). The
    /// machine is shared: other engineers' builds take CPU the servers would have had.
    #[arg(long, default_value_t = 0)]
    pub quiet_wait_s: u64,
    /// "Quiet": the whole machine busy at most this much (percent of one CPU) over 2 s.
    #[arg(long, default_value_t = 50.0)]
    pub quiet_cpu_percent: f64,
}

impl Quiet {
    /// Waits until the machine is quiet or the wait is over; returns the last 2-s busy percentage seen.
    pub fn wait(&self, what: &str) -> Option<f64> {
        if self.quiet_wait_s == 0 {
            return None;
        }
        let until = Instant::now() + Duration::from_secs(self.quiet_wait_s);
        loop {
            let a = MachineCpu::now()?;
            std::thread::sleep(Duration::from_secs(2));
            let b = MachineCpu::now()?;
            let busy = 100.0 * a.busy_seconds_until(&b) / 2.0;
            if busy <= self.quiet_cpu_percent {
                return Some(busy);
            }
            if Instant::now() >= until {
                eprintln!(
                    "{what}: the machine is still {busy:.0} % busy after {} s: measuring anyway",
                    self.quiet_wait_s
                );
                return Some(busy);
            }
        }
    }
}

/// The 1-minute load average, for the report's note on how quiet the machine was.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_this_process_and_the_machine() {
        // Our own pid has a CPU time, a pid that cannot exist has none, and the machine's busy time over
        // a short spin is between 0 and all its CPUs.
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
        assert_eq!(cpu_seconds(u32::MAX), None);
        let started = Instant::now();
        let a = MachineCpu::now().unwrap();
        while started.elapsed() < Duration::from_millis(100) {}
        let b = MachineCpu::now().unwrap();
        let wall = started.elapsed().as_secs_f64();
        let busy = a.busy_seconds_until(&b);
        // Jiffies are 10 ms: allow one per CPU of rounding.
        assert!(
            busy >= 0.0 && busy <= (wall + 0.01) * a.cpus as f64,
            "{busy} in {wall} s"
        );
        assert!(load_average().is_some());
    }
}
