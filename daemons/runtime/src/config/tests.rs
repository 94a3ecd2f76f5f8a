//! Unit tests of config loading: error locations, layering, overrides.

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TestConfig {
    server: ServerConfig,
    admin: AdminConfig,
    log: LogConfig,
    io: IoConfig,
    journal: JournalSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct JournalSection {
    fsync_interval_ms: u64,
    ack: String,
    tags: Vec<String>,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            fsync_interval_ms: 1000,
            ack: "write".into(),
            tags: vec![],
        }
    }
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            server: ServerConfig::new("0.0.0.0:15000", "/data/storage"),
            admin: AdminConfig::new("127.0.0.1:9150"),
            log: LogConfig::default(),
            io: IoConfig::default(),
            journal: JournalSection::default(),
        }
    }
}

crate::impl_daemon_config!(TestConfig {
    fn validate(&self) -> Result<(), InvalidValue> {
        if self.journal.ack != "write" && self.journal.ack != "fsync" {
            return Err(InvalidValue {
                key: "journal.ack".into(),
                message: format!("'{}' is neither 'write' nor 'fsync'", self.journal.ack),
            });
        }
        Ok(())
    }
});

fn file_with(text: &str) -> (tempfile::TempDir, ConfigSource) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("writer.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (dir, ConfigSource::explicit(path))
}

fn load_err(text: &str, overrides: &[Override]) -> (String, ConfigError) {
    let (_dir, source) = file_with(text);
    let err = load_daemon_config::<TestConfig>(&source, overrides).unwrap_err();
    (source.path.display().to_string(), err)
}

fn set(arg: &str) -> Override {
    Override::parse_set(arg).unwrap()
}

// Proves an unknown key is reported with file, line and full key path, and what was expected.
#[test]
fn unknown_key_names_file_line_and_key() {
    let (path, err) = load_err("[admin]\nlisten = '127.0.0.1:1'\n\n[server]\nlistn = 'x'\n", &[]);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{path}:5: key 'server.listn': unknown field `listn`")),
        "{msg}"
    );
    assert!(msg.contains("`listen`") && msg.contains("`data_root`"), "{msg}");
    assert!(matches!(err, ConfigError::Key { line: Some(5), .. }));
}

// Proves a wrong type is reported with file, line, key path and the expected type.
#[test]
fn wrong_type_names_file_line_and_key() {
    let (path, err) = load_err(
        "# comment\n\n[journal]\nack = 'write'\nfsync_interval_ms = \"x\"\n",
        &[],
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{path}:5: key 'journal.fsync_interval_ms': invalid type"
        )),
        "{msg}"
    );
    assert!(msg.contains("expected u64"), "{msg}");
}

// Proves an unknown top-level section is reported with its line.
#[test]
fn unknown_section_is_reported() {
    let (path, err) = load_err("[server]\nlisten = '0.0.0.0:1'\n[jurnal]\nx = 1\n", &[]);
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{path}:3: key 'jurnal'")), "{msg}");
}

// Proves value checks done while deserialising (address, log level, io.level) get file, line and key.
#[test]
fn invalid_values_name_file_line_and_key() {
    let (path, err) = load_err("[server]\nlisten = 'nonsense'\n", &[]);
    assert!(
        err.to_string()
            .starts_with(&format!("{path}:2: key 'server.listen': invalid address")),
        "{err}"
    );
    let (path, err) = load_err("[io]\nclass = 'best-effort'\nlevel = 9\n", &[]);
    assert!(
        err.to_string()
            .starts_with(&format!("{path}:3: key 'io.level': 9 is out of range")),
        "{err}"
    );
    let (path, err) = load_err("[log]\nlevel = 'loud'\n", &[]);
    assert!(
        err.to_string()
            .starts_with(&format!("{path}:2: key 'log.level': invalid log level")),
        "{err}"
    );
    let (_, err) = load_err("[log.syslog]\naddress = 'http://x:1'\n", &[]);
    assert!(err.to_string().contains(":2: key 'log.syslog.address'"), "{err}");
    let (_, err) = load_err("[io]\nclass = 'fast'\n", &[]);
    assert!(
        err.to_string()
            .contains(":2: key 'io.class': unknown variant `fast`"),
        "{err}"
    );
}

// Proves a TOML syntax error is reported with file and line.
#[test]
fn syntax_error_names_file_and_line() {
    let (path, err) = load_err("[server]\nlisten = \n", &[]);
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("{path}:2: ")), "{err}");
}

// Proves a daemon's own validation names the key and the file.
#[test]
fn daemon_validation_names_key() {
    let (path, err) = load_err("[journal]\nack = 'never'\n", &[]);
    assert_eq!(
        err.to_string(),
        format!("{path}: key 'journal.ack': 'never' is neither 'write' nor 'fsync'")
    );
}

// Proves an override of the wrong type names the --set flag and the key.
#[test]
fn bad_override_names_flag_and_key() {
    let (_, err) = load_err("", &[set("journal.fsync_interval_ms=x")]);
    let msg = err.to_string();
    assert!(
        msg.starts_with("--set journal.fsync_interval_ms=x: key 'journal.fsync_interval_ms': invalid type"),
        "{msg}"
    );
    let (_, err) = load_err("", &[set("server.port=1")]);
    assert!(
        err.to_string()
            .starts_with("--set server.port=1: key 'server.port': unknown field"),
        "{err}"
    );
    let (_, err) = load_err("", &[Override::from_flag("--listen", "server.listen", "bad")]);
    assert!(
        err.to_string()
            .starts_with("--listen bad: key 'server.listen': invalid address"),
        "{err}"
    );
    let (_, err) = load_err("", &[set("server.listen.x=1")]);
    assert!(
        err.to_string()
            .contains("'server.listen' is a string, not a table"),
        "{err}"
    );
}

// Proves override values: TOML values keep their type, unquoted text becomes a string, keys nest.
#[test]
fn override_parsing() {
    assert_eq!(set("a.b=15").value, toml::Value::Integer(15));
    assert_eq!(set("a=true").value, toml::Value::Boolean(true));
    assert_eq!(set("a=\"true\"").value, toml::Value::String("true".into()));
    assert_eq!(
        set("a=127.0.0.1:1").value,
        toml::Value::String("127.0.0.1:1".into())
    );
    assert_eq!(set("a=/data/x y").value, toml::Value::String("/data/x y".into()));
    assert_eq!(set("a=").value, toml::Value::String(String::new()));
    assert_eq!(set("a=k=v").value, toml::Value::String("k=v".into()));
    let arr = set("a=['x', 'y']").value;
    assert_eq!(arr, toml::Value::Array(vec!["x".into(), "y".into()]));
    assert_eq!(
        set(" journal.fsync_interval_ms =5").key,
        "journal.fsync_interval_ms"
    );
    assert!(Override::parse_set("noequals").is_err());
    assert!(Override::parse_set("a..b=1").is_err());
    assert!(Override::parse_set("=1").is_err());
    assert!(Override::parse_set("a b=1").is_err());

    let (_dir, source) = file_with("[journal]\nfsync_interval_ms = 5\n");
    let config: TestConfig = load(
        &source,
        &[
            set("server.listen=127.0.0.1:1"),
            set("journal.fsync_interval_ms=250"),
            set("journal.tags=['a', 'b']"),
            set("log.syslog.address=udp://127.0.0.1:514"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:1");
    assert_eq!(config.journal.fsync_interval_ms, 250);
    assert_eq!(config.journal.tags, vec!["a", "b"]);
    let syslog = config.log.syslog.unwrap();
    assert_eq!(syslog.address, "udp://127.0.0.1:514");
    assert_eq!(syslog.facility, "daemon");
}

// Proves a missing default file yields the built-in defaults, and a missing explicit file is an error.
#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.toml");
    let default = ConfigSource {
        path: absent.clone(),
        is_default: true,
    };
    assert_eq!(load::<TestConfig>(&default, &[]).unwrap(), TestConfig::default());
    let explicit = ConfigSource::explicit(&absent);
    let err = load::<TestConfig>(&explicit, &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", absent.display())),
        "{err}"
    );
}

// Proves a partial section keeps the daemon's own defaults for the keys it does not set.
#[test]
fn partial_section_keeps_daemon_defaults() {
    let (_dir, source) = file_with("[server]\ndata_root = '/srv/x'\n");
    let config: TestConfig = load(&source, &[]).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:15000");
    assert_eq!(config.server.data_root, PathBuf::from("/srv/x"));
    assert_eq!(config.server.shutdown_timeout_ms, DEFAULT_SHUTDOWN_TIMEOUT_MS);
}

// Proves the effective config printed by --check-config loads back to the same config.
#[test]
fn effective_config_round_trips() {
    let (_dir, source) = file_with("[log.syslog]\naddress = 'tcp://logs:6514'\n[io]\nclass = 'idle'\n");
    let config: TestConfig = load(&source, &[]).unwrap();
    let text = to_toml_string(&config).unwrap();
    let (_dir2, again) = file_with(&text);
    assert_eq!(load::<TestConfig>(&again, &[]).unwrap(), config);
    assert!(text.contains("class = \"idle\""), "{text}");
}

// Proves settings that parse but make no sense produce warnings.
#[test]
fn common_warnings_flag_nonsense() {
    let mut config = TestConfig::default();
    assert!(common_warnings(&config).is_empty());
    config.server.shutdown_timeout_ms = 0;
    config.io = IoConfig {
        class: crate::ioprio::IoClass::Idle,
        level: 0,
    };
    config.admin.listen = config.server.listen.clone();
    let warnings = common_warnings(&config);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
}

// Proves an oversized file is refused instead of read.
#[test]
fn oversized_file_is_refused() {
    let (_dir, source) = file_with(&"#".repeat(CONFIG_FILE_BYTES_MAX as usize + 1));
    assert!(matches!(
        load::<TestConfig>(&source, &[]),
        Err(ConfigError::TooLarge { .. })
    ));
}
