//! Command-line flags every daemon shares, flattened into each daemon's clap parser.
//!
//! One flag table for all daemons keeps `--help`, man pages and unit files consistent (STYLE #15). The
//! listener and data flags are sugar for config overrides, so the command line and the file go through the
//! same validation and `--check-config` shows the result of both.

use std::path::PathBuf;

use clap::Args;

use crate::config::{ConfigSource, Override};

/// `--config`, `--check-config`, `--listen`, `--admin-listen`, `--data-root`, `--set`.
///
/// ```
/// # use clap::Parser;
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     common: logtank_runtime::args::CommonArgs,
/// }
/// let cli = Cli::parse_from(["logtank-writer", "--listen", "127.0.0.1:1", "--set", "log.level=debug"]);
/// assert_eq!(cli.common.overrides().len(), 2);
/// ```
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// Config file [default: /etc/logtank/DAEMON.toml; a missing default file means built-in defaults]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Check the configuration, print the effective config (with warnings as comments) and exit:
    /// 0 if valid, 1 if not
    #[arg(long)]
    pub check_config: bool,

    /// Service listen address, same as --set server.listen=ADDR
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Admin HTTP listen address, same as --set admin.listen=ADDR
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// Data root directory, same as --set server.data_root=DIR
    // A String, not a PathBuf: the value ends up in TOML, which holds only UTF-8.
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<String>,

    /// Override a config key (repeatable, applied in order after the flags above). VALUE is read as TOML
    /// (15000, true, "text", [1, 2]); anything that is not valid TOML is taken as a string, so
    /// --set server.listen=0.0.0.0:15000 needs no quotes
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<Override>,
}

impl CommonArgs {
    /// The config file for daemon `name`: `--config` if given, else `/etc/logtank/<name>.toml`.
    pub fn config_source(&self, name: &str) -> ConfigSource {
        match &self.config {
            Some(path) => ConfigSource::explicit(path),
            None => ConfigSource::default_for(name),
        }
    }

    /// All overrides in the order they apply: `--listen`, `--admin-listen`, `--data-root`, then `--set`.
    pub fn overrides(&self) -> Vec<Override> {
        let sugar = [
            ("--listen", "server.listen", &self.listen),
            ("--admin-listen", "admin.listen", &self.admin_listen),
            ("--data-root", "server.data_root", &self.data_root),
        ];
        let mut overrides: Vec<Override> = sugar
            .into_iter()
            .filter_map(|(flag, key, value)| value.as_deref().map(|v| Override::from_flag(flag, key, v)))
            .collect();
        overrides.extend(self.set.iter().cloned());
        overrides
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    // Proves the sugar flags become overrides before the --set ones, in that order.
    #[test]
    fn sugar_flags_come_first() {
        let cli = Cli::try_parse_from([
            "d",
            "--set",
            "server.listen=127.0.0.1:2",
            "--data-root",
            "/tmp/x",
            "--listen",
            "127.0.0.1:1",
        ])
        .unwrap();
        let keys: Vec<_> = cli
            .common
            .overrides()
            .into_iter()
            .map(|o| (o.key, o.value))
            .collect();
        assert_eq!(
            keys,
            vec![
                (
                    "server.listen".to_owned(),
                    toml::Value::String("127.0.0.1:1".into())
                ),
                (
                    "server.data_root".to_owned(),
                    toml::Value::String("/tmp/x".into())
                ),
                (
                    "server.listen".to_owned(),
                    toml::Value::String("127.0.0.1:2".into())
                ),
            ]
        );
    }

    // Proves the default config path depends on the daemon name and --config makes it explicit.
    #[test]
    fn config_path_resolution() {
        let cli = Cli::try_parse_from(["d"]).unwrap();
        assert_eq!(
            cli.common.config_source("writer"),
            ConfigSource::default_for("writer")
        );
        assert_eq!(
            cli.common.config_source("writer").path,
            PathBuf::from("/etc/logtank/writer.toml")
        );
        let cli = Cli::try_parse_from(["d", "--config", "/tmp/w.toml"]).unwrap();
        assert_eq!(
            cli.common.config_source("writer"),
            ConfigSource::explicit("/tmp/w.toml")
        );
    }

    // Proves a malformed --set is rejected by clap at parse time, naming the flag.
    #[test]
    fn malformed_set_is_a_usage_error() {
        let err = Cli::try_parse_from(["d", "--set", "novalue"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--set novalue: expected KEY=VALUE"), "{err}");
    }
}
