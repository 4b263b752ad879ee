//! The `[database]` settings of a service: where its database is, how it is trusted, which
//! secret holds its login, and the pool's limits. The same keys and units in every service
//! (durations are whole numbers in keys that name the unit, docs/workspace.md).

use std::path::PathBuf;
use std::time::Duration;

use pg_connect::TlsMode;
use serde::{Deserialize, Serialize};
pub use startup::config::{Convert, Renamed};

pub mod pool;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub tls: TlsMode,
    /// CA bundle that signed the server certificate (the RDS global bundle in production).
    pub ca_file: PathBuf,
    /// Id of the secret holding `{"username", "password"}` of the service's login.
    pub secret: String,
    /// Most connections the pool holds open.
    pub pool_size: usize,
    /// Limit on opening one connection (TCP, TLS, authentication) and on waiting for one
    /// from the pool.
    pub connect_timeout_secs: u64,
    /// Server-side limit on one statement.
    pub statement_timeout_ms: u64,
    /// Connections older than this are closed instead of reused, so rotated passwords and
    /// server-side changes take effect without a restart.
    pub max_lifetime_secs: u64,
    /// How long a login read from the secret store is reused for new connections.
    pub credentials_ttl_ms: u64,
}

impl Default for DatabaseSettings {
    /// The local stack's server (`make up`); each service names its database and secret.
    fn default() -> Self {
        DatabaseSettings {
            host: "127.0.0.1".into(),
            port: 5433,
            dbname: "postgres".into(),
            tls: TlsMode::VerifyFull,
            ca_file: PathBuf::from(".dev/pg/ca.crt"),
            secret: String::new(),
            pool_size: 8,
            connect_timeout_secs: 5,
            statement_timeout_ms: 5000,
            max_lifetime_secs: 30 * 60,
            credentials_ttl_ms: 5000,
        }
    }
}

impl DatabaseSettings {
    /// The local stack's server, database `dbname`, login in `secret`.
    pub fn local(dbname: &str, secret: &str) -> Self {
        DatabaseSettings {
            dbname: dbname.into(),
            secret: secret.into(),
            ..DatabaseSettings::default()
        }
    }

    /// The server as the workspace's connect helper sees it (its TLS policy included).
    pub fn target(&self) -> pg_connect::Target {
        pg_connect::Target {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls,
            ca_file: Some(self.ca_file.clone()),
            connect_timeout: self.connect_timeout(),
            // A service logs in as itself: pg_hba asks a certificate only of people's roles.
            client_cert: None,
        }
    }

    /// Refuses values that would only fail later: plain TCP to another machine, an empty
    /// pool, no secret.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.target().check()?;
        anyhow::ensure!(self.pool_size > 0, "pool_size must be at least 1");
        anyhow::ensure!(
            !self.secret.is_empty(),
            "secret must name the secret holding the login"
        );
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }

    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_secs)
    }

    pub fn credentials_ttl(&self) -> Duration {
        Duration::from_millis(self.credentials_ttl_ms)
    }
}

/// Keys renamed when the services' database settings became one, in the section `$section`
/// (`"database"`, `"control"`): durations written with units (`"5s"`, rates-api before) or in
/// seconds (`statement_timeout_secs`, approvals before). They work, with a warning, for one
/// more release (`startup::config::load_renamed`).
#[macro_export]
macro_rules! database_renamed {
    ($section:literal) => {
        [
            $crate::database::rename(
                concat!($section, ".connect_timeout"),
                concat!($section, ".connect_timeout_secs"),
                $crate::database::Convert::DurationToSecs,
            ),
            $crate::database::rename(
                concat!($section, ".statement_timeout"),
                concat!($section, ".statement_timeout_ms"),
                $crate::database::Convert::DurationToMs,
            ),
            $crate::database::rename(
                concat!($section, ".statement_timeout_secs"),
                concat!($section, ".statement_timeout_ms"),
                $crate::database::Convert::DurationToMs,
            ),
            $crate::database::rename(
                concat!($section, ".max_lifetime"),
                concat!($section, ".max_lifetime_secs"),
                $crate::database::Convert::DurationToSecs,
            ),
            $crate::database::rename(
                concat!($section, ".credentials_ttl"),
                concat!($section, ".credentials_ttl_ms"),
                $crate::database::Convert::DurationToMs,
            ),
        ]
    };
}

/// One entry of [`database_renamed!`].
pub const fn rename(old: &'static str, new: &'static str, convert: Convert) -> Renamed {
    Renamed { old, new, convert }
}
