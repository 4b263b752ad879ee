//! The rotation function's configuration (`ROTATION_<SECTION>__<KEY>`, or a TOML file): how
//! to reach Secrets Manager and how to verify the database's certificate. Where the database
//! is comes from each secret (`host`, `port`, `dbname`), as with AWS's rotation functions.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub secrets: secret_store::SecretsSettings,
    pub log: startup::telemetry::LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database: DatabaseSettings::default(),
            secrets: secret_store::SecretsSettings {
                backend: secret_store::Backend::Aws,
                // A rotation reads what it writes: never from a cache.
                cache_ttl_ms: 0,
                ..Default::default()
            },
            log: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// CA bundle that signed the database's certificate (verify-full; the RDS global bundle
    /// in the Lambda package).
    pub ca_file: PathBuf,
    /// Used when a secret names no host (local stack).
    pub default_host: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            ca_file: PathBuf::from(".dev/pg/ca.crt"),
            default_host: "127.0.0.1".into(),
        }
    }
}
