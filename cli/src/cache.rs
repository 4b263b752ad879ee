//! The token cache: one JSON file in a directory only the user can read.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A signed-in session.
#[derive(Clone, Serialize, Deserialize)]
pub struct Cached {
    pub issuer: String,
    pub email: String,
    pub id_token: String,
    pub expires_at: DateTime<Utc>,
}

impl Cached {
    pub fn valid_for_secs(&self) -> i64 {
        (self.expires_at - Utc::now()).num_seconds()
    }
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("token.json")
    }

    /// The cached token for `issuer`, if any.
    pub fn load(&self, issuer: &str) -> anyhow::Result<Option<Cached>> {
        let text = match std::fs::read_to_string(self.file()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("reading the token cache"),
        };
        // A damaged cache is as good as none: the user signs in again.
        Ok(serde_json::from_str::<Cached>(&text)
            .ok()
            .filter(|c| c.issuer == issuer))
    }

    pub fn store(&self, token: &Cached) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        secret_store::write_private(&self.file(), serde_json::to_string(token)?.as_bytes())
            .context("writing the token cache")
    }

    pub fn clear(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("dbgw"));
        assert!(cache.load("iss").unwrap().is_none());
        let t = Cached {
            issuer: "iss".into(),
            email: "a@b".into(),
            id_token: "x.y.z".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(5),
        };
        cache.store(&t).unwrap();
        let mode = std::fs::metadata(dir.path().join("dbgw/token.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(cache.load("iss").unwrap().unwrap().id_token, "x.y.z");
        assert!(
            cache.load("other-issuer").unwrap().is_none(),
            "tokens are per issuer"
        );
        std::fs::write(dir.path().join("dbgw/token.json"), "garbage").unwrap();
        assert!(cache.load("iss").unwrap().is_none());
        cache.clear().unwrap();
        cache.clear().unwrap();
    }
}
