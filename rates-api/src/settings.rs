//! The service's configuration: built-in defaults that work against the local stack, then a
//! TOML file (`--config`), then `RATES_API_<SECTION>__<KEY>` environment variables
//! (see [`startup::config::load`]). No key holds a secret: the database password is read from
//! the secret store, by id.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secret_store::SecretsSettings;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
            database: DatabaseSettings::default(),
            secrets: SecretsSettings::default(),
            log: LogSettings::default(),
            api: ApiSettings::default(),
        }
    }
}

impl Settings {
    /// Defaults, then `file`, then the environment.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Settings> {
        let settings: Settings = startup::config::load(file, ENV_PREFIX)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses values that would only fail later, at the first request.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.database.pool_size > 0,
            "database.pool_size must be at least 1"
        );
        anyhow::ensure!(
            self.api.max_range_days > 0,
            "api.max_range_days must be at least 1"
        );
        anyhow::ensure!(
            !self.database.secret.is_empty(),
            "database.secret must name the secret holding the login"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// TLS required, server certificate and host name verified against `ca_file`.
    VerifyFull,
    /// Plain TCP. Only for a database on the same host or in tests of the plumbing.
    Disable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub tls: TlsMode,
    /// CA bundle that signed the server certificate (the RDS global bundle in production).
    pub ca_file: PathBuf,
    /// Id of the secret holding `{"username", "password"}`.
    pub secret: String,
    /// Most connections the pool holds open.
    pub pool_size: usize,
    /// Limit on opening one connection (TCP, TLS, authentication, statement preparation).
    pub connect_timeout: HumanDuration,
    /// Server-side limit on one query.
    pub statement_timeout: HumanDuration,
    /// Connections older than this are closed instead of reused, so rotated passwords and
    /// server-side changes take effect without a restart.
    pub max_lifetime: HumanDuration,
    /// How long credentials read from the secret store are reused for new connections.
    pub credentials_ttl: HumanDuration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            host: "127.0.0.1".into(),
            port: 5433,
            dbname: "rates".into(),
            tls: TlsMode::VerifyFull,
            ca_file: PathBuf::from(".dev/pg/ca.crt"),
            secret: "dbgw/rates-api".into(),
            pool_size: 8,
            connect_timeout: HumanDuration::secs(5),
            statement_timeout: HumanDuration::secs(5),
            max_lifetime: HumanDuration::secs(30 * 60),
            credentials_ttl: HumanDuration::secs(5),
        }
    }
}

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

/// A duration written with a unit, `250ms`, `5s`, `30m` or `1h`; a bare number is seconds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 250ms, 5s, 30m or 1h"))?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(format!("`{text}`: unit must be ms, s, m or h")),
        };
        Ok(HumanDuration(d))
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            _ if !ms.is_multiple_of(1000) => write!(f, "{ms}ms"),
            _ if ms > 0 && ms.is_multiple_of(3_600_000) => write!(f, "{}h", ms / 3_600_000),
            _ if ms > 0 && ms.is_multiple_of(60_000) => write!(f, "{}m", ms / 60_000),
            _ => write!(f, "{}s", ms / 1000),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(HumanDuration::secs(n)),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            HumanDuration::parse("5s").unwrap().0,
            Duration::from_secs(5)
        );
        assert_eq!(HumanDuration::parse("7").unwrap().0, Duration::from_secs(7));
        assert_eq!(
            HumanDuration::parse("30m").unwrap().0,
            Duration::from_secs(1800)
        );
        assert_eq!(
            HumanDuration::parse("1h").unwrap().0,
            Duration::from_secs(3600)
        );
        assert!(HumanDuration::parse("5 parsecs").is_err());
        assert!(HumanDuration::parse("").is_err());
        assert!(HumanDuration::parse("-1s").is_err());
        assert_eq!(
            HumanDuration::parse("1500ms").unwrap().to_string(),
            "1500ms"
        );
        assert_eq!(HumanDuration::secs(90).to_string(), "90s");
        assert_eq!(HumanDuration::secs(1800).to_string(), "30m");
        assert_eq!(HumanDuration::secs(7200).to_string(), "2h");
        assert_eq!(HumanDuration::secs(0).to_string(), "0s");
    }

    #[test]
    fn defaults_load_and_the_environment_overrides_them() {
        // Each test owns its variables: the environment is process-wide.
        std::env::set_var("RATES_API_DATABASE__STATEMENT_TIMEOUT", "750ms");
        std::env::set_var("RATES_API_API__MAX_RANGE_DAYS", "31");
        let s = Settings::load(None).unwrap();
        std::env::remove_var("RATES_API_DATABASE__STATEMENT_TIMEOUT");
        std::env::remove_var("RATES_API_API__MAX_RANGE_DAYS");
        assert_eq!(s.database.statement_timeout.0, Duration::from_millis(750));
        assert_eq!(s.api.max_range_days, 31);
        assert_eq!(s.listen, "127.0.0.1:3000");
        assert_eq!(s.database.port, 5433);
        assert_eq!(s.database.tls, TlsMode::VerifyFull);
        assert_eq!(s.database.secret, "dbgw/rates-api");
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
    }
}
