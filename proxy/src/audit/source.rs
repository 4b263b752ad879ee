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

    /// Its records, streamed (up to the zeros reserved at the end of a live file).
    pub fn open(&self) -> anyhow::Result<Box<dyn BufRead + Send>> {
        let stream: Box<dyn BufRead + Send> = match self {
            AuditFile::Local(p) => {
                let file = std::fs::File::open(p)
                    .map_err(|e| anyhow::anyhow!("opening {}: {e}", p.display()))?;
                Box::new(std::io::BufReader::new(file))
            }
            AuditFile::S3(o) => s3::store()?.open(o)?,
        };
        Ok(Box::new(Written(Some(stream))))
    }

    /// Its first `bytes` at least (all of it when shorter), streamed.
    pub fn open_start(&self, bytes: u64) -> anyhow::Result<Box<dyn BufRead + Send>> {
        match self {
            AuditFile::Local(_) => self.open(),
            AuditFile::S3(o) => Ok(Box::new(Written(Some(s3::store()?.open_start(o, bytes)?)))),
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

/// The records of an audit file's bytes: all of them, or those before the first NUL. In
/// fsync durability the writer keeps zeros written ahead of its records (so a sync flushes
/// data, not the file's size), so a live file, or a copy shipped while it was live, ends in
/// zeros; a finished file is cut to its records. Records never hold a NUL byte (JSON
/// escapes it), so nothing after the first one is a record.
pub fn written(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// A stream of [`written`] bytes: it ends at the first NUL.
struct Written(Option<Box<dyn BufRead + Send>>);

impl std::io::Read for Written {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Written {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let Some(inner) = self.0.as_mut() else {
            return Ok(&[]);
        };
        let available = inner.fill_buf()?;
        if available.first() == Some(&0) {
            self.0 = None;
            return Ok(&[]);
        }
        // Safe to re-borrow: the borrow above ended with the check.
        let available = self.0.as_mut().expect("checked above").fill_buf()?;
        Ok(written(available))
    }

    fn consume(&mut self, n: usize) {
        if let Some(inner) = self.0.as_mut() {
            inner.consume(n);
        }
    }
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read};

    /// A stream ends at the first NUL, however the reads fall on it.
    #[test]
    fn a_stream_of_records_ends_at_the_zeros() {
        let bytes = b"{\"a\":1}\n{\"b\":2}\n\0\0\0\0{\"c\":3}\n".to_vec();
        for capacity in [1, 3, 8, 64] {
            let inner =
                std::io::BufReader::with_capacity(capacity, std::io::Cursor::new(bytes.clone()));
            let mut text = String::new();
            super::Written(Some(Box::new(inner)))
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n", "capacity {capacity}");
            let inner =
                std::io::BufReader::with_capacity(capacity, std::io::Cursor::new(bytes.clone()));
            let lines: Vec<String> = super::Written(Some(Box::new(inner)))
                .lines()
                .map(Result::unwrap)
                .collect();
            assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}"]);
        }
        assert_eq!(super::written(b"ab\ncd"), b"ab\ncd");
        assert_eq!(super::written(b"ab\n\0cd"), b"ab\n");
    }
}
