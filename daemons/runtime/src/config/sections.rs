//! The config sections every daemon embeds (`[server]`, `[admin]`, `[log]`, `[io]`) and the
//! [`DaemonConfig`] trait through which the runtime finds them in a daemon's own config struct.
//!
//! Values that can be checked without touching the system (listen addresses, log level, syslog address and
//! facility, `io.level`) are checked while deserialising, so a bad value is reported with file, line and key
//! like a wrong type is. Checks that need the whole config belong in [`DaemonConfig::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::ioprio::{IoClass, IOPRIO_LEVEL_MAX};

/// `server.shutdown_timeout_ms` when the config does not say: long enough to fsync a journal and finish
/// in-flight requests, shorter than systemd's default `TimeoutStopSec=` (90 s) so we report the overrun
/// ourselves instead of being killed.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

/// `[server]`: the daemon's service listener, its data, and how long shutdown may take.
///
/// The defaults differ per daemon (writer 15000, reader 15100, …), so daemons build theirs with
/// [`ServerConfig::new`] in their config's `Default`; [`ServerConfig::default`] is only the fallback serde
/// needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `IP:PORT` or `HOST:PORT` to accept clients on.
    #[serde(deserialize_with = "listen_address")]
    pub listen: String,
    /// Root directory of the daemon's data.
    pub data_root: PathBuf,
    /// How long draining, flushing and fsyncing may take after SIGTERM before the daemon exits 1.
    pub shutdown_timeout_ms: u64,
}

impl ServerConfig {
    pub fn new(listen: impl Into<String>, data_root: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: listen.into(),
            data_root: data_root.into(),
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new("127.0.0.1:0", "/data")
    }
}

/// `[admin]`: the HTTP listener for `/ping`, `/metrics` and `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    #[serde(deserialize_with = "listen_address")]
    pub listen: String,
}

impl AdminConfig {
    pub fn new(listen: impl Into<String>) -> Self {
        AdminConfig {
            listen: listen.into(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig::new("127.0.0.1:0")
    }
}

/// `[log]`: verbosity and optional forwarding to syslog. Both change at reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `off`, `error`, `warn`, `info`, `debug` or `trace`.
    #[serde(deserialize_with = "log_level")]
    pub level: String,
    /// `[log.syslog]`: forward every event to a syslog server as well (RFC 5424).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogConfig>,
}

impl LogConfig {
    /// The level as the `log` crate wants it. The string was checked while deserialising; a struct built
    /// in code with a bad level falls back to `info` rather than silencing the daemon.
    pub fn level_filter(&self) -> log::LevelFilter {
        log::LevelFilter::from_str(&self.level).unwrap_or(log::LevelFilter::Info)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            syslog: None,
        }
    }
}

/// `[log.syslog]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// `udp://HOST:PORT`, `tcp://HOST:PORT` or `unix:///dev/log`.
    #[serde(deserialize_with = "syslog_address")]
    pub address: String,
    /// Syslog facility name: `daemon`, `user`, `local0` … `local7`, …
    #[serde(deserialize_with = "syslog_facility")]
    pub facility: String,
    /// APP-NAME in the RFC 5424 header; `logtank-<daemon>` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            address: "unix:///dev/log".to_owned(),
            facility: "daemon".to_owned(),
            app_name: None,
        }
    }
}

/// A parsed `log.syslog.address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddress {
    /// `HOST:PORT`, resolved when connecting.
    Udp(String),
    /// `HOST:PORT`; messages are framed by octet counting (RFC 6587), as RFC 5424 over TCP needs.
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for SyslogAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH";
        if let Some(rest) = s.strip_prefix("udp://") {
            check_listen_address(rest).map_err(|e| format!("{e}; {expected}"))?;
            Ok(SyslogAddress::Udp(rest.to_owned()))
        } else if let Some(rest) = s.strip_prefix("tcp://") {
            check_listen_address(rest).map_err(|e| format!("{e}; {expected}"))?;
            Ok(SyslogAddress::Tcp(rest.to_owned()))
        } else if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "invalid syslog address '{s}': the unix socket path must be absolute"
                ));
            }
            Ok(SyslogAddress::Unix(PathBuf::from(rest)))
        } else {
            Err(format!("invalid syslog address '{s}'; {expected}"))
        }
    }
}

/// `[io]`: the IO scheduling class of the daemon's threads, set on the main thread before the async runtime
/// starts so that every worker inherits it (see [`crate::ioprio`]). Changes take effect at restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoConfig {
    /// `none` (leave what systemd's `IOSchedulingClass=` set), `realtime`, `best-effort` or `idle`.
    pub class: IoClass,
    /// 0 (highest) to 7, for `realtime` and `best-effort`.
    #[serde(deserialize_with = "io_level")]
    pub level: u8,
}

impl Default for IoConfig {
    fn default() -> Self {
        // 4 is the kernel's default best-effort level, so the default changes nothing.
        IoConfig {
            class: IoClass::None,
            level: 4,
        }
    }
}

/// A value that type checks but makes no sense, found by [`DaemonConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue {
    /// Dotted key path, e.g. `journal.segment_size_bytes`.
    pub key: String,
    pub message: String,
}

/// Implemented by each daemon's config struct so the runtime can find the shared sections in it.
pub trait DaemonConfig {
    fn server(&self) -> &ServerConfig;
    fn server_mut(&mut self) -> &mut ServerConfig;
    fn admin(&self) -> &AdminConfig;
    fn admin_mut(&mut self) -> &mut AdminConfig;
    fn log(&self) -> &LogConfig;
    fn io(&self) -> &IoConfig;

    /// Settings that parse but make no sense (STYLE #13), printed by `--check-config` and logged at start.
    /// The runtime adds its own for the shared sections ([`common_warnings`]).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Checks that need more than one value; an error stops the daemon with exit code 78.
    fn validate(&self) -> Result<(), InvalidValue> {
        Ok(())
    }
}

/// Implements [`DaemonConfig`] for a config struct whose shared sections are the fields `server`, `admin`,
/// `log` and `io`, so no daemon writes the six accessors again. Extra trait items (`warnings`, `validate`)
/// go in the braces:
///
/// ```text
/// logtank_runtime::impl_daemon_config!(WriterConfig {
///     fn validate(&self) -> Result<(), InvalidValue> { … }
/// });
/// ```
#[macro_export]
macro_rules! impl_daemon_config {
    ($config:ty { $($extra:tt)* }) => {
        impl $crate::config::DaemonConfig for $config {
            fn server(&self) -> &$crate::config::ServerConfig {
                &self.server
            }
            fn server_mut(&mut self) -> &mut $crate::config::ServerConfig {
                &mut self.server
            }
            fn admin(&self) -> &$crate::config::AdminConfig {
                &self.admin
            }
            fn admin_mut(&mut self) -> &mut $crate::config::AdminConfig {
                &mut self.admin
            }
            fn log(&self) -> &$crate::config::LogConfig {
                &self.log
            }
            fn io(&self) -> &$crate::config::IoConfig {
                &self.io
            }
            $($extra)*
        }
    };
    ($config:ty) => {
        $crate::impl_daemon_config!($config {});
    };
}

/// Warnings about the shared sections of any daemon's config.
pub fn common_warnings<C: DaemonConfig + ?Sized>(config: &C) -> Vec<String> {
    let mut warnings = Vec::new();
    let (server, admin, io) = (config.server(), config.admin(), config.io());
    if server.listen == admin.listen && !server.listen.ends_with(":0") {
        warnings.push(format!(
            "server.listen and admin.listen are both '{}'; the second listener will fail to bind",
            server.listen
        ));
    }
    if server.shutdown_timeout_ms == 0 {
        warnings.push(
            "server.shutdown_timeout_ms = 0 leaves no time to drain; every shutdown will count as failed"
                .to_owned(),
        );
    }
    match io.class {
        IoClass::None | IoClass::Idle if io.level != IoConfig::default().level => warnings.push(format!(
            "io.level = {} has no effect with io.class = '{}'",
            io.level,
            io.class.name()
        )),
        IoClass::Realtime => warnings.push(
            "io.class = 'realtime' needs CAP_SYS_NICE; without it the daemon keeps its inherited class. \
             IOSchedulingClass=realtime in the unit works without the capability"
                .to_owned(),
        ),
        _ => {}
    }
    warnings
}

/// Checks a listen address without resolving it: `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`.
///
/// Host names are accepted because the bind resolves them; resolving here would make config checks depend
/// on DNS.
pub fn check_listen_address(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let valid_host = |host: &str| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    match s.rsplit_once(':') {
        Some((host, port)) if valid_host(host) && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "invalid address '{s}', expected IP:PORT, [IPv6]:PORT or HOST:PORT"
        )),
    }
}

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_listen_address(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if log::LevelFilter::from_str(&s).is_err() {
        return Err(serde::de::Error::custom(format!(
            "invalid log level '{s}', expected one of off, error, warn, info, debug, trace"
        )));
    }
    Ok(s)
}

fn syslog_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    SyslogAddress::from_str(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn syslog_facility<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if syslog::Facility::from_str(&s).is_err() {
        return Err(serde::de::Error::custom(format!(
            "unknown syslog facility '{s}', expected e.g. daemon, user, local0 … local7"
        )));
    }
    Ok(s)
}

fn io_level<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let level = u8::deserialize(d)?;
    if level > IOPRIO_LEVEL_MAX {
        return Err(serde::de::Error::custom(format!(
            "{level} is out of range, expected 0 (highest) to {IOPRIO_LEVEL_MAX}"
        )));
    }
    Ok(level)
}
