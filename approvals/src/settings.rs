//! The app's configuration: built-in defaults that work against the local stack, then a
//! TOML file (`--config`), then `APPROVALS_<SECTION>__<KEY>` environment variables (see
//! [`startup::config::load`]). No key holds a secret: the database login and the OpenID
//! client secret are read from the secret store, by id.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that configure the app.
pub const ENV_PREFIX: &str = "APPROVALS_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds; port 0 picks a free port (tests).
    pub listen: String,
    /// The URL people reach the app at. The OpenID redirect URI is `<public_url>/auth/callback`;
    /// an `https` URL makes cookies `Secure` (and `__Host-` prefixed).
    pub public_url: String,
    /// The control-plane database (grants, requests, events, sessions).
    pub control: DatabaseSettings,
    /// The database server whose roles the app creates and retires (the one behind the
    /// proxy). Its `dbname` is only where the app connects; roles are server-wide.
    pub target: DatabaseSettings,
    pub oidc: OidcSettings,
    pub sessions: SessionSettings,
    /// What can be requested: databases and their access levels.
    pub catalogue: Vec<Level>,
    pub scheduler: SchedulerSettings,
    pub webhook: WebhookSettings,
    pub rotation: RotationSettings,
    /// How people's roles log in to the target server.
    pub people: PeopleSettings,
    pub secrets: secret_store::SecretsSettings,
    pub log: startup::telemetry::LogSettings,
    /// Where the proxy's audit log is read for "Activity under this access".
    pub audit: AuditSettings,
    /// On SIGTERM, requests in flight get this long to finish.
    pub shutdown_grace_secs: u64,
    /// The SCIM 2.0 endpoint the company's identity provider deprovisions people through.
    pub scim: ScimSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            control: database("dbgw"),
            target: database("postgres"),
            oidc: OidcSettings::default(),
            sessions: SessionSettings::default(),
            catalogue: default_catalogue(),
            scheduler: SchedulerSettings::default(),
            webhook: WebhookSettings::default(),
            rotation: RotationSettings::default(),
            people: PeopleSettings::default(),
            secrets: secret_store::SecretsSettings::default(),
            log: startup::telemetry::LogSettings::default(),
            audit: AuditSettings::default(),
            shutdown_grace_secs: 20,
            scim: ScimSettings::default(),
        }
    }
}

impl Settings {
    /// Defaults, then `file`, then the environment; refuses values that would only fail later.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Settings> {
        // `statement_timeout_secs` became `statement_timeout_ms` when the services' database
        // settings became one; the old key works, with a warning, for one more release.
        let renamed: Vec<_> = service::database_renamed!("control")
            .into_iter()
            .chain(service::database_renamed!("target"))
            .collect();
        let settings: Settings = startup::config::load_renamed(file, ENV_PREFIX, &renamed)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        for (name, db) in [("control", &self.control), ("target", &self.target)] {
            db.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        ensure!(
            self.public_url.starts_with("http://") || self.public_url.starts_with("https://"),
            "public_url must be an http:// or https:// URL"
        );
        ensure!(
            !self.oidc.approvers_group.is_empty(),
            "oidc.approvers_group must name the data-security group"
        );
        ensure!(!self.catalogue.is_empty(), "the catalogue is empty");
        for (i, level) in self.catalogue.iter().enumerate() {
            ensure!(
                !level.database.is_empty() && !level.level.is_empty() && !level.role.is_empty(),
                "catalogue entry {i}: database, level and role are required"
            );
            ensure!(
                (1..=10).contains(&level.approvals),
                "catalogue entry {i} ({}/{}): approvals must be 1 to 10",
                level.database,
                level.level
            );
            ensure!(
                level.max_duration_secs >= 60,
                "catalogue entry {i}: max_duration_secs must be at least 60"
            );
            if let Err(e) = level.policy.check() {
                anyhow::bail!(
                    "catalogue entry {i} ({}/{}): policy: {e}",
                    level.database,
                    level.level
                );
            }
            let same = self
                .catalogue
                .iter()
                .filter(|l| l.database == level.database && l.level == level.level)
                .count();
            ensure!(
                same == 1,
                "catalogue: {}/{} is listed twice",
                level.database,
                level.level
            );
        }
        ensure!(
            !self.scim.enabled || !self.scim.secret.is_empty(),
            "scim.secret must name the secret holding the provider's bearer token"
        );
        ensure!(
            self.people.login == grants::PeopleLogin::Password
                || self.rotation.function_arn.is_empty(),
            "people.login = \"rds-iam\" gives people's roles no password: there is nothing to \
             rotate, leave rotation.function_arn empty"
        );
        ensure!(
            self.scheduler.interval_ms >= 100,
            "scheduler.interval_ms must be at least 100"
        );
        ensure!(
            self.sessions.idle_timeout_secs > 0
                && self.sessions.absolute_timeout_secs >= self.sessions.idle_timeout_secs,
            "sessions: idle_timeout_secs must be positive and at most absolute_timeout_secs"
        );
        Ok(())
    }

    /// Cookies are `Secure` when people reach the app over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// The catalogue entry for `database` and `level`.
    pub fn level(&self, database: &str, level: &str) -> Option<&Level> {
        self.catalogue
            .iter()
            .find(|l| l.database == database && l.level == level)
    }
}

/// One thing that can be requested: a level of access to a database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub database: String,
    /// Short name, e.g. `read-only`.
    pub level: String,
    /// What people see, e.g. "Read-only: SELECT on every table".
    #[serde(default)]
    pub description: String,
    /// The group role the person's role joins (e.g. `rates_reader`).
    pub role: String,
    /// Longest access one request may ask for.
    pub max_duration_secs: u64,
    /// Distinct approvers needed.
    pub approvals: u32,
    /// Session controls the grant carries and the proxy enforces (`[catalogue.policy]`):
    /// idle and age limits, read-only at the gateway, fresh MFA. Off unless set.
    #[serde(default)]
    pub policy: grants::SessionPolicy,
}

fn default_catalogue() -> Vec<Level> {
    vec![
        Level {
            database: "rates".into(),
            level: "read-only".into(),
            description: "Read the rates data (SELECT)".into(),
            role: "rates_reader".into(),
            max_duration_secs: 7 * 24 * 3600,
            approvals: 1,
            policy: Default::default(),
        },
        Level {
            database: "rates".into(),
            level: "read-write".into(),
            description: "Read and change the rates data (SELECT, INSERT, UPDATE, DELETE)".into(),
            role: "rates_writer".into(),
            max_duration_secs: 24 * 3600,
            approvals: 2,
            policy: Default::default(),
        },
    ]
}

pub use pg_connect::TlsMode;
pub use service::database::DatabaseSettings;

/// The app's database defaults: the local stack's server, a statement (and a lock wait) at
/// most ten seconds.
fn database(dbname: &str) -> DatabaseSettings {
    DatabaseSettings {
        statement_timeout_ms: 10_000,
        ..DatabaseSettings::local(dbname, "dbgw/approvals-db")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    /// Id of the secret holding `{"client_secret": "..."}`.
    pub secret: String,
    /// Members of this group (the ID token's / userinfo's `groups` claim) decide.
    pub approvers_group: String,
    /// No longer used, kept so that a configuration naming it still loads: the JSON API
    /// accepts only access tokens issued to `client_id` (a token for another client, such
    /// as the CLI's, is refused). A non-empty value is ignored with a warning.
    pub api_audiences: Vec<String>,
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings {
            issuer: "http://127.0.0.1:9000".into(),
            client_id: "dbgw-approvals".into(),
            secret: "dbgw/approvals-oidc".into(),
            approvers_group: "data-security".into(),
            api_audiences: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// A session unused this long ends.
    pub idle_timeout_secs: u64,
    /// A session ends this long after sign-in, used or not.
    pub absolute_timeout_secs: u64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            idle_timeout_secs: 30 * 60,
            absolute_timeout_secs: 8 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How often due work is looked for: grants to start, expire or finish ending, webhook
    /// messages to send, old sessions to delete. Expiry happens within this interval.
    pub interval_ms: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            interval_ms: 15_000,
        }
    }
}

/// Rotation of people's passwords (docs/rotation.md). Each person's secret names
/// `target.secret` as its master: the app's own login, which creates people's roles, also
/// sets their next passwords.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSettings {
    /// ARN of the rotation function; set, each person's secret gets rotation turned on with
    /// it (Secrets Manager only). Empty (the local stack's file secrets): not rotated.
    pub function_arn: String,
    /// Days between rotations.
    pub days: i64,
}

impl Default for RotationSettings {
    fn default() -> Self {
        RotationSettings {
            function_arn: String::new(),
            days: 30,
        }
    }
}

/// People's logins on the target server (docs/approvals.md, "People's logins").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeopleSettings {
    /// `password` (default): each grant's role gets a random password, kept in the secret
    /// store (`dbgw/person/<role>`) for the proxy. `rds-iam` (RDS, with the proxy's
    /// `upstream.auth = "rds-iam"`): the role is a member of `rds_iam` and has no password;
    /// no secret is made. At start-up, roles made earlier with a password are switched too.
    pub login: grants::PeopleLogin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Id of the secret holding `{"url": "<Slack-compatible incoming-webhook URL>"}` (such
    /// a URL is itself a credential); empty: no notifications.
    pub secret: String,
    pub timeout_secs: u64,
    /// Attempts before a message is given up (and counted as failed).
    pub max_attempts: i32,
    /// First retry delay; doubled at each attempt, at most an hour.
    pub backoff_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            secret: String::new(),
            timeout_secs: 5,
            max_attempts: 8,
            backoff_ms: 2_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_files_and_env_override_them() {
        let s = Settings::default();
        s.validate().unwrap();
        assert_eq!(s.level("rates", "read-only").unwrap().role, "rates_reader");
        assert!(!s.secure_cookies());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "public_url = \"https://approvals.example.com\"\n\
             [[catalogue]]\ndatabase = \"rates\"\nlevel = \"ro\"\nrole = \"rates_reader\"\n\
             max_duration_secs = 3600\napprovals = 2\n",
        )
        .unwrap();
        std::env::set_var("APPROVALS_SCHEDULER__INTERVAL_MS", "500");
        let s = Settings::load(Some(&path)).unwrap();
        std::env::remove_var("APPROVALS_SCHEDULER__INTERVAL_MS");
        assert!(s.secure_cookies());
        assert_eq!(s.catalogue.len(), 1);
        assert_eq!(s.level("rates", "ro").unwrap().approvals, 2);
        assert_eq!(s.scheduler.interval_ms, 500);

        std::fs::write(&path, "[oidc]\nclient_secret = \"hunter2\"\n").unwrap();
        let err = format!("{:#}", Settings::load(Some(&path)).unwrap_err());
        assert!(
            err.contains("client_secret") && !err.contains("hunter2"),
            "{err}"
        );

        std::fs::write(
            &path,
            "[[catalogue]]\ndatabase = \"rates\"\nlevel = \"ro\"\nrole = \"r\"\n\
             max_duration_secs = 3600\napprovals = 0\n",
        )
        .unwrap();
        let err = format!("{:#}", Settings::load(Some(&path)).unwrap_err());
        assert!(err.contains("approvals must be 1 to 10"), "{err}");
    }

    #[test]
    fn the_database_sections_share_rates_apis_keys_and_the_old_seconds_key_still_works() {
        let s = Settings::default();
        assert_eq!(s.control.statement_timeout_ms, 10_000);
        assert_eq!(s.target.max_lifetime_secs, 1800);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "[control]\nstatement_timeout_secs = 3\n[target]\nstatement_timeout_ms = 750\n",
        )
        .unwrap();
        let s = Settings::load(Some(&path)).unwrap();
        assert_eq!(s.control.statement_timeout_ms, 3000);
        assert_eq!(s.target.statement_timeout_ms, 750);

        std::fs::write(
            &path,
            "[control]\nstatement_timeout_secs = 3\nstatement_timeout_ms = 750\n",
        )
        .unwrap();
        let err = format!("{:#}", Settings::load(Some(&path)).unwrap_err());
        assert!(err.contains("control.statement_timeout_secs"), "{err}");
    }
}

/// The proxy's audit log, read (never written) to show what was done under each access.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// A directory of audit files or `s3://bucket/prefix` (the shipped copy); unset: the
    /// request pages say the audit store is not configured.
    pub location: Option<PathBuf>,
    /// Published heads (`head.json`, local or in S3) that anchor the chains; unset: the
    /// pages say "no head anchored".
    pub head: Option<PathBuf>,
}

/// The SCIM 2.0 provisioning endpoint (`/scim/v2/Users`, docs/approvals.md "Deprovisioning
/// (SCIM)"): off unless enabled. The identity provider authenticates with a bearer token
/// kept in the secret store, never in this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ScimSettings {
    pub enabled: bool,
    /// Id of the secret holding `{"token": "..."}`: the bearer token the provider is
    /// configured with (at least 32 characters).
    pub secret: String,
}

impl Default for ScimSettings {
    fn default() -> Self {
        ScimSettings {
            enabled: false,
            secret: "dbgw/approvals-scim".into(),
        }
    }
}
