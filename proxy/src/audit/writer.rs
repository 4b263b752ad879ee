//! The audit writer: write-ahead, batched, hash-chained, rotating.
//!
//! - [`AuditLog::accept`] is the write-ahead path. It writes the given records, together with
//!   every record waiting in the buffer, with one `write(2)`; in `fsync` durability it also
//!   waits until an `fdatasync` covers them (group commit: one sync serves every session that
//!   wrote meanwhile). Only when it returns `Ok` may the statement be forwarded.
//! - [`AuditLog::record`] buffers records that follow the fact (outcomes, disconnects); they
//!   go out with the next write-ahead batch or the periodic flush, whichever comes first.
//! - A failed write is undone (the file is truncated back to its last whole record), the log
//!   turns unhealthy, and every `accept` fails until a write succeeds again: fail closed.
//!   Buffered records are kept for the retry.
//! - Files rotate by size and age; the chain runs on across files and restarts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// When a write-ahead record counts as accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Handed to the kernel (`write` returned): survives a proxy crash, not a power loss.
    Buffered,
    /// On disk (`fdatasync` returned): survives a power loss; costs a sync per batch.
    Fsync,
}

/// The `[audit]` section of the proxy's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Directory of the `audit-*.jsonl` files.
    pub dir: PathBuf,
    pub durability: Durability,
    /// Start a new file when the current one reaches this size.
    pub max_file_bytes: u64,
    /// ... or this age, in seconds.
    pub max_file_age_secs: u64,
    /// How long a buffered record (an outcome) may wait for a write, in milliseconds.
    pub flush_interval_ms: u64,
    /// Bound parameters longer than this are cut and marked with their full size.
    pub param_cap_bytes: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            dir: PathBuf::from(".dev/audit"),
            durability: Durability::Buffered,
            max_file_bytes: 128 * 1024 * 1024,
            max_file_age_secs: 24 * 3600,
            flush_interval_ms: 20,
            param_cap_bytes: 2048,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("audit log unavailable: {0}")]
pub struct AuditError(pub String);

/// Counters the writer keeps; registered by the metrics module.
#[derive(Debug, Clone, Default)]
pub struct AuditMetrics {
    pub records: Counter,
    pub batches: Counter,
    pub write_errors: Counter,
    /// Records waiting in the buffer.
    pub buffered: Gauge,
}

/// A zero hash: the `prev` of the very first record.
const GENESIS: [u8; 32] = [0; 32];

/// The name of the file whose first record has sequence number `seq`.
fn file_name(seq: u64) -> String {
    format!(
        "audit-{seq:016}-{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    )
}

struct State {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes of whole records in the current file; a failed write is cut back to here.
    file_len: u64,
    opened: Instant,
    /// Sequence number and hash of the last record written.
    seq: u64,
    prev: [u8; 32],
    /// Bodies waiting for the next write.
    buffered: Vec<String>,
    /// Reused for building lines.
    out: Vec<u8>,
    /// Why the last write failed, until a write succeeds.
    failed: Option<String>,
}

/// What the syncer has made durable (fsync mode).
#[derive(Debug, Clone, Default)]
struct Synced {
    seq: u64,
    error: Option<String>,
}

pub struct AuditLog {
    settings: AuditSettings,
    state: Mutex<State>,
    healthy: AtomicBool,
    metrics: AuditMetrics,
    synced: watch::Sender<Synced>,
    /// Wakes the syncer thread; the flag says a sync is wanted.
    sync_wanted: (Mutex<bool>, Condvar),
}

impl AuditLog {
    /// Opens the log in `settings.dir`, continuing the chain of the files already there, in
    /// a new file. In fsync mode it also starts the syncer thread.
    pub fn open(settings: AuditSettings, metrics: AuditMetrics) -> anyhow::Result<Arc<AuditLog>> {
        std::fs::create_dir_all(&settings.dir)
            .with_context(|| format!("creating audit directory {}", settings.dir.display()))?;
        let (seq, prev, previous_file) = chain_tail(&settings.dir)?;
        let path = settings.dir.join(file_name(seq + 1));
        let file = open_new(&path)?;
        let log = Arc::new(AuditLog {
            state: Mutex::new(State {
                file: Arc::new(file),
                path,
                file_len: 0,
                opened: Instant::now(),
                seq,
                prev,
                buffered: Vec::new(),
                out: Vec::with_capacity(64 * 1024),
                failed: None,
            }),
            healthy: AtomicBool::new(true),
            metrics,
            synced: watch::Sender::new(Synced { seq, error: None }),
            sync_wanted: (Mutex::new(false), Condvar::new()),
            settings,
        });
        let mut opened = String::new();
        super::record::push_ts(&mut opened);
        opened.push_str(",\"type\":\"log_opened\",");
        super::record::member_str(
            &mut opened,
            "previous_file",
            &previous_file.unwrap_or_default(),
        );
        opened.push_str(&format!(",\"pid\":{}", std::process::id()));
        log.write(&[opened]).map_err(|e| anyhow::anyhow!("{e}"))?;
        if log.settings.durability == Durability::Fsync {
            let syncer = log.clone();
            std::thread::Builder::new()
                .name("audit-sync".into())
                .spawn(move || syncer.sync_loop())?;
        }
        Ok(log)
    }

    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// False while writes fail. Readiness reports it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The write-ahead path: returns the sequence number of the first of `bodies` once they
    /// are accepted under the configured durability.
    pub async fn accept(&self, bodies: &[String]) -> Result<u64, AuditError> {
        let first = self.write(bodies)?;
        if self.settings.durability == Durability::Fsync {
            self.wait_synced(first + bodies.len() as u64 - 1).await?;
        }
        Ok(first)
    }

    /// Buffers a record that follows the fact; it is written with the next batch.
    pub fn record(&self, body: String) {
        let mut st = self.state.lock().unwrap();
        st.buffered.push(body);
        self.metrics.buffered.set(st.buffered.len() as i64);
        // Bound the buffer: past this, write now (a failure keeps the records buffered).
        if st.buffered.len() >= 4096 {
            let _ = self.write_locked(&mut st, &[]);
        }
    }

    /// Writes buffered records now. Called on a timer and at shutdown.
    pub fn flush(&self) -> Result<(), AuditError> {
        let mut st = self.state.lock().unwrap();
        if st.buffered.is_empty() && st.failed.is_none() {
            return Ok(());
        }
        self.write_locked(&mut st, &[])?;
        drop(st);
        if self.settings.durability == Durability::Fsync {
            self.want_sync();
        }
        Ok(())
    }

    /// Flushes and syncs: the last thing the proxy does.
    pub fn close(&self) -> Result<(), AuditError> {
        self.flush()?;
        let st = self.state.lock().unwrap();
        st.file
            .sync_data()
            .map_err(|e| AuditError(format!("syncing {}: {e}", st.path.display())))
    }

    /// Writes periodically until `stop` fires.
    pub async fn run_flusher(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.settings.flush_interval_ms.max(1),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.flush() {
                        tracing::error!(error = %e, "audit flush failed");
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    fn write(&self, bodies: &[String]) -> Result<u64, AuditError> {
        let mut st = self.state.lock().unwrap();
        self.write_locked(&mut st, bodies)
    }

    /// Writes buffered records then `bodies` in one `write(2)`; returns the sequence number
    /// of the first of `bodies`. On failure nothing is written and nothing is lost from the
    /// buffer; `bodies` are refused.
    fn write_locked(&self, st: &mut State, bodies: &[String]) -> Result<u64, AuditError> {
        if self.due_for_rotation(st) {
            if let Err(e) = self.rotate(st) {
                return Err(self.fail(st, format!("rotating the audit file: {e}")));
            }
        }
        let mut out = std::mem::take(&mut st.out);
        out.clear();
        let mut seq = st.seq;
        let mut prev = st.prev;
        for body in st.buffered.iter().chain(bodies) {
            seq += 1;
            prev = append_line(&mut out, seq, &prev, body);
        }
        let first_new = st.seq + st.buffered.len() as u64 + 1;
        let result = (&*st.file).write_all(&out);
        let written = out.len() as u64;
        st.out = out;
        match result {
            Ok(()) => {
                let count = seq - st.seq;
                st.seq = seq;
                st.prev = prev;
                st.file_len += written;
                st.buffered.clear();
                self.metrics.buffered.set(0);
                self.metrics.records.inc_by(count);
                self.metrics.batches.inc();
                if st.failed.take().is_some() {
                    self.healthy.store(true, Ordering::Relaxed);
                    tracing::warn!(file = %st.path.display(), "audit log writable again");
                }
                Ok(first_new)
            }
            Err(e) => {
                // Cut a partial record off so the file ends on a whole line.
                let _ = st.file.set_len(st.file_len);
                let _ = (&*st.file).seek(SeekFrom::Start(st.file_len));
                Err(self.fail(st, format!("writing {}: {e}", st.path.display())))
            }
        }
    }

    fn fail(&self, st: &mut State, reason: String) -> AuditError {
        self.metrics.write_errors.inc();
        if st.failed.is_none() {
            tracing::error!(error = %reason, "audit log write failed: refusing statements");
        }
        self.healthy.store(false, Ordering::Relaxed);
        st.failed = Some(reason.clone());
        AuditError(reason)
    }

    fn due_for_rotation(&self, st: &State) -> bool {
        st.file_len >= self.settings.max_file_bytes
            || st.opened.elapsed() >= Duration::from_secs(self.settings.max_file_age_secs)
    }

    /// Closes the current file (synced) and opens the next; the chain runs on.
    fn rotate(&self, st: &mut State) -> anyhow::Result<()> {
        st.file.sync_data()?;
        self.synced.send_if_modified(|s| {
            let moved = s.seq < st.seq;
            s.seq = s.seq.max(st.seq);
            moved
        });
        let path = self.settings.dir.join(file_name(st.seq + 1));
        let file = open_new(&path)?;
        let previous = st
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        st.file = Arc::new(file);
        st.path = path;
        st.file_len = 0;
        st.opened = Instant::now();
        let mut body = String::new();
        super::record::push_ts(&mut body);
        body.push_str(",\"type\":\"rotate\",");
        super::record::member_str(&mut body, "previous_file", &previous);
        st.buffered.insert(0, body);
        Ok(())
    }

    fn want_sync(&self) {
        let (flag, cv) = &self.sync_wanted;
        *flag.lock().unwrap() = true;
        cv.notify_one();
    }

    async fn wait_synced(&self, seq: u64) -> Result<(), AuditError> {
        let mut rx = self.synced.subscribe();
        self.want_sync();
        let state = rx
            .wait_for(|s| s.seq >= seq || s.error.is_some())
            .await
            .map_err(|_| AuditError("audit syncer stopped".into()))?;
        match &state.error {
            Some(e) if state.seq < seq => Err(AuditError(e.clone())),
            _ => Ok(()),
        }
    }

    /// fsync mode: one `fdatasync` per round covers every record written before it started.
    fn sync_loop(self: Arc<Self>) {
        loop {
            {
                let (flag, cv) = &self.sync_wanted;
                let mut wanted = flag.lock().unwrap();
                while !*wanted {
                    wanted = cv.wait(wanted).unwrap();
                }
                *wanted = false;
            }
            let (file, target) = {
                let st = self.state.lock().unwrap();
                (st.file.clone(), st.seq)
            };
            match file.sync_data() {
                Ok(()) => {
                    self.synced.send_modify(|s| {
                        s.seq = s.seq.max(target);
                        s.error = None;
                    });
                }
                Err(e) => {
                    let reason = format!("syncing the audit file: {e}");
                    let mut st = self.state.lock().unwrap();
                    let err = self.fail(&mut st, reason);
                    self.synced.send_modify(|s| s.error = Some(err.0));
                }
            }
        }
    }
}

/// Appends one line and returns its hash.
pub(crate) fn append_line(out: &mut Vec<u8>, seq: u64, prev: &[u8; 32], body: &str) -> [u8; 32] {
    let start = out.len();
    let mut hex = [0u8; 64];
    hex::encode_to_slice(prev, &mut hex).expect("64 hex digits");
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa(seq).as_bytes());
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(body.as_bytes());
    let hash: [u8; 32] = Sha256::digest(&out[start..]).into();
    hex::encode_to_slice(hash, &mut hex).expect("64 hex digits");
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\"}\n");
    hash
}

fn itoa(n: u64) -> String {
    n.to_string()
}

fn open_new(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("creating audit file {}", path.display()))?;
    Ok(file)
}

/// Sorted audit files of a directory.
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

/// Sequence number and hash of the last whole record in `dir`, and that file's name. A
/// partial last line (a crash mid-write: never acknowledged) is cut off.
fn chain_tail(dir: &Path) -> anyhow::Result<(u64, [u8; 32], Option<String>)> {
    for path in audit_files(dir)?.iter().rev() {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let from = len.saturating_sub(1 << 20);
        file.seek(SeekFrom::Start(from))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let whole = tail
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        if whole < tail.len() {
            tracing::warn!(file = %path.display(), bytes = tail.len() - whole, "cutting a partial audit record");
            file.set_len(from + whole as u64)?;
        }
        let Some(line) = tail[..whole]
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty())
        else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(line)
            .with_context(|| format!("last record of {} is not JSON", path.display()))?;
        let seq = v["seq"].as_u64().context("last audit record has no seq")?;
        let mut prev = [0u8; 32];
        hex::decode_to_slice(v["hash"].as_str().unwrap_or(""), &mut prev)
            .context("last audit record has no valid hash")?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        return Ok((seq, prev, name));
    }
    Ok((0, GENESIS, None))
}
