//! Where the audit is read from: local files and directories, or the shipped copy in S3
//! (`s3://bucket/prefix`, the layout deploy/audit-shipper/ship.sh writes). Either way a chain
//! is a list of [`AuditFile`]s in order, each opened as a stream when its turn comes: a
//! bucket is never loaded into memory.

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::s3;

/// One audit file, wherever it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFile {
    Local(PathBuf),
    S3(s3::Object),
}

impl AuditFile {
    /// The file's own name (`audit-<seq>-<time>.jsonl`), as records and heads name it.
    pub fn name(&self) -> String {
        match self {
            AuditFile::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            AuditFile::S3(o) => o.name().to_string(),
        }
    }

    /// Its content, streamed.
    pub fn open(&self) -> anyhow::Result<Box<dyn BufRead + Send>> {
        match self {
            AuditFile::Local(p) => {
                let file = std::fs::File::open(p)
                    .map_err(|e| anyhow::anyhow!("opening {}: {e}", p.display()))?;
                Ok(Box::new(std::io::BufReader::new(file)))
            }
            AuditFile::S3(o) => s3::store()?.open(o),
        }
    }

    /// Its first `bytes` at least (all of it when shorter), streamed.
    pub fn open_start(&self, bytes: u64) -> anyhow::Result<Box<dyn BufRead + Send>> {
        match self {
            AuditFile::Local(_) => self.open(),
            AuditFile::S3(o) => s3::store()?.open_start(o, bytes),
        }
    }

    /// Whether a file named `name` exists beside this one.
    pub fn sibling_exists(&self, name: &str) -> anyhow::Result<bool> {
        match self {
            AuditFile::Local(p) => Ok(p.with_file_name(name).exists()),
            AuditFile::S3(o) => s3::store()?.exists(&o.sibling(name)),
        }
    }
}

impl fmt::Display for AuditFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditFile::Local(p) => write!(f, "{}", p.display()),
            AuditFile::S3(o) => write!(f, "{o}"),
        }
    }
}

impl From<PathBuf> for AuditFile {
    fn from(p: PathBuf) -> Self {
        AuditFile::Local(p)
    }
}

/// Expands directories and S3 prefixes into their audit files (in chain order: sorted by
/// name, and in S3 by key, so each task's files stay together); files and objects named
/// whole are taken as given.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<AuditFile>> {
    let mut out = Vec::new();
    for p in paths {
        if let Some(location) = s3::Location::parse(p)? {
            let store = s3::store()?;
            if location.key.ends_with(".jsonl") {
                out.push(AuditFile::S3(location.object(&location.key)));
            } else {
                out.extend(store.audit_files(&location)?.into_iter().map(AuditFile::S3));
            }
        } else if p.is_dir() {
            out.extend(audit_files(p)?.into_iter().map(AuditFile::Local));
        } else {
            out.push(AuditFile::Local(p.clone()));
        }
    }
    anyhow::ensure!(!out.is_empty(), "no audit files to read");
    Ok(out)
}

/// A small file (a head), local or in S3; `None` when it does not exist.
pub fn read_small(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(location) = s3::Location::parse(path)? {
        return s3::store()?.read(&location.object(&location.key));
    }
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Sorted audit files of a directory (the writer names them `audit-*.jsonl`).
pub fn audit_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}
