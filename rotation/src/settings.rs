//! The rotation function's configuration (`ROTATION_<SECTION>__<KEY>`, or a TOML file): how
//! to reach Secrets Manager and how to verify the database's certificate ([`Settings`]), and
//! whom the function acts for ([`Policy`]); [`Config`] is both, as loaded. A master connects
//! to the server its own secret names (for a master secret that names none, such as the
//! RDS-managed one, `database.default_host`, port 5432); a rotated secret with a master must
//! name that same server.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::policy::Policy;

/// Everything the function reads at start: [`Settings`] and `[policy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseSettings,
    pub secrets: secret_store::SecretsSettings,
    pub log: startup::telemetry::LogSettings,
    pub policy: Policy,
}

impl Default for Config {
    fn default() -> Self {
        let Settings {
            database,
            secrets,
            log,
        } = Settings::default();
        Config {
            database,
            secrets,
            log,
            policy: Policy::default(),
        }
    }
}

impl Config {
    pub fn split(self) -> (Settings, Policy) {
        let settings = Settings {
            database: self.database,
            secrets: self.secrets,
            log: self.log,
        };
        (settings, self.policy)
    }
}

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
    /// The server of a secret that names no host: a master secret such as the RDS-managed one
    /// (it holds only a username and password; in AWS, set this to the instance's address),
    /// or a rotated secret without `host` (local stack).
    pub default_host: String,
    /// The client certificate (PEM) and its key that the function presents to the database,
    /// where `pg_hba` admits people's roles only with it (outside AWS): `setSecret` and
    /// `testSecret` of a person's secret log in as the person. Both or neither; unset in AWS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            ca_file: PathBuf::from(".dev/pg/ca.crt"),
            default_host: "127.0.0.1".into(),
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl DatabaseSettings {
    /// The configured client certificate; an error when only one of its files is set.
    pub fn client_cert(&self) -> Result<Option<pg_connect::ClientCert>, pg_connect::ConnectError> {
        pg_connect::ClientCert::from_paths(
            self.client_cert_file.as_ref(),
            self.client_key_file.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy as Terraform writes it: lists of ARNs in `jsonencode` form.
    #[test]
    fn the_policy_loads_from_the_environment() {
        let arn =
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dbgw/production/approvals-AbCdEf";
        std::env::set_var("ROTATIONT1_POLICY__PERSON_MASTERS", format!("[\"{arn}\"]"));
        std::env::set_var("ROTATIONT1_POLICY__ALTERNATING", "[]");
        std::env::set_var("ROTATIONT1_DATABASE__DEFAULT_HOST", "db.internal");
        let config: Config = startup::config::load(None, "ROTATIONT1_").unwrap();
        let (settings, policy) = config.split();
        assert_eq!(policy.person_masters, vec![arn.to_string()]);
        assert!(policy.alternating.is_empty());
        assert_eq!(policy.person_prefix, "dbgw/person/");
        assert_eq!(settings.database.default_host, "db.internal");
        assert_eq!(settings.secrets.cache_ttl_ms, 0);
    }
}
