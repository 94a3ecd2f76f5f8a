//! `[coord]`: where a daemon finds coordination (logtank-coordd or a ZooKeeper ensemble) and how patiently.
//!
//! The connect string is checked while deserialising, so a typo is reported with file, line and key like a
//! wrong type is, instead of as a connection failure at start.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// `coord.servers` when the config does not say: the coordd of this host.
pub const DEFAULT_SERVERS: &str = "127.0.0.1:2181";
/// `coord.session_timeout_ms` when the config does not say. Ephemeral registrations vanish this long after a
/// daemon dies without closing its session; the server clamps it to its own bounds (ZooKeeper: 2 to 20 ticks).
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;
/// `coord.connect_timeout_ms` when the config does not say: long enough to outlast a coordd restarting beside
/// the daemon, short enough that a daemon pointed at the wrong place fails its start visibly.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 30_000;
/// The longest session timeout we ask for; ZooKeeper's own default maximum is 40 s (20 ticks of 2 s).
pub const SESSION_TIMEOUT_MS_MAX: u64 = 600_000;
/// The longest connect string accepted; a list of a few dozen hosts fits comfortably.
pub const SERVERS_BYTES_MAX: usize = 4096;

/// `[coord]`: the coordination servers and the session's timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordConfig {
    /// A ZooKeeper connect string: `host:port[,host:port…][/chroot]`, e.g.
    /// `"zk1:2181,zk2:2181,zk3:2181/logtank"`. With a chroot every logtank path lives under it, so several
    /// suites can share one ensemble; the chroot node is created at connect if missing.
    #[serde(deserialize_with = "connect_string")]
    pub servers: String,
    /// The session timeout asked of the server: how long the server keeps our session (and so our ephemeral
    /// registrations) while it cannot hear from us.
    pub session_timeout_ms: u64,
    /// How long connecting keeps retrying (with capped exponential backoff) before it reports failure.
    pub connect_timeout_ms: u64,
    /// `user:password` of ZooKeeper's `digest` scheme. When set, every session authenticates with it, and
    /// the nodes logtank creates get the ACL `auth:ALL, world:READ` (see [`crate::node_acls`]): any client
    /// may read where the master is, only sessions with these credentials may change it. Every daemon of
    /// the suite that shares the coordination nodes needs the same value. Unset: nodes are `world:ALL`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted",
        deserialize_with = "digest_credentials"
    )]
    pub auth: Option<String>,
}

impl Default for CoordConfig {
    fn default() -> Self {
        CoordConfig {
            servers: DEFAULT_SERVERS.to_string(),
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            auth: None,
        }
    }
}

/// Printed configs (`--check-config`) never show the credentials.
fn redacted<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

fn digest_credentials<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    match s.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() && s.len() <= 1024 => Ok(Some(s)),
        _ => Err(serde::de::Error::custom(
            "coord.auth must be user:password (ZooKeeper's digest scheme), both parts non-empty",
        )),
    }
}

impl CoordConfig {
    /// A config for `servers` with every other key at its default (what the CLI's `--server` builds).
    pub fn with_servers(servers: impl Into<String>) -> Self {
        CoordConfig {
            auth: None,
            servers: servers.into(),
            ..CoordConfig::default()
        }
    }

    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Checks what serde cannot check key by key; `Coord::connect` calls it, daemons may call it from
    /// their `validate` to fail at config load instead.
    pub fn validate(&self) -> Result<(), String> {
        check_connect_string(&self.servers)?;
        if self.session_timeout_ms == 0 || self.session_timeout_ms > SESSION_TIMEOUT_MS_MAX {
            return Err(format!(
                "coord.session_timeout_ms = {} is outside 1..={SESSION_TIMEOUT_MS_MAX}",
                self.session_timeout_ms
            ));
        }
        if self.connect_timeout_ms == 0 {
            return Err("coord.connect_timeout_ms = 0 would give up before the first attempt".into());
        }
        Ok(())
    }
}

/// `[coord]` for a daemon that works without coordination (logtank-writer, logtank-indexes): the keys of
/// [`CoordConfig`], but `servers` may be empty, and is by default: coordination is off unless configured.
/// [`CoordConfig`]'s own default (this host's coordd) suits tools that exist to talk to coordination; a
/// storage daemon must not start looking for a server nobody set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionalCoordConfig {
    /// A ZooKeeper connect string (`host:port[,host:port…][/chroot]`), or empty: no coordination.
    #[serde(deserialize_with = "connect_string_or_empty")]
    pub servers: String,
    pub session_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// See [`CoordConfig::auth`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted",
        deserialize_with = "digest_credentials"
    )]
    pub auth: Option<String>,
}

impl Default for OptionalCoordConfig {
    fn default() -> Self {
        OptionalCoordConfig {
            servers: String::new(),
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            auth: None,
        }
    }
}

impl OptionalCoordConfig {
    /// Whether `servers` names any.
    pub fn is_enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    /// The config to connect with, or `None` when no servers are configured.
    pub fn coord_config(&self) -> Option<CoordConfig> {
        self.is_enabled().then(|| CoordConfig {
            servers: self.servers.clone(),
            session_timeout_ms: self.session_timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            auth: self.auth.clone(),
        })
    }

    /// [`CoordConfig::validate`] when coordination is on; nothing to check when it is off.
    pub fn validate(&self) -> Result<(), String> {
        self.coord_config().map_or(Ok(()), |c| c.validate())
    }
}

/// The chroot part of a connect string (`"/logtank"` in `"zk1:2181/logtank"`), if any.
pub(crate) fn chroot_of(servers: &str) -> Option<&str> {
    let last = servers.rsplit(',').next()?;
    last.find('/').map(|i| &last[i..]).filter(|c| *c != "/")
}

/// Checks a connect string the way the client will read it: comma-separated `host:port`, optional
/// `tcp://` prefixes, and an optional chroot after the last address.
pub fn check_connect_string(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty connect string, expected host:port[,host:port...][/chroot]".into());
    }
    if s.len() > SERVERS_BYTES_MAX {
        return Err(format!("connect string longer than {SERVERS_BYTES_MAX} bytes"));
    }
    let hosts: Vec<&str> = s.split(',').collect();
    let last = hosts.len() - 1;
    for (i, entry) in hosts.iter().enumerate() {
        let mut hostport = entry.strip_prefix("tcp://").unwrap_or(entry);
        if let Some(slash) = hostport.find('/') {
            if i != last {
                return Err(format!(
                    "'{s}': a chroot may only follow the last address ('{entry}')"
                ));
            }
            let chroot = &hostport[slash..];
            if chroot.len() > 1 && (chroot.ends_with('/') || chroot.contains("//")) {
                return Err(format!("'{s}': invalid chroot '{chroot}'"));
            }
            hostport = &hostport[..slash];
        }
        let Some((host, port)) = hostport.rsplit_once(':') else {
            return Err(format!("'{s}': '{hostport}' is not host:port"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("'{s}': '{hostport}' is not host:port"));
        }
    }
    Ok(())
}

fn connect_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_connect_string(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn connect_string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !s.is_empty() {
        check_connect_string(&s).map_err(serde::de::Error::custom)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an empty section gives the documented defaults, so `[coord]` may be omitted.
    #[test]
    fn empty_section_is_the_defaults() {
        let c: CoordConfig = toml::from_str("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, CoordConfig::default());
        assert_eq!(c.servers, "127.0.0.1:2181");
        assert_eq!(c.session_timeout_ms, 10_000);
        assert!(c.validate().is_ok());
    }

    // Proves a typo in a key is refused rather than silently ignored.
    #[test]
    fn unknown_key_is_refused() {
        let e = toml::from_str::<CoordConfig>("server = \"a:1\"").expect_err("unknown key accepted");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    // Proves the connect-string check accepts what ZooKeeper accepts and refuses the usual mistakes.
    #[test]
    fn connect_strings() {
        for good in [
            "127.0.0.1:2181",
            "zk1:2181,zk2:2181,zk3:2181/logtank",
            "tcp://zk1:2181/a/b",
            "[::1]:2181",
            "h:1/",
        ] {
            assert!(check_connect_string(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "zk1",
            "zk1:",
            "zk1:0",
            "zk1:99999",
            "a:1/x,b:2",
            "a:1/x/",
            ":2181",
        ] {
            assert!(check_connect_string(bad).is_err(), "{bad}");
        }
        let e = toml::from_str::<CoordConfig>("servers = \"zk1\"").expect_err("bad servers accepted");
        assert!(e.to_string().contains("not host:port"), "{e}");
    }

    // Proves the optional section is off when empty (timeouts still at their defaults), on with servers,
    // checks the connect string only when one is given, and validates timeouts only when on.
    #[test]
    fn optional_section_is_off_unless_servers_are_set() {
        let off: OptionalCoordConfig = toml::from_str("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(off, OptionalCoordConfig::default());
        assert!(!off.is_enabled() && off.coord_config().is_none());
        assert_eq!(off.session_timeout_ms, DEFAULT_SESSION_TIMEOUT_MS);
        assert!(off.validate().is_ok());
        let quiet = OptionalCoordConfig {
            session_timeout_ms: 0,
            ..OptionalCoordConfig::default()
        };
        assert!(quiet.validate().is_ok(), "nothing to check while off");

        let on: OptionalCoordConfig =
            toml::from_str("servers = \"127.0.0.1:2181/logtank\"\nconnect_timeout_ms = 5")
                .unwrap_or_else(|e| panic!("{e}"));
        let c = on.coord_config().expect("coordination configured");
        assert_eq!(c.servers, "127.0.0.1:2181/logtank");
        assert_eq!(
            (c.session_timeout_ms, c.connect_timeout_ms),
            (DEFAULT_SESSION_TIMEOUT_MS, 5)
        );
        let bad = OptionalCoordConfig {
            session_timeout_ms: 0,
            ..on
        };
        assert!(bad.validate().is_err());

        let e = toml::from_str::<OptionalCoordConfig>("servers = \"zk1\"").expect_err("bad servers accepted");
        assert!(e.to_string().contains("not host:port"), "{e}");
        let e = toml::from_str::<OptionalCoordConfig>("server = \"\"").expect_err("unknown key accepted");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn chroot_is_found_after_the_last_address() {
        assert_eq!(chroot_of("a:1,b:2/x/y"), Some("/x/y"));
        assert_eq!(chroot_of("a:1,b:2"), None);
        assert_eq!(chroot_of("a:1/"), None);
    }

    #[test]
    fn timeouts_are_checked() {
        let zero_session = CoordConfig {
            session_timeout_ms: 0,
            ..CoordConfig::default()
        };
        assert!(zero_session.validate().is_err());
        let zero_connect = CoordConfig {
            connect_timeout_ms: 0,
            ..CoordConfig::default()
        };
        assert!(zero_connect.validate().is_err());
    }
}
