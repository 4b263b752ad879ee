//! The service's configuration: built-in defaults that work against the local stack, then a
//! TOML file (`--config`), then `RATES_API_<SECTION>__<KEY>` environment variables
//! (see [`startup::config::load`]). No key holds a secret: the database password is read from
//! the secret store, by id.

use secret_store::SecretsSettings;
use serde::{Deserialize, Serialize};
pub use service::database::DatabaseSettings;
use startup::telemetry::LogSettings;

/// Prefix of the environment variables that configure the service.
pub const ENV_PREFIX: &str = "RATES_API_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds; port 0 picks a free port (tests).
    pub listen: String,
    /// Threads of the async runtime; 0 means one per CPU.
    pub worker_threads: usize,
    pub database: DatabaseSettings,
    pub secrets: SecretsSettings,
    pub log: LogSettings,
    pub api: ApiSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:3000".into(),
            worker_threads: 0,
            database: DatabaseSettings::local("rates", "dbgw/rates-api"),
            secrets: SecretsSettings::default(),
            log: LogSettings::default(),
            api: ApiSettings::default(),
        }
    }
}

impl Settings {
    /// Defaults, then `file`, then the environment.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Settings> {
        // Durations were written with units (`"5s"`) until the workspace settled on whole
        // numbers in keys that name the unit; the old keys work, with a warning, for one more
        // release.
        let renamed = service::database_renamed!("database");
        let settings: Settings = startup::config::load_renamed(file, ENV_PREFIX, &renamed)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses values that would only fail later, at the first request.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.database
            .validate()
            .map_err(|e| anyhow::anyhow!("database: {e}"))?;
        anyhow::ensure!(
            self.api.max_range_days > 0,
            "api.max_range_days must be at least 1"
        );
        Ok(())
    }
}

pub use pg_connect::TlsMode;

/// Default for `api.max_range_days`: three years (two common years and a leap year).
pub const DEFAULT_MAX_RANGE_DAYS: u32 = 1096;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Most days one `/rates` answer may cover (both ends included); more is a `400`.
    pub max_range_days: u32,
    /// Keep answers in memory until the data changes (the database notifies on every
    /// change to prices, ports or regions). Off: every request queries the database.
    pub cache: bool,
    /// Most answers kept; when full, the cache starts over.
    pub cache_entries: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_range_days: DEFAULT_MAX_RANGE_DAYS,
            cache: true,
            cache_entries: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_the_environment_overrides_them() {
        // Each test owns its variables: the environment is process-wide.
        std::env::set_var("RATES_API_DATABASE__STATEMENT_TIMEOUT_MS", "750");
        std::env::set_var("RATES_API_API__MAX_RANGE_DAYS", "31");
        let s = Settings::load(None).unwrap();
        std::env::remove_var("RATES_API_DATABASE__STATEMENT_TIMEOUT_MS");
        std::env::remove_var("RATES_API_API__MAX_RANGE_DAYS");
        assert_eq!(s.database.statement_timeout_ms, 750);
        assert_eq!(s.api.max_range_days, 31);
        assert_eq!(s.listen, "127.0.0.1:3000");
        assert_eq!(s.database.port, 5433);
        assert_eq!(s.database.tls, TlsMode::VerifyFull);
        assert_eq!(s.database.secret, "dbgw/rates-api");
    }

    #[test]
    fn the_old_duration_keys_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.toml");
        std::fs::write(
            &path,
            "[database]\nstatement_timeout = \"750ms\"\nmax_lifetime = \"30m\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&path)).unwrap();
        assert_eq!(s.database.statement_timeout_ms, 750);
        assert_eq!(s.database.max_lifetime_secs, 1800);
    }

    #[test]
    fn a_file_sets_values_and_a_password_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.toml");
        std::fs::write(&path, "[database]\ntls = \"disable\"\npool_size = 4\n").unwrap();
        let s = Settings::load(Some(&path)).unwrap();
        assert_eq!(s.database.tls, TlsMode::Disable);
        assert_eq!(s.database.pool_size, 4);

        std::fs::write(&path, "[database]\npassword = \"hunter2\"\n").unwrap();
        let err = format!("{:#}", Settings::load(Some(&path)).unwrap_err());
        assert!(
            err.contains("database.password") && !err.contains("hunter2"),
            "{err}"
        );

        std::fs::write(&path, "[database]\npool_size = 0\n").unwrap();
        assert!(Settings::load(Some(&path)).is_err());

        // Plain TCP only to this machine: a password must not cross a network in clear.
        std::fs::write(
            &path,
            "[database]\ntls = \"disable\"\nhost = \"10.0.0.5\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Settings::load(Some(&path)).unwrap_err());
        assert!(
            err.contains("loopback") && err.contains("10.0.0.5"),
            "{err}"
        );
    }
}
