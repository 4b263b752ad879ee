//! The chain's head, published outside the chain: a small JSON file the writer replaces
//! (atomically) every `audit.head_interval_secs` and when it stops, once the records it names
//! are on disk. Deployment ships it to write-once storage beside the audit files. With it,
//! a cut tail is detected: `proxy audit verify --head` checks the chain reaches it, and the
//! writer refuses to continue a chain shorter than its last head.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    /// The audit file that holds record `seq`.
    pub file: String,
    /// When it was published.
    pub ts: String,
}

impl Head {
    /// `SEQ:HASH`, as `proxy audit verify --head` takes it.
    pub fn parse_anchor(text: &str) -> anyhow::Result<Head> {
        let (seq, hash) = text
            .split_once(':')
            .context("a head is SEQ:HASH (or use --head-file)")?;
        anyhow::ensure!(
            super::line::decode_hash(hash).is_some(),
            "the head's hash is not 64 hex digits"
        );
        Ok(Head {
            seq: seq.parse().context("the head's sequence number")?,
            hash: hash.to_string(),
            file: String::new(),
            ts: String::new(),
        })
    }

    /// Reads a head file, local or in S3 (`s3://bucket/key`); `None` when there is none.
    pub fn read(path: &Path) -> anyhow::Result<Option<Head>> {
        match super::source::read_small(path)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not an audit head", path.display())),
            None => Ok(None),
        }
    }

    /// Replaces the file at `path` with this head: written to a temporary file, synced,
    /// renamed over it, and the directory synced.
    pub fn publish(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Where the head is published: `audit.head_file`, or `head.json` in the audit directory.
pub fn path(settings: &super::AuditSettings) -> PathBuf {
    settings
        .head_file
        .clone()
        .unwrap_or_else(|| settings.dir.join("head.json"))
}
