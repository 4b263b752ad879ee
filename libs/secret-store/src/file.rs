//! The local backend: one JSON file per secret, mode 0600, replaced atomically on write so a
//! reader never sees half a secret.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result};

/// A file's version id: the first 8 bytes of its value's SHA-256, in hex (not a secret: the
/// value has ~190 bits of entropy, and 64 bits of a hash do not lead back to it).
pub(crate) fn version_id(value: &SecretString) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(value.expose_secret().as_bytes())[..8])
}

#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(dir: PathBuf) -> Self {
        FileStore { dir }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub(crate) async fn get(&self, id: &str) -> Result<SecretString> {
        match tokio::fs::read_to_string(self.path(id)).await {
            Ok(text) => Ok(SecretString::from(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(id.into())),
            Err(source) => Err(Error::Io {
                id: id.into(),
                source,
            }),
        }
    }

    pub(crate) async fn put(&self, id: &str, value: &SecretString) -> Result<()> {
        let path = self.path(id);
        let value = value.expose_secret().to_string();
        let io = |source| Error::Io {
            id: id.to_string(),
            source,
        };
        tokio::task::spawn_blocking(move || write_private(&path, value.as_bytes()))
            .await
            .expect("secret write task")
            .map_err(io)
    }

    /// The ids of every secret (`a/b` for `a/b.json`), sorted.
    pub(crate) async fn list(&self) -> Result<Vec<String>> {
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut ids = Vec::new();
            let mut dirs = vec![dir.clone()];
            while let Some(d) = dirs.pop() {
                let entries = match std::fs::read_dir(&d) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let path = entry?.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if let Some(id) = path
                        .strip_prefix(&dir)
                        .ok()
                        .and_then(|p| p.to_str())
                        .and_then(|p| p.strip_suffix(".json"))
                    {
                        ids.push(id.to_string());
                    }
                }
            }
            ids.sort();
            Ok(ids)
        })
        .await
        .expect("secret listing task");
        found.map_err(|source| Error::Io {
            id: self.dir.display().to_string(),
            source,
        })
    }

    /// Removes a secret; one that does not exist is already removed.
    pub(crate) async fn delete(&self, id: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                id: id.into(),
                source,
            }),
        }
    }
}

/// Writes a file only its owner can read (0600), whole or not at all: a temporary file,
/// synced, renamed over `path`. Every private file dbgw writes (secrets, keys, the CLI's
/// token cache, password files) goes through here.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
