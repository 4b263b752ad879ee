//! Where secrets live. Every dbgw component reads credentials through [`SecretStore`], so the
//! local stack (files under `.dev/secrets`) and production (AWS Secrets Manager) differ only in
//! configuration.
//!
//! Secret values are JSON documents. Database credentials use the layout of the secrets that
//! RDS and Secrets Manager rotation use (`{"username": ..., "password": ...}` plus optional
//! connection fields), so the same secret works with AWS tooling.

mod file;

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use file::{write_private, FileStore};

/// The `[secrets]` section of a service's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    pub backend: Backend,
    /// Directory of the `file` backend: secret `a/b` is the file `a/b.json` inside it.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    File,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        SecretsSettings {
            backend: Backend::File,
            dir: PathBuf::from(".dev/secrets"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("secret `{0}` does not exist")]
    NotFound(String),
    #[error("secret id `{0}` is not valid (letters, digits and /_+=.@- only)")]
    BadId(String),
    #[error("secret `{id}` is not the expected JSON document: {reason}")]
    Malformed { id: String, reason: String },
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
}

impl SecretStore {
    pub fn from_settings(settings: &SecretsSettings) -> Self {
        match settings.backend {
            Backend::File => SecretStore::File(FileStore::new(settings.dir.clone())),
        }
    }

    /// The current value of a secret, as text.
    pub async fn get(&self, id: &str) -> Result<SecretString> {
        check_id(id)?;
        match self {
            SecretStore::File(f) => f.get(id).await,
        }
    }

    /// Creates or replaces a secret.
    pub async fn put(&self, id: &str, value: &SecretString) -> Result<()> {
        check_id(id)?;
        match self {
            SecretStore::File(f) => f.put(id, value).await,
        }
    }

    /// Deletes a secret. Idempotent: deleting a secret that does not exist succeeds.
    pub async fn delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        match self {
            SecretStore::File(f) => f.delete(id).await,
        }
    }

    /// Reads a secret holding database credentials.
    pub async fn db_credentials(&self, id: &str) -> Result<DbCredentials> {
        let raw = self.get(id).await?;
        serde_json::from_str(raw.expose_secret()).map_err(|e| Error::Malformed {
            id: id.to_string(),
            // serde_json's message names the field and position, never the value.
            reason: format!(
                "expected {{\"username\", \"password\"}}: {}",
                strip_value(&e)
            ),
        })
    }

    /// Stores database credentials.
    pub async fn put_db_credentials(&self, id: &str, creds: &DbCredentials) -> Result<()> {
        let text = serde_json::to_string(creds).expect("credentials serialize");
        self.put(id, &SecretString::from(text)).await
    }
}

fn strip_value(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
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
