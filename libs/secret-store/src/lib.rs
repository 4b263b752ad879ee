//! Where secrets live. Every dbgw component reads credentials through [`SecretStore`], so the
//! local stack (files under `.dev/secrets`) and production (AWS Secrets Manager, or moto server
//! as its emulator) differ only in configuration.
//!
//! Secret values are JSON documents. Database credentials use the layout of the secrets that
//! AWS's RDS rotation functions use (`engine`, `host`, `port`, `username`, `password`,
//! `dbname`, and `masterarn` when another secret's user changes the password), so the same
//! secret works with AWS tooling.
//!
//! Secrets have versions with stages ([`Stage`]): a rotation writes `AWSPENDING`, then moves
//! `AWSCURRENT` to it, and the old current becomes `AWSPREVIOUS`. The file backend has one
//! version per secret, always current.

pub mod aws;
mod file;

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use aws::AwsStore;
pub use file::{write_private, FileStore};

/// The `[secrets]` section of a service's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    pub backend: Backend,
    /// Directory of the `file` backend: secret `a/b` is the file `a/b.json` inside it.
    pub dir: PathBuf,
    /// `aws` backend: the region; unset, the SDK's chain decides (`AWS_REGION`, the task's).
    pub region: Option<String>,
    /// `aws` backend: another endpoint than AWS's, such as moto server's `http://127.0.0.1:5000`.
    pub endpoint_url: Option<String>,
    /// `aws` backend: how long a read (per secret and stage) is reused. Logins that fail
    /// refresh at once, so this bounds API calls, not how fast a rotation is followed.
    pub cache_ttl_ms: u64,
    /// `aws` backend: a refresh (after a failed login) drops only reads older than this, so
    /// a client failing logins on purpose costs at most one API call per secret this often.
    pub min_refresh_ms: u64,
    /// `aws` backend: the KMS key (ARN, id or alias) of secrets this store creates; unset,
    /// Secrets Manager's default key (`aws/secretsmanager`).
    pub kms_key_id: Option<String>,
    /// `aws` backend: a secret this store deletes can be restored for this many days (7 to
    /// 30); 0 deletes it at once. Putting a secret that waits for deletion restores it.
    pub recovery_window_days: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    File,
    Aws,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        SecretsSettings {
            backend: Backend::File,
            dir: PathBuf::from(".dev/secrets"),
            region: None,
            endpoint_url: None,
            cache_ttl_ms: 30_000,
            min_refresh_ms: 1_000,
            kms_key_id: None,
            recovery_window_days: 0,
        }
    }
}

/// A version's staging label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Current,
    Previous,
    Pending,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Previous => "AWSPREVIOUS",
            Stage::Pending => "AWSPENDING",
        }
    }
}

/// One version of a secret: its id (Secrets Manager's `VersionId`) and its value.
#[derive(Clone)]
pub struct Version {
    pub id: String,
    pub value: SecretString,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version").field("id", &self.id).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("secret `{0}` does not exist")]
    NotFound(String),
    #[error("secret id `{0}` is not valid (letters, digits and /_+=.@- only, or an ARN)")]
    BadId(String),
    #[error("secret `{id}` is not the expected JSON document: {reason}")]
    Malformed { id: String, reason: String },
    #[error("secret `{id}`: {what} needs the `aws` backend")]
    Unsupported { id: String, what: &'static str },
    #[error("Secrets Manager on `{id}`: {message}")]
    Aws { id: String, message: String },
    #[error("secret store I/O on `{id}`: {source}")]
    Io {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Database login credentials as stored (RDS secret layout). `Debug` never shows the password.
#[derive(Clone, Serialize, Deserialize)]
pub struct DbCredentials {
    pub username: String,
    #[serde(serialize_with = "expose")]
    pub password: SecretString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbname: Option<String>,
    /// The secret whose user changes this one's password (alternating users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masterarn: Option<String>,
    /// `"single-user"`: the master changes this user's password instead of alternating
    /// users (people's roles, control-plane logins). See docs/rotation.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
}

impl DbCredentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        DbCredentials {
            username: username.into(),
            password: SecretString::from(password.into()),
            engine: Some("postgres".into()),
            host: None,
            port: None,
            dbname: None,
            masterarn: None,
            rotation: None,
        }
    }
}

impl std::fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn expose<S: serde::Serializer>(
    secret: &SecretString,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// A random password of 32 URL-safe characters (~190 bits), for roles dbgw creates.
pub fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// The store itself. One variant per backend; the file backend is the local one.
#[derive(Debug, Clone)]
pub enum SecretStore {
    File(FileStore),
    Aws(AwsStore),
}

impl SecretStore {
    pub fn from_settings(settings: &SecretsSettings) -> Self {
        match settings.backend {
            Backend::File => SecretStore::File(FileStore::new(settings.dir.clone())),
            Backend::Aws => SecretStore::Aws(AwsStore::new(settings.clone())),
        }
    }

    /// The current value of a secret, as text.
    pub async fn get(&self, id: &str) -> Result<SecretString> {
        Ok(self.version(id, Stage::Current).await?.value)
    }

    /// The version of a secret at `stage` (cached briefly by the `aws` backend). The file
    /// backend has only a current version; its id is a digest of the value.
    pub async fn version(&self, id: &str, stage: Stage) -> Result<Version> {
        self.check_id(id)?;
        match self {
            SecretStore::File(f) if stage == Stage::Current => {
                let value = f.get(id).await?;
                Ok(Version {
                    id: file::version_id(&value),
                    value,
                })
            }
            SecretStore::File(_) => Err(Error::NotFound(format!("{id} ({})", stage.label()))),
            SecretStore::Aws(a) => a.version(id, stage).await,
        }
    }

    /// Forgets cached reads of `id`: a login with them failed, the stages may have moved.
    pub fn refresh(&self, id: &str) {
        if let SecretStore::Aws(a) = self {
            a.refresh(id);
        }
    }

    /// Database credentials at `stage`, with the id of their version.
    pub async fn db_credentials_at(
        &self,
        id: &str,
        stage: Stage,
    ) -> Result<(String, DbCredentials)> {
        let v = self.version(id, stage).await?;
        Ok((v.id, parse_credentials(id, &v.value)?))
    }

    /// Creates or replaces a secret.
    pub async fn put(&self, id: &str, value: &SecretString) -> Result<()> {
        self.check_id(id)?;
        match self {
            SecretStore::File(f) => f.put(id, value).await,
            SecretStore::Aws(a) => a.put(id, value).await,
        }
    }

    /// The ids of every secret in the store, sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        match self {
            SecretStore::File(f) => f.list().await,
            SecretStore::Aws(a) => a.list().await,
        }
    }

    /// Has `function_arn` rotate the secret every `days` days (Secrets Manager only; the file
    /// backend refuses, it has no versions to rotate).
    pub async fn enable_rotation(&self, id: &str, function_arn: &str, days: i64) -> Result<()> {
        self.check_id(id)?;
        match self {
            SecretStore::File(_) => Err(Error::Unsupported {
                id: id.into(),
                what: "rotation",
            }),
            SecretStore::Aws(a) => a.enable_rotation(id, function_arn, days).await,
        }
    }

    /// Deletes a secret. Idempotent: deleting a secret that does not exist succeeds.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.check_id(id)?;
        match self {
            SecretStore::File(f) => f.delete(id).await,
            SecretStore::Aws(a) => a.delete(id).await,
        }
    }

    /// Reads the current version of a secret holding database credentials.
    pub async fn db_credentials(&self, id: &str) -> Result<DbCredentials> {
        Ok(self.db_credentials_at(id, Stage::Current).await?.1)
    }

    /// Stores database credentials.
    pub async fn put_db_credentials(&self, id: &str, creds: &DbCredentials) -> Result<()> {
        let text = serde_json::to_string(creds).expect("credentials serialize");
        self.put(id, &SecretString::from(text)).await
    }
}

/// Database credentials from a secret's text; the error never quotes the text.
pub fn parse_credentials(id: &str, raw: &SecretString) -> Result<DbCredentials> {
    serde_json::from_str(raw.expose_secret()).map_err(|e| Error::Malformed {
        id: id.to_string(),
        // serde_json's message names the field and position, never the value.
        reason: format!(
            "expected {{\"username\", \"password\"}}: {}",
            strip_value(&e)
        ),
    })
}

fn strip_value(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

impl SecretStore {
    /// Ids are names (`a/b`), or for Secrets Manager also ARNs (`arn:aws:...:secret:a/b-x1`).
    fn check_id(&self, id: &str) -> Result<()> {
        match self {
            SecretStore::Aws(_) if id.starts_with("arn:") => check_id(&id.replace(':', "/")),
            _ => check_id(id),
        }
    }
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 512
        && !id.starts_with('/')
        && !id
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::BadId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::File(FileStore::new(dir.path().to_path_buf()));
        let creds = DbCredentials::new("rates_api", "s3cr3t-value");
        store
            .put_db_credentials("dbgw/rates-api", &creds)
            .await
            .unwrap();
        let back = store.db_credentials("dbgw/rates-api").await.unwrap();
        assert_eq!(back.username, "rates_api");
        assert_eq!(back.password.expose_secret(), "s3cr3t-value");
        assert!(!format!("{back:?}").contains("s3cr3t"));

        let missing = store.db_credentials("dbgw/nope").await.unwrap_err();
        assert!(matches!(missing, Error::NotFound(_)), "{missing}");

        store
            .put("dbgw/other", &SecretString::from("{}".to_string()))
            .await
            .unwrap();
        assert_eq!(
            store.list().await.unwrap(),
            ["dbgw/other", "dbgw/rates-api"]
        );
        store.delete("dbgw/other").await.unwrap();
        store.delete("dbgw/rates-api").await.unwrap();
        assert!(matches!(
            store.db_credentials("dbgw/rates-api").await,
            Err(Error::NotFound(_))
        ));
        store.delete("dbgw/rates-api").await.unwrap();
        assert!(matches!(
            store.get("../etc/passwd").await,
            Err(Error::BadId(_))
        ));
        assert!(matches!(store.get("a//b").await, Err(Error::BadId(_))));

        store
            .put(
                "dbgw/bad",
                &SecretString::from("{\"username\":\"x\",\"pass\":\"leak-me\"}".to_string()),
            )
            .await
            .unwrap();
        let bad = store
            .db_credentials("dbgw/bad")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("dbgw/bad") && !bad.contains("leak-me"),
            "{bad}"
        );
    }

    #[test]
    fn generated_passwords_differ() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert_ne!(a, generate_password());
    }
}
