//! The shipped audit in S3: listing a prefix's audit files and streaming objects, for the
//! synchronous readers of [`super::source`].
//!
//! The client takes its region, endpoint and credentials from the AWS SDK's usual sources
//! (environment, profile, task role); `AWS_ENDPOINT_URL_S3` names another endpoint. An
//! endpoint on a loopback address is an emulator (moto in the local stack and the tests), as
//! for the secret store: it gets fixed credentials, a default region and path-style
//! addressing, so nothing local asks the instance metadata service.

use std::fmt;
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use aws_sdk_s3::Client;

/// `s3://bucket/prefix` as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// The prefix or key ("" for the whole bucket).
    pub key: String,
}

impl Location {
    /// `None` when `path` is not an `s3://` address.
    pub fn parse(path: &Path) -> anyhow::Result<Option<Location>> {
        let Some(rest) = path.to_str().and_then(|s| s.strip_prefix("s3://")) else {
            return Ok(None);
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "{}: no bucket", path.display());
        Ok(Some(Location {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }))
    }

    pub fn object(&self, key: &str) -> Object {
        Object {
            bucket: self.bucket.clone(),
            key: key.to_string(),
        }
    }

    /// The prefix to list: a "directory", so `audit/a` does not take in `audit/ab`.
    fn prefix(&self) -> String {
        if self.key.is_empty() || self.key.ends_with('/') {
            self.key.clone()
        } else {
            format!("{}/", self.key)
        }
    }
}

/// One object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bucket: String,
    pub key: String,
}

impl Object {
    /// The last part of the key.
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    /// The object named `name` in the same "directory".
    pub fn sibling(&self, name: &str) -> Object {
        let dir = self.key.rsplit_once('/').map_or("", |(d, _)| d);
        Object {
            bucket: self.bucket.clone(),
            key: if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            },
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A client and the runtime that drives it: the readers are synchronous, and each read
/// of a stream runs the runtime until its next chunk arrives.
pub struct Store {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

static STORE: OnceLock<Store> = OnceLock::new();

/// The process's one S3 store, made at first use.
pub fn store() -> anyhow::Result<&'static Store> {
    if let Some(s) = STORE.get() {
        return Ok(s);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(client());
    Ok(STORE.get_or_init(|| Store { runtime, client }))
}

/// The endpoint the SDK will use, when one is set in the environment.
fn endpoint() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()))
}

async fn client() -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(secret_store::aws::http_client());
    let emulator = endpoint().is_some_and(|e| secret_store::aws::is_emulator(&e));
    if emulator {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            "dev",
            "dev",
            None,
            None,
            "dbgw-local-emulator",
        ));
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    let shared = loader.load().await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(emulator)
        .build();
    Client::from_conf(config)
}

impl Store {
    /// The audit files (`audit-*.jsonl`) under `location`, sorted by key.
    pub fn audit_files(&self, location: &Location) -> anyhow::Result<Vec<Object>> {
        let prefix = location.prefix();
        let mut keys = Vec::new();
        self.runtime.block_on(async {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&location.bucket)
                .prefix(&prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page =
                    page.with_context(|| format!("listing s3://{}/{prefix}", location.bucket))?;
                for object in page.contents() {
                    let Some(key) = object.key() else { continue };
                    let name = key.rsplit('/').next().unwrap_or(key);
                    if name.starts_with("audit-") && name.ends_with(".jsonl") {
                        keys.push(key.to_string());
                    }
                }
            }
            anyhow::Ok(())
        })?;
        keys.sort();
        Ok(keys.iter().map(|k| location.object(k)).collect())
    }

    /// The object's content, streamed (its current version).
    pub fn open(&'static self, object: &Object) -> anyhow::Result<Box<dyn BufRead + Send>> {
        self.open_range(object, None)
    }

    /// The object's first `bytes` (a ranged GET: reading a file's first records does not
    /// fetch the whole file).
    pub fn open_start(
        &'static self,
        object: &Object,
        bytes: u64,
    ) -> anyhow::Result<Box<dyn BufRead + Send>> {
        self.open_range(object, Some(bytes))
    }

    fn open_range(
        &'static self,
        object: &Object,
        bytes: Option<u64>,
    ) -> anyhow::Result<Box<dyn BufRead + Send>> {
        let output = self
            .runtime
            .block_on(
                self.client
                    .get_object()
                    .bucket(&object.bucket)
                    .key(&object.key)
                    .set_range(bytes.map(|n| format!("bytes=0-{}", n.saturating_sub(1))))
                    .send(),
            )
            .with_context(|| format!("reading {object}"))?;
        Ok(Box::new(std::io::BufReader::with_capacity(
            64 * 1024,
            Body {
                store: self,
                stream: output.body,
                chunk: bytes::Bytes::new(),
                name: object.to_string(),
            },
        )))
    }

    /// A small object whole; `None` when there is none.
    pub fn read(&'static self, object: &Object) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.exists(object)? {
            return Ok(None);
        }
        let mut out = Vec::new();
        self.open(object)?.read_to_end(&mut out)?;
        Ok(Some(out))
    }

    pub fn exists(&self, object: &Object) -> anyhow::Result<bool> {
        let head = self.runtime.block_on(
            self.client
                .head_object()
                .bucket(&object.bucket)
                .key(&object.key)
                .send(),
        );
        match head {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("looking up {object}")),
        }
    }
}

/// An object's body as a blocking reader.
struct Body {
    store: &'static Store,
    stream: aws_sdk_s3::primitives::ByteStream,
    chunk: bytes::Bytes,
    name: String,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.store.runtime.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!("reading {}: {e}", self.name)))
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_into_bucket_and_prefix() {
        let l = Location::parse(Path::new("s3://audit-bucket/audit/task-1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix()),
            ("audit-bucket", "audit/task-1/".into())
        );
        let whole = Location::parse(Path::new("s3://b")).unwrap().unwrap();
        assert_eq!(whole.prefix(), "");
        assert!(Location::parse(Path::new("/var/log/audit"))
            .unwrap()
            .is_none());
        assert!(Location::parse(Path::new("s3:///x")).is_err());
        let o = l.object("audit/task-1/audit-1-2.jsonl");
        assert_eq!(o.name(), "audit-1-2.jsonl");
        assert_eq!(o.sibling("head.json").key, "audit/task-1/head.json");
    }
}
