//! Configuration files: TOML, unknown keys rejected, errors that name the file, the line and the key.
//!
//! An operator who edits `/etc/logtank/writer.toml` and restarts the daemon must be told exactly what is
//! wrong, before anything else happens, so a typo never silently becomes a default (STYLE #13).
//!
//! A configuration is built in three layers, each applied onto the one before:
//!
//! 1. the daemon's built-in defaults (its config struct's `Default`), serialised to a TOML table;
//! 2. the file, if it exists (a missing *default* file means "built-in defaults only"; a missing file
//!    given with `--config` is an error);
//! 3. command-line overrides (`--listen`, `--admin-listen`, `--data-root`, then every `--set KEY=VALUE`).
//!
//! Tables merge key by key and every other value (including arrays) replaces the one below it. Merging onto
//! the serialised defaults, rather than relying on `#[serde(default)]` alone, is what lets a file that sets
//! only `server.data_root` keep the *daemon's* default `server.listen` (each daemon has its own port) instead
//! of the generic one of [`ServerConfig::default`]. The flip side: a map-typed setting cannot drop an entry
//! present in the defaults.
//!
//! The file alone is first deserialised from its text, through `serde_path_to_error`, which is where a wrong
//! key or type gets its line number (from the TOML span) and its key path. Overrides are applied one at a
//! time and the result deserialised after each, so an error names the flag that caused it.

mod sections;

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use sections::{
    check_listen_address, common_warnings, AdminConfig, DaemonConfig, InvalidValue, IoConfig, LogConfig,
    ServerConfig, SyslogAddress, SyslogConfig, DEFAULT_SHUTDOWN_TIMEOUT_MS,
};

/// Where daemons look for their config when `--config` is not given.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/logtank";

/// A config file larger than this is a mistake (a log file passed by accident), not a config; refusing it
/// keeps a typo in `--config` from reading gigabytes into memory.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Which file to read, and whether the operator named it.
///
/// The distinction matters when the file is missing: the default path may legitimately be absent (the
/// daemon then runs on built-in defaults), but a path the operator typed must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub is_default: bool,
}

impl ConfigSource {
    /// A path given explicitly (`--config PATH`): it must exist.
    pub fn explicit(path: impl Into<PathBuf>) -> Self {
        ConfigSource {
            path: path.into(),
            is_default: false,
        }
    }

    /// The default path for daemon `name` (`/etc/logtank/<name>.toml`): it may be absent.
    pub fn default_for(name: &str) -> Self {
        ConfigSource {
            path: Path::new(DEFAULT_CONFIG_DIR).join(format!("{name}.toml")),
            is_default: true,
        }
    }
}

/// One command-line override: a dotted key and the TOML value to put there.
///
/// `flag` is the text the operator typed (`--set server.listen=…`, `--listen …`), kept so that an error
/// points back at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub flag: String,
    pub key: String,
    pub value: toml::Value,
}

impl Override {
    /// Parses the argument of `--set KEY=VALUE`.
    ///
    /// VALUE is read as a TOML value (`15000`, `true`, `"text"`, `[1, 2]`, `{ a = 1 }`); if it is not valid
    /// TOML it is taken as a plain string, so `--set server.listen=127.0.0.1:1` and `--set log.level=debug`
    /// need no quotes. Quote a value to force a string that would otherwise parse as something else, e.g.
    /// `--set 'app.name="true"'`. KEY is a dotted path of bare TOML keys (`[A-Za-z0-9_-]+`).
    pub fn parse_set(arg: &str) -> Result<Self, ConfigError> {
        let flag = format!("--set {arg}");
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(ConfigError::BadOverride {
                flag,
                message: "expected KEY=VALUE".to_owned(),
            });
        };
        let key = key.trim();
        if let Err(message) = check_key_path(key) {
            return Err(ConfigError::BadOverride { flag, message });
        }
        Ok(Override {
            flag,
            key: key.to_owned(),
            value: parse_value(raw),
        })
    }

    /// An override from a dedicated flag such as `--listen ADDR`, which always sets a string.
    pub fn from_flag(flag_name: &str, key: &str, value: &str) -> Self {
        Override {
            flag: format!("{flag_name} {value}"),
            key: key.to_owned(),
            value: toml::Value::String(value.to_owned()),
        }
    }
}

impl FromStr for Override {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Override::parse_set(s)
    }
}

/// Everything that can be wrong with a configuration. Each variant's message names where the problem is:
/// file and line, or the command-line flag, and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config file: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("{}: config file is larger than {CONFIG_FILE_BYTES_MAX} bytes", path.display())]
    TooLarge { path: PathBuf },

    /// The file is not valid TOML.
    #[error("{}: {message}", Location { path, line: *line })]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },

    /// The file is valid TOML but a key is unknown, has the wrong type or an invalid value.
    #[error("{}: key '{key}': {message}", Location { path, line: *line })]
    Key {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },

    /// A command-line override could not be parsed.
    #[error("{flag}: {message}")]
    BadOverride { flag: String, message: String },

    /// A command-line override does not fit the configuration.
    #[error("{flag}: key '{key}': {message}")]
    Override {
        flag: String,
        key: String,
        message: String,
    },

    /// A value passed type checks but fails a daemon's own validation ([`DaemonConfig::validate`]).
    /// `origin` is the config file (and the overrides, if any).
    #[error("{origin}: key '{key}': {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },

    /// The daemon's built-in defaults cannot be written as TOML: a bug in the daemon, not in the file.
    #[error("built-in defaults: {0}")]
    Defaults(String),

    /// The effective config cannot be written as TOML (for `--check-config`): a bug in the daemon.
    #[error("cannot write the effective config as TOML: {0}")]
    Serialize(String),
}

/// `path:line`, or just `path` when the parser gave no position.
struct Location<'a> {
    path: &'a Path,
    line: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Loads a configuration: built-in defaults, then the file (if any), then `overrides` in order.
///
/// The result has passed serde's checks (types, unknown keys, and the value checks the section types do
/// while deserialising, such as listen addresses and `io.level`). A daemon's own checks run in
/// [`load_daemon_config`].
///
/// Every struct in `T` must carry `#[serde(deny_unknown_fields, default)]`: the file is checked on its own
/// before it is merged onto the defaults, so a struct without `default` would reject a file that leaves
/// one of its keys out.
pub fn load<T>(source: &ConfigSource, overrides: &[Override]) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut table = defaults_table::<T>()?;
    if let Some(text) = read_source(source)? {
        // Deserialise the text on its own first: it is the only step that knows line numbers.
        check_file_text::<T>(&source.path, &text)?;
        let file_table = toml::Table::from_str(&text).map_err(|e| syntax_error(&source.path, &text, &e))?;
        merge(&mut table, file_table);
    }
    for ov in overrides {
        apply_override(&mut table, ov)?;
        // Checking after each override is what lets the error name the flag that broke it.
        from_table::<T>(&table).map_err(|(key, message)| ConfigError::Override {
            flag: ov.flag.clone(),
            key,
            message,
        })?;
    }
    from_table::<T>(&table).map_err(|(key, message)| ConfigError::Key {
        path: source.path.clone(),
        line: None,
        key,
        message: format!("{message} (after merging onto the built-in defaults)"),
    })
}

/// [`load`], then the daemon's own validation ([`DaemonConfig::validate`]).
pub fn load_daemon_config<T>(source: &ConfigSource, overrides: &[Override]) -> Result<T, ConfigError>
where
    T: DaemonConfig + DeserializeOwned + Serialize + Default,
{
    let config: T = load(source, overrides)?;
    config.validate().map_err(|invalid| {
        let mut origin = source.path.display().to_string();
        if !overrides.is_empty() {
            origin.push_str(" + command-line overrides");
        }
        ConfigError::Invalid {
            origin,
            key: invalid.key,
            message: invalid.message,
        }
    })?;
    Ok(config)
}

/// The effective configuration as TOML, for `--check-config`.
pub fn to_toml_string<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    toml::to_string(config).map_err(|e| ConfigError::Serialize(e.to_string()))
}

/// Reads the file; `None` when it is the default path and does not exist.
fn read_source(source: &ConfigSource) -> Result<Option<String>, ConfigError> {
    let read_err = |e| ConfigError::Read {
        path: source.path.clone(),
        source: e,
    };
    let file = match std::fs::File::open(&source.path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound && source.is_default => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut text = String::new();
    // Read one byte past the limit so that a file of exactly the limit is accepted.
    file.take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            path: source.path.clone(),
        });
    }
    Ok(Some(text))
}

fn defaults_table<T: Serialize + Default>() -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(T::default()).map_err(|e| ConfigError::Defaults(e.to_string()))
}

/// Deserialises the file text into `T` only to find errors, with line and key path.
fn check_file_text<T: DeserializeOwned>(path: &Path, text: &str) -> Result<(), ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| syntax_error(path, text, &e))?;
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(_) => Ok(()),
        Err(e) => {
            let key = key_path(e.path());
            let inner = e.into_inner();
            let line = inner.span().map(|span| line_of(text, span.start));
            Err(ConfigError::Key {
                path: path.to_owned(),
                line,
                key,
                message: inner.message().to_owned(),
            })
        }
    }
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError::Syntax {
        path: path.to_owned(),
        line: e.span().map(|span| line_of(text, span.start)),
        message: e.message().to_owned(),
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

fn key_path(path: &serde_path_to_error::Path) -> String {
    let rendered = path.to_string();
    // serde_path_to_error renders the empty path as "."; the document root has no better name.
    if rendered == "." {
        "(top level)".to_owned()
    } else {
        rendered
    }
}

/// Deserialises a merged table; on error returns (key path, message).
fn from_table<T: DeserializeOwned>(table: &toml::Table) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize::<_, T>(table.clone()).map_err(|e| {
        let key = key_path(e.path());
        (key, e.into_inner().message().to_owned())
    })
}

/// Merges `upper` onto `lower`: tables key by key, everything else replaced.
fn merge(lower: &mut toml::Table, upper: toml::Table) {
    for (key, value) in upper {
        match (lower.get_mut(&key), value) {
            (Some(toml::Value::Table(low)), toml::Value::Table(up)) => merge(low, up),
            (_, value) => {
                lower.insert(key, value);
            }
        }
    }
}

fn apply_override(table: &mut toml::Table, ov: &Override) -> Result<(), ConfigError> {
    let segments: Vec<&str> = ov.key.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return Err(ConfigError::BadOverride {
            flag: ov.flag.clone(),
            message: "empty key".to_owned(),
        });
    };
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry((*segment).to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        match entry {
            toml::Value::Table(next) => current = next,
            other => {
                return Err(ConfigError::Override {
                    flag: ov.flag.clone(),
                    key: ov.key.clone(),
                    message: format!(
                        "'{}' is a {}, not a table",
                        segments[..=depth].join("."),
                        other.type_str()
                    ),
                })
            }
        }
    }
    current.insert((*last).to_owned(), ov.value.clone());
    Ok(())
}

fn check_key_path(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty key".to_owned());
    }
    for segment in key.split('.') {
        let bare = !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !bare {
            return Err(format!(
                "invalid key '{key}': expected dotted bare TOML keys such as server.listen"
            ));
        }
    }
    Ok(())
}

/// A TOML value if VALUE parses as one, else the raw text as a string (see [`Override::parse_set`]).
fn parse_value(raw: &str) -> toml::Value {
    toml::Value::from_str(raw).unwrap_or_else(|_| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests;
