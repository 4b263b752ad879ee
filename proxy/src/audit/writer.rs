//! The audit writer: write-ahead, batched, hash-chained, rotating, fail-closed.
//!
//! Sessions never do file I/O. A record is *accepted* when it is chained (sequence number and
//! hash assigned, in order) into the writer's in-memory batch **and** disk space for it is
//! already reserved in the audit file. One writer thread writes the batch with a single
//! `write(2)` every `flush_interval_ms`, and keeps space reserved ahead, so a full disk is
//! met *before* a statement is accepted, never after it ran:
//! - buffered: `fallocate(KEEP_SIZE)`: blocks allocated past the end of the file;
//! - fsync: zeros written ahead and synced once, so the file's size already covers the
//!   records to come. A record's `fdatasync` then flushes data only, not the file's size
//!   and extents through the journal: about a third off every sync. A live file in fsync
//!   durability therefore ends in NUL bytes; every reader stops at the first one
//!   ([`super::source::written`]), and a finished file is cut to its records.
//!
//! - [`AuditLog::accept`] is the write-ahead path: `Ok` means the statement may be forwarded.
//!   In `fsync` durability it also waits until an `fdatasync` covers its records (group
//!   commit: one sync serves every session that wrote meanwhile).
//! - [`AuditLog::record`] adds a record that follows the fact (an outcome, a disconnect).
//! - A failed write is undone (the file is cut back to its last whole record), the log turns
//!   unhealthy and refuses every `accept` until a write succeeds again. Accepted records are
//!   kept in memory and retried; they are lost only if the process dies (use `fsync` where
//!   that matters).
//! - Files rotate by size and age; the chain runs on across files and restarts.
//! - Each replica of a fleet keeps its own chain in its own directory; the first record of
//!   every file (`log_opened`, or `file_opened` after a rotation) names the replica.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::{Deserialize, Serialize};

/// When a write-ahead record counts as accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// In the writer's batch with disk space reserved; written within the flush interval.
    /// Survives a full or failing disk; a crash of the proxy loses the last interval.
    Buffered,
    /// On disk (`fdatasync` returned) before the statement is forwarded.
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
    /// How often the writer writes its batch, in milliseconds.
    pub flush_interval_ms: u64,
    /// Disk space kept reserved ahead of the data. Statements are refused when the writer
    /// cannot reserve more: a full disk stops statements before they run.
    pub reserve_bytes: u64,
    /// Records waiting in memory beyond this make new statements wait (backpressure).
    pub max_buffered_bytes: usize,
    /// Bound parameters longer than this are cut, keeping their length and SHA-256.
    pub param_cap_bytes: usize,
    /// Where the chain's head is published (default: `head.json` in `dir`).
    pub head_file: Option<PathBuf>,
    /// How often the head is published, in seconds (and when the writer stops).
    pub head_interval_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            dir: PathBuf::from(".dev/audit"),
            durability: Durability::Buffered,
            max_file_bytes: 128 * 1024 * 1024,
            max_file_age_secs: 24 * 3600,
            flush_interval_ms: 2,
            reserve_bytes: 4 * 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            param_cap_bytes: 64 * 1024,
            head_file: None,
            head_interval_secs: 10,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("audit log unavailable: {0}")]
pub struct AuditError(pub String);

/// Counters the writer keeps; registered by the metrics module.
#[derive(Debug, Clone)]
pub struct AuditMetrics {
    pub records: Counter,
    pub batches: Counter,
    pub write_errors: Counter,
    /// `fdatasync` calls that made batches durable (fsync durability): one per group commit.
    pub syncs: Counter,
    /// How long each of those `fdatasync` calls took: what the disk costs.
    pub sync_seconds: Histogram,
    /// How long a statement waited, from its record's append to the sync that covered it:
    /// what durability costs a statement (the sync, the one before it still running, and
    /// the wake-ups in between).
    pub durable_wait_seconds: Histogram,
    /// Records accepted and not yet written.
    pub buffered: Gauge,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        // 25 µs to ~0.8 s: a local NVMe flush takes tens of µs, a network volume's
        // milliseconds; the ceiling is a disk in trouble.
        let seconds = || Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        AuditMetrics {
            records: Counter::default(),
            batches: Counter::default(),
            write_errors: Counter::default(),
            syncs: Counter::default(),
            sync_seconds: seconds(),
            durable_wait_seconds: seconds(),
            buffered: Gauge::default(),
        }
    }
}

/// Reserved space kept per accepted statement for its outcome record, and in all.
const OUTCOME_ALLOWANCE: u64 = 512;
const SLACK: u64 = 8 * 1024;

/// The name of the file whose first record has sequence number `seq`.
fn file_name(seq: u64) -> String {
    format!(
        "audit-{seq:016}-{}.jsonl",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    )
}

/// One audit file: its bytes written and its space reserved.
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes of whole records written.
    written: u64,
    /// Bytes reserved on disk from the start of the file (`written` ≤ `reserved`).
    reserved: u64,
    /// How the space is reserved: zeros written (fsync) or blocks allocated (buffered).
    zeroed: bool,
    opened: Instant,
}

/// How long the writer sleeps when nothing comes, unless a session wakes it.
const ASLEEP_FOR: Duration = Duration::from_secs(1);

/// Zeros are written ahead in steps of this size at most (fsync): each step is one write
/// and one sync on the writer thread, which statements waiting for their sync wait behind.
const ZERO_STEP: u64 = 256 * 1024;

/// The largest written batch buffer kept for reuse.
const SPARE_MAX: usize = 4 << 20;

/// What sessions and the writer share, under one lock held only for memory work.
struct State {
    segment: Segment,
    /// Sequence number and hash of the last record chained.
    seq: u64,
    prev: [u8; 32],
    /// A hash of the chain with its hex, so the next line's `prev` is not encoded again.
    prev_hex: Option<([u8; 32], [u8; 64])>,
    /// Chained lines waiting for the writer.
    batch: Vec<u8>,
    /// The last batch written, emptied, its capacity kept: the next batch to fill.
    spare: Vec<u8>,
    batch_records: u64,
    /// When the first record of the batch came: the batch is written one interval later.
    batch_since: Instant,
    /// fsync: a session waits for this batch's sync (a statement's record is in it), so it
    /// is written at once; a batch of records nobody waits for (outcomes, connection
    /// records) waits one interval like a buffered one, to share the next statement's sync.
    waited: bool,
    /// Why writing fails, until it works again.
    failed: Option<String>,
    /// The writer stopped; nothing more is accepted.
    closed: bool,
    /// Disk space a session needs reserved for records larger than the reserve.
    wanted: u64,
    /// Why reserving `wanted` failed, if it did.
    reserve_error: Option<String>,
    /// The last record written to the file (seq, hash), and the last head published.
    written_head: (u64, [u8; 32]),
    /// Set when that record ended the file before the current one (a rotation wrote it):
    /// the head must name that file, not the current one.
    written_head_file: Option<PathBuf>,
    published: u64,
}

impl State {
    /// Chains `bodies` onto the batch: sequence numbers and hashes, in order.
    fn chain<S: AsRef<str>>(&mut self, bodies: &[S]) {
        if self.batch.is_empty() {
            self.batch_since = Instant::now();
        }
        // The hex of `prev`, from the last line chained if `prev` is still its hash (a
        // refused append rolls `prev` back; then it is encoded again).
        let mut prev_hex = match &self.prev_hex {
            Some((hash, hex)) if *hash == self.prev => *hex,
            _ => super::line::hash_hex(&self.prev),
        };
        for body in bodies {
            self.seq += 1;
            (self.prev, prev_hex) =
                super::line::append_after(&mut self.batch, self.seq, &prev_hex, body.as_ref());
        }
        self.prev_hex = Some((self.prev, prev_hex));
        self.batch_records += bodies.len() as u64;
    }
}

/// Why a record was not appended.
enum Append {
    Refused(AuditError),
    /// Not enough disk space reserved yet: the writer has been asked for `need` bytes.
    NoSpace {
        need: u64,
    },
}

/// What the writer has made durable (fsync mode), and who waits for it.
#[derive(Debug, Default)]
struct Synced {
    seq: u64,
    error: Option<String>,
    /// Each waiting `accept`: the record it waits for and its task. A sync wakes only those
    /// it covers: a session whose record arrived during the sync waits for the next one,
    /// and waking it now would only put it (and its thread) back to sleep.
    waiting: Vec<(u64, Waker)>,
}

/// Takes one of the audit log's locks. Poisoned means a thread panicked while holding it and
/// may have left the chain half-advanced: nothing more may be accepted, so this panics too
/// (each session that tries to log ends; no statement runs unrecorded).
fn held<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock()
        .expect("the audit writer panicked while holding its state: refusing to log (fail closed)")
}

pub struct AuditLog {
    settings: AuditSettings,
    /// The replica this chain belongs to (`fleet.replica`).
    replica: String,
    state: Mutex<State>,
    healthy: AtomicBool,
    /// The writer sleeps until woken: a session that starts a batch must wake it.
    asleep: AtomicBool,
    metrics: AuditMetrics,
    synced: Mutex<Synced>,
    /// Wakes sessions waiting for buffer space.
    drained: tokio::sync::Notify,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    writer_thread: std::sync::OnceLock<std::thread::Thread>,
    /// One batch write at a time, so batches reach the file in chain order.
    writing: Mutex<()>,
}

impl AuditLog {
    /// Opens the log of replica `replica` in `settings.dir`, continuing the chain of the
    /// files already there, in a new file, and starts the writer thread.
    pub fn open(
        settings: AuditSettings,
        replica: &str,
        metrics: AuditMetrics,
    ) -> anyhow::Result<Arc<AuditLog>> {
        std::fs::create_dir_all(&settings.dir)
            .with_context(|| format!("creating audit directory {}", settings.dir.display()))?;
        let (seq, prev, previous_file) = chain_tail(&settings.dir)?;
        check_head(&settings, seq)?;
        let segment = Segment::create(
            &settings.dir.join(file_name(seq + 1)),
            settings.reserve_bytes,
            settings.durability == Durability::Fsync,
        )?;
        let log = Arc::new(AuditLog {
            state: Mutex::new(State {
                segment,
                seq,
                prev,
                batch: Vec::with_capacity(64 * 1024),
                spare: Vec::new(),
                prev_hex: None,
                batch_records: 0,
                batch_since: Instant::now(),
                waited: false,
                failed: None,
                closed: false,
                wanted: 0,
                reserve_error: None,
                written_head: (seq, prev),
                written_head_file: None,
                published: seq,
            }),
            healthy: AtomicBool::new(true),
            asleep: AtomicBool::new(false),
            metrics,
            synced: Mutex::new(Synced {
                seq,
                ..Synced::default()
            }),
            drained: tokio::sync::Notify::new(),
            writer: Mutex::new(None),
            writer_thread: std::sync::OnceLock::new(),
            writing: Mutex::new(()),
            settings,
            replica: replica.to_string(),
        });
        let mut opened = String::new();
        super::record::push_ts(&mut opened);
        opened.push_str(",\"type\":\"log_opened\",");
        super::record::member_str(&mut opened, "replica", replica);
        opened.push(',');
        super::record::member_str(
            &mut opened,
            "previous_file",
            &previous_file.unwrap_or_default(),
        );
        opened.push_str(&format!(",\"pid\":{}", std::process::id()));
        log.append(&[opened], false, false)
            .map_err(|_| anyhow::anyhow!("the audit log refused its first record"))?;
        // The first record is on disk before anything is served.
        log.write_batch();
        if let Some(e) = held(&log.state).failed.clone() {
            anyhow::bail!("audit log: {e}");
        }
        let writer = log.clone();
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.writer_loop())?;
        let _ = log.writer_thread.set(handle.thread().clone());
        *held(&log.writer) = Some(handle);
        Ok(log)
    }

    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// False while writes fail or no disk space can be reserved. Readiness reports it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The write-ahead path: returns the sequence number of the first of `bodies` once they
    /// are accepted under the configured durability.
    pub async fn accept<S: AsRef<str>>(&self, bodies: &[S]) -> Result<u64, AuditError> {
        // Backpressure: a writer that falls behind slows clients; nothing is dropped.
        while held(&self.state).batch.len() > self.settings.max_buffered_bytes {
            let drained = self.drained.notified();
            self.wake_writer();
            drained.await;
        }
        // Records larger than the space kept reserved (up to `limits.max_message_bytes`)
        // wait for the writer to reserve room for them; if it cannot, the disk is full.
        // Read the clock only once space runs short: not on every statement.
        let mut started = None;
        let (first, last) = loop {
            let waits = self.settings.durability == Durability::Fsync;
            match self.append(bodies, true, waits) {
                Ok(range) => break range,
                Err(Append::Refused(e)) => return Err(e),
                Err(Append::NoSpace { need }) => {
                    let started = *started.get_or_insert_with(Instant::now);
                    let failed = {
                        let st = held(&self.state);
                        st.reserve_error
                            .clone()
                            .filter(|_| st.segment.reserved < need)
                    };
                    if let Some(e) = failed.filter(|_| started.elapsed() > Duration::from_millis(1))
                    {
                        self.healthy.store(false, Ordering::Relaxed);
                        return Err(AuditError(format!(
                            "no disk space could be reserved for the audit log (disk full?): {e}"
                        )));
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        return Err(AuditError(
                            "the audit writer did not reserve disk space in time".into(),
                        ));
                    }
                    let drained = self.drained.notified();
                    self.wake_writer();
                    let _ = crate::clock::timeout(Duration::from_millis(100), drained).await;
                }
            }
        };
        if self.settings.durability == Durability::Fsync {
            let appended = Instant::now();
            self.wake_writer();
            self.wait_synced(last).await?;
            self.metrics
                .durable_wait_seconds
                .observe(appended.elapsed().as_secs_f64());
        }
        Ok(first)
    }

    /// Accepts `bodies` now or not at all: no waiting for buffer space or a sync. For
    /// records of a session that is ending.
    pub fn try_accept<S: AsRef<str>>(&self, bodies: &[S]) -> Result<u64, AuditError> {
        match self.append(bodies, true, false) {
            Ok((first, _)) => Ok(first),
            Err(Append::Refused(e)) => Err(e),
            Err(Append::NoSpace { .. }) => Err(AuditError("no disk space reserved".into())),
        }
    }

    /// Adds a record that follows the fact (an outcome, a disconnect). Never refused: if the
    /// disk is failing it waits in memory with the rest.
    pub fn record(&self, body: String) {
        self.record_str(&body);
    }

    /// [`AuditLog::record`] from a buffer the caller keeps (copied into the batch).
    pub fn record_str(&self, body: &str) {
        let _ = self.append(&[body], false, false);
    }

    /// The sequence number up to which records are known to be on disk: in fsync
    /// durability, the last record an `fdatasync` covered.
    pub fn synced(&self) -> u64 {
        held(&self.synced).seq
    }

    /// The last head published (or the chain's end when the writer started).
    pub fn head(&self) -> (u64, [u8; 32]) {
        held(&self.state).written_head
    }

    /// Writes what is batched now, from the caller's thread (tests, shutdown).
    pub fn flush(&self) -> Result<(), AuditError> {
        self.write_batch();
        match held(&self.state).failed.clone() {
            Some(e) => Err(AuditError(e)),
            None => Ok(()),
        }
    }

    /// Stops the writer after a last write and sync: the last thing the proxy does.
    pub fn close(&self) -> Result<(), AuditError> {
        held(&self.state).closed = true;
        self.wake_writer();
        if let Some(handle) = held(&self.writer).take() {
            let _ = handle.join();
        }
        self.flush()?;
        {
            let st = held(&self.state);
            st.segment
                .finish()
                .map_err(|e| AuditError(format!("closing {}: {e}", st.segment.path.display())))?;
        }
        self.publish_head(true);
        Ok(())
    }

    /// Chains `bodies` into the batch. With `refusable`, refuses them (changing nothing)
    /// when the log is failing or their space is not reserved. `waited`: the caller waits for
    /// their sync (fsync). Returns the sequence numbers of the first and last.
    fn append<S: AsRef<str>>(
        &self,
        bodies: &[S],
        refusable: bool,
        waited: bool,
    ) -> Result<(u64, u64), Append> {
        let mut st = held(&self.state);
        if refusable {
            if st.closed {
                return Err(Append::Refused(AuditError(
                    "the proxy is shutting down".into(),
                )));
            }
            if let Some(e) = &st.failed {
                let e = e.clone();
                drop(st);
                self.wake_writer();
                return Err(Append::Refused(AuditError(e)));
            }
        }
        let was_empty = st.batch.is_empty();
        let (start_len, start_seq, start_prev) = (st.batch.len(), st.seq, st.prev);
        st.chain(bodies);
        // Room for these records, for the outcome records that will follow them, and a margin
        // for connection records: those are never refused, so they must fit too.
        let need = st.segment.written
            + st.batch.len() as u64
            + OUTCOME_ALLOWANCE * bodies.len() as u64
            + SLACK;
        if refusable && need > st.segment.reserved {
            // Not enough disk space reserved: undo, and ask the writer to reserve it.
            st.batch.truncate(start_len);
            st.seq = start_seq;
            st.prev = start_prev;
            st.wanted = st.wanted.max(need);
            drop(st);
            self.wake_writer();
            return Err(Append::NoSpace { need });
        }
        st.waited |= waited;
        self.metrics.buffered.set(st.batch_records as i64);
        let range = (start_seq + 1, st.seq);
        drop(st);
        // Only a writer asleep needs waking for a new batch: a busy or lingering one looks
        // again within an interval. (A session that waits for its sync wakes it itself.)
        if was_empty && self.asleep.load(Ordering::SeqCst) {
            self.wake_writer();
        }
        Ok(range)
    }

    fn wake_writer(&self) {
        if let Some(t) = self.writer_thread.get() {
            t.unpark();
        }
    }

    async fn wait_synced(&self, seq: u64) -> Result<(), AuditError> {
        std::future::poll_fn(|cx| {
            let mut synced = held(&self.synced);
            if synced.seq >= seq {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &synced.error {
                return Poll::Ready(Err(AuditError(e.clone())));
            }
            match synced.waiting.iter_mut().find(|(s, _)| *s == seq) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => synced.waiting.push((seq, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    /// Records up to `seq` are on disk: wakes the sessions waiting for them.
    fn synced_to(&self, seq: u64) {
        let mut woken = Vec::new();
        {
            let mut synced = held(&self.synced);
            synced.seq = synced.seq.max(seq);
            synced.error = None;
            let upto = synced.seq;
            let mut i = 0;
            while i < synced.waiting.len() {
                if synced.waiting[i].0 <= upto {
                    woken.push(synced.waiting.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
        }
        woken.into_iter().for_each(Waker::wake);
    }

    /// Writing failed: every waiting session gets the error.
    fn sync_failed(&self, reason: String) {
        let woken = {
            let mut synced = held(&self.synced);
            synced.error = Some(reason);
            std::mem::take(&mut synced.waiting)
        };
        woken.into_iter().for_each(|(_, w)| w.wake());
    }

    /// The writer thread: sleeps until there is something to write, lets a flush interval
    /// of records gather, writes them, keeps disk space reserved, rotates files.
    fn writer_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(self.settings.flush_interval_ms.max(1));
        let head_every = Duration::from_secs(self.settings.head_interval_secs.max(1));
        let mut last_head = Instant::now();
        // The last pass wrote a batch: the next records are likely near, so the writer looks
        // again one interval later by itself instead of being woken for each new batch.
        let mut linger = false;
        // The writer just came back from lingering: what it finds is at most one interval
        // old, so it is written now.
        let mut lingered = false;
        loop {
            let (idle, closed, failing, since, wants_space, waited) = {
                let st = held(&self.state);
                (
                    st.batch.is_empty(),
                    st.closed,
                    st.failed.is_some(),
                    st.batch_since,
                    st.wanted > st.segment.reserved,
                    st.waited,
                )
            };
            if closed {
                return;
            }
            if wants_space {
                // A session waits to append a record larger than the space reserved.
                self.maintain();
            }
            if last_head.elapsed() >= head_every {
                self.publish_head(false);
                last_head = Instant::now();
            }
            if failing || !self.is_healthy() {
                // Retry a failing disk, or reserving space, at a modest pace.
                std::thread::park_timeout(interval.max(Duration::from_millis(50)));
            } else if idle {
                if std::mem::take(&mut linger) {
                    self.park_until(Instant::now() + interval);
                    lingered = true;
                } else {
                    // Nothing to do until a session wakes us: say so, then look once more
                    // (under the lock an appender takes too), so no record waits a second.
                    self.asleep.store(true, Ordering::SeqCst);
                    if held(&self.state).batch.is_empty() {
                        std::thread::park_timeout(ASLEEP_FOR);
                    }
                    self.asleep.store(false, Ordering::SeqCst);
                }
                continue;
            } else if !waited && !std::mem::take(&mut lingered) {
                // Let the batch gather for one interval from its first record. In fsync
                // durability only records nobody waits for are here (outcomes, connection
                // records): they share the sync of the next statement instead of costing
                // one of their own, unless the interval passes first.
                self.park_until(since + interval);
            }
            // (fsync with a statement's record: its session waits for this sync, no delay.)
            self.write_batch();
            self.maintain();
            linger = true;
            lingered = false;
        }
    }

    /// Sleeps until `until`, or until a session waits for the batch's sync or the log
    /// closes. An unpark left over from a busy moment does not cut it short.
    fn park_until(&self, until: Instant) {
        let mut now = Instant::now();
        while now < until {
            {
                let st = held(&self.state);
                if st.waited || st.closed {
                    return;
                }
            }
            std::thread::park_timeout(until - now);
            now = Instant::now();
        }
    }

    /// Writes the batch (outside the state lock), syncs it in fsync mode, and rotates the
    /// file when it is due.
    fn write_batch(&self) {
        let _one = held(&self.writing);
        let (file, at, bytes, last, records) = {
            let mut st = held(&self.state);
            if st.batch.is_empty() {
                return;
            }
            let spare = std::mem::take(&mut st.spare);
            let bytes = std::mem::replace(&mut st.batch, spare);
            st.waited = false;
            let records = std::mem::take(&mut st.batch_records);
            let file = st.segment.file.clone();
            (file, st.segment.written, bytes, (st.seq, st.prev), records)
        };
        let last_seq = last.0;
        let result = file.write_all_at(&bytes, at).and_then(|()| {
            if self.settings.durability == Durability::Fsync {
                let started = Instant::now();
                file.sync_data()?;
                self.metrics.syncs.inc();
                self.metrics
                    .sync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Ok(())
        });
        let mut st = held(&self.state);
        match result {
            Ok(()) => {
                st.segment.written += bytes.len() as u64;
                st.written_head = last;
                st.written_head_file = None;
                // Keep the buffer for the next batch (unless a backlog grew it very large).
                if bytes.capacity() <= SPARE_MAX {
                    let mut bytes = bytes;
                    bytes.clear();
                    st.spare = bytes;
                }
                self.metrics.records.inc_by(records);
                self.metrics.batches.inc();
                self.metrics.buffered.set(st.batch_records as i64);
                if let Some(was) = st.failed.take() {
                    tracing::warn!(file = %st.segment.path.display(), after = %was, "audit log writable again");
                }
                let due = st.segment.written >= self.settings.max_file_bytes
                    || st.segment.opened.elapsed()
                        >= Duration::from_secs(self.settings.max_file_age_secs);
                drop(st);
                self.synced_to(last_seq);
                if due {
                    if let Err(e) = self.rotate() {
                        tracing::error!(error = %e, "rotating the audit file failed; staying on the current one");
                    }
                }
            }
            Err(e) => {
                // Cut any partial record off, and put the bytes back in front of the batch
                // (the retry writes them at the same place).
                st.segment.cut_partial(bytes.len());
                let mut again = bytes;
                again.extend_from_slice(&st.batch);
                st.batch = again;
                st.batch_records += records;
                let reason = format!("writing {}: {e}", st.segment.path.display());
                if st.failed.is_none() {
                    tracing::error!(error = %reason, "audit log write failed: refusing statements");
                }
                st.failed = Some(reason.clone());
                self.metrics.write_errors.inc();
                self.healthy.store(false, Ordering::Relaxed);
                drop(st);
                self.sync_failed(reason);
            }
        }
        self.drained.notify_waiters();
    }

    /// Keeps disk space reserved ahead of the data, and for what sessions wait to append.
    fn maintain(&self) {
        let _one = held(&self.writing);
        let (file, written, reserved, zeroed, pending, wanted) = {
            let st = held(&self.state);
            let s = &st.segment;
            (
                s.file.clone(),
                s.written,
                s.reserved,
                s.zeroed,
                st.batch.len() as u64,
                st.wanted,
            )
        };
        // Blocks are allocated half a reserve at a time; zeros in small steps (each one a
        // write and a sync that waiting statements queue behind).
        let step = if zeroed {
            ZERO_STEP.min(self.settings.reserve_bytes / 2)
        } else {
            self.settings.reserve_bytes / 2
        };
        let floor = (written + pending + self.settings.reserve_bytes).saturating_sub(step);
        let ok = if reserved < floor || reserved < wanted {
            let want = (written + pending + self.settings.reserve_bytes)
                .max(wanted + self.settings.reserve_bytes / 2);
            // From the end of what is written, if records never refused (connection and
            // outcome records while the disk was full) went past the reserve: zeros must
            // never land on a record.
            let from = reserved.max(written);
            let result = reserve(&file, from, want - from, zeroed);
            let mut st = held(&self.state);
            match result {
                Ok(()) => {
                    st.segment.reserved = want;
                    st.reserve_error = None;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reserving audit disk space failed");
                    st.reserve_error = Some(e.to_string());
                    false
                }
            }
        } else {
            true
        };
        let failed = held(&self.state).failed.is_some();
        self.healthy.store(ok && !failed, Ordering::Relaxed);
        self.drained.notify_waiters();
    }

    /// Publishes the head when it is due (or `now`): the records it names are synced first.
    fn publish_head(&self, now: bool) {
        let (file, path, head, published) = {
            let st = held(&self.state);
            (
                st.segment.file.clone(),
                st.written_head_file
                    .clone()
                    .unwrap_or_else(|| st.segment.path.clone()),
                st.written_head,
                st.published,
            )
        };
        if head.0 == published && !now {
            return;
        }
        let published_now = file.sync_data().and_then(|()| {
            super::head::Head {
                seq: head.0,
                hash: hex::encode(head.1),
                file: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            }
            .publish(&super::head::path(&self.settings))
        });
        match published_now {
            Ok(()) => held(&self.state).published = head.0,
            Err(e) => tracing::warn!(error = %e, "publishing the audit head failed"),
        }
    }

    /// Closes the current file and continues in a new one. The last record of the old file
    /// names the new one; the chain runs on.
    /// The caller holds the `writing` lock.
    fn rotate(&self) -> anyhow::Result<()> {
        let next_seq = held(&self.state).seq + 1;
        let path = self.settings.dir.join(file_name(next_seq));
        let new = Segment::create(
            &path,
            self.settings.reserve_bytes,
            self.settings.durability == Durability::Fsync,
        )?;
        let (last_seq, last_hash);
        let (old, bytes, records) = {
            let mut st = held(&self.state);
            let mut body = String::new();
            super::record::push_ts(&mut body);
            body.push_str(",\"type\":\"rotate\",");
            super::record::member_str(
                &mut body,
                "file",
                &st.segment
                    .path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
            );
            body.push(',');
            super::record::member_str(
                &mut body,
                "next_file",
                &path.file_name().unwrap_or_default().to_string_lossy(),
            );
            st.chain(&[body]);
            // Everything chained so far ends the old file; what comes next starts the new one.
            let bytes = std::mem::take(&mut st.batch);
            let records = std::mem::take(&mut st.batch_records);
            last_seq = st.seq;
            last_hash = st.prev;
            st.wanted = 0;
            // The new file starts by naming its replica and the file before it.
            let mut first = String::new();
            super::record::push_ts(&mut first);
            first.push_str(",\"type\":\"file_opened\",");
            super::record::member_str(&mut first, "replica", &self.replica);
            first.push(',');
            super::record::member_str(
                &mut first,
                "previous_file",
                &st.segment
                    .path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
            );
            st.chain(&[first]);
            (std::mem::replace(&mut st.segment, new), bytes, records)
        };
        if let Err(e) = old.file.write_all_at(&bytes, old.written) {
            // Those records go to the new file instead, still in chain order.
            old.cut_partial(bytes.len());
            let mut st = held(&self.state);
            let mut again = bytes;
            again.extend_from_slice(&st.batch);
            st.batch = again;
            st.batch_records += records;
            tracing::warn!(error = %e, "finishing the old audit file failed; its last records moved to the next");
            return Ok(());
        }
        self.metrics.records.inc_by(records);
        let old_path = old.path.clone();
        Segment {
            written: old.written + bytes.len() as u64,
            ..old
        }
        .finish()?;
        // finish() synced them: sessions waiting in fsync mode may go on.
        {
            let mut st = held(&self.state);
            st.written_head = (last_seq, last_hash);
            st.written_head_file = Some(old_path);
        }
        self.synced_to(last_seq);
        Ok(())
    }
}

impl Segment {
    /// A new file with `reserve_bytes` reserved: `zeroed` writes them as zeros (fsync).
    fn create(path: &Path, reserve_bytes: u64, zeroed: bool) -> anyhow::Result<Segment> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o640)
            .open(path)
            .with_context(|| format!("creating audit file {}", path.display()))?;
        reserve(&file, 0, reserve_bytes, zeroed)
            .with_context(|| format!("reserving space for {}", path.display()))?;
        Ok(Segment {
            file: Arc::new(file),
            path: path.to_path_buf(),
            written: 0,
            reserved: reserve_bytes,
            zeroed,
            opened: Instant::now(),
        })
    }

    /// Takes back what a failed write of `len` bytes left after the last whole record: cut
    /// off past the file's end, zeros again inside the zeroed reserve (readers stop there).
    fn cut_partial(&self, len: usize) {
        if self.zeroed {
            let _ = self.file.write_all_at(&vec![0u8; len], self.written);
        } else {
            let _ = self.file.set_len(self.written);
        }
    }

    /// Syncs the file and gives back the space reserved beyond its data.
    fn finish(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.file.set_len(self.written)
    }
}

/// Reserves `len` bytes of disk at `offset`, so writes there cannot fail for lack of space:
/// `zeroed` writes zeros and syncs them (the file grows), otherwise blocks are allocated
/// without changing the file's size.
fn reserve(file: &File, offset: u64, len: u64, zeroed: bool) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    if zeroed {
        let zeros = vec![0u8; len.min(ZERO_STEP) as usize];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(ZERO_STEP);
            file.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        return file.sync_data();
    }
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sequence number and hash of the last whole record in `dir`, and that file's name. A
/// partial last line (a crash mid-write: never acknowledged) is cut off. The last record may
/// be of any size: the file is read backwards until its start is found.
fn chain_tail(dir: &Path) -> anyhow::Result<(u64, [u8; 32], Option<String>)> {
    for path in super::source::audit_files(dir)?.iter().rev() {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut len = file.metadata()?.len();
        // A live file in fsync durability ends in reserved zeros: not records.
        let data = last_byte(&mut file, len, |b| b != 0)?.map_or(0, |p| p + 1);
        if data < len {
            file.set_len(data)?;
            len = data;
        }
        let Some(end) = last_byte(&mut file, len, |b| b == b'\n')? else {
            if len > 0 {
                tracing::warn!(file = %path.display(), bytes = len, "cutting a partial audit record");
                file.set_len(0)?;
            }
            continue;
        };
        if end + 1 < len {
            tracing::warn!(file = %path.display(), bytes = len - end - 1, "cutting a partial audit record");
            file.set_len(end + 1)?;
        }
        let start = last_byte(&mut file, end, |b| b == b'\n')?.map_or(0, |p| p + 1);
        let mut line = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut line)?;
        let last = super::line::parse(&line)
            .map_err(|e| anyhow::anyhow!("last record of {}: {e}", path.display()))?;
        let prev = super::line::decode_hash(&last.hash)
            .with_context(|| format!("last record of {} has no valid hash", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        return Ok((last.seq, prev, name));
    }
    Ok((0, super::line::GENESIS, None))
}

/// The position of the last byte before `end` in `file` that is `wanted`, reading backwards
/// in chunks.
fn last_byte(
    file: &mut File,
    end: u64,
    wanted: impl Fn(u8) -> bool,
) -> std::io::Result<Option<u64>> {
    const CHUNK: u64 = 1 << 20;
    let mut hi = end;
    let mut chunk = Vec::new();
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        chunk.resize((hi - lo) as usize, 0);
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| wanted(b)) {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// On restart: the chain on disk must reach the last head published. A shorter chain, or a
/// different record where the head points, means records were removed or replaced: the
/// writer refuses to continue it.
fn check_head(settings: &AuditSettings, seq: u64) -> anyhow::Result<()> {
    let path = super::head::path(settings);
    let Some(head) = super::head::Head::read(&path)? else {
        return Ok(());
    };
    anyhow::ensure!(
        seq >= head.seq,
        "refusing to continue the audit chain: it ends at seq {seq}, but its last published \
         head ({}) is seq {}: records were removed",
        path.display(),
        head.seq
    );
    let file = settings.dir.join(&head.file);
    let text = std::fs::read(&file).with_context(|| {
        format!(
            "refusing to continue the audit chain: {} (named by the head {}) cannot be read",
            file.display(),
            path.display()
        )
    })?;
    let found = text
        .split(|&b| b == b'\n')
        .filter_map(|l| super::line::parse(l).ok())
        .find(|l| l.seq == head.seq);
    match found {
        Some(l) if l.hash == head.hash => Ok(()),
        _ => anyhow::bail!(
            "refusing to continue the audit chain: record seq {} in {} does not match the \
             published head {}",
            head.seq,
            file.display(),
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fsync_log(dir: &Path, interval_ms: u64) -> (Arc<AuditLog>, AuditMetrics) {
        let settings = AuditSettings {
            dir: dir.to_path_buf(),
            durability: Durability::Fsync,
            flush_interval_ms: interval_ms,
            ..AuditSettings::default()
        };
        let metrics = AuditMetrics::default();
        let log = AuditLog::open(settings, "r", metrics.clone()).unwrap();
        (log, metrics)
    }

    fn body(n: &str) -> String {
        format!("\"ts\":\"t\",\"type\":\"x\",\"n\":\"{n}\"")
    }

    /// fsync: an outcome (a record nobody waits for) does not cost a sync of its own: it
    /// rides on the next statement's, and without one it is written one interval later.
    #[tokio::test]
    async fn fsync_outcomes_share_the_next_statements_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (log, metrics) = fsync_log(dir.path(), 60_000);
        log.accept(&[body("s1")]).await.unwrap();
        let before = metrics.syncs.get();
        log.record(body("o1"));
        let seq = log.accept(&[body("s2")]).await.unwrap();
        assert!(log.synced() >= seq);
        assert_eq!(
            metrics.syncs.get(),
            before + 1,
            "one sync for an outcome and a statement"
        );
        log.close().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (log, metrics) = fsync_log(dir.path(), 50);
        log.accept(&[body("s1")]).await.unwrap();
        let before = metrics.syncs.get();
        log.record(body("o1"));
        let end = Instant::now() + Duration::from_secs(10);
        while metrics.syncs.get() == before && Instant::now() < end {
            crate::clock::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            metrics.syncs.get(),
            before + 1,
            "the outcome alone is written after the interval"
        );
        log.close().unwrap();
    }

    /// fsync durability, sessions on two threads at once: each `accept` returns only once a
    /// sync covers its record, syncs are shared, and the file holds one intact chain with
    /// every record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_accepts_return_synced_and_the_chain_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (log, metrics) = fsync_log(dir.path(), 2);
        let (sessions, each) = (8u64, 40u64);
        let tasks: Vec<_> = (0..sessions)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    for j in 0..each {
                        let seq = log.accept(&[body(&format!("{i}.{j}"))]).await.unwrap();
                        assert!(log.synced() >= seq, "accepted {seq} before its sync");
                        log.record(body(&format!("o{i}.{j}")));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let syncs = metrics.syncs.get();
        assert!(syncs >= 1 && syncs <= sessions * each, "{syncs} syncs");
        log.close().unwrap();
        // Every group commit timed, every statement's wait for it too; with the writer
        // stopped, nothing is between a count and its observation.
        assert_eq!(metrics.sync_seconds.count(), metrics.syncs.get());
        assert!(metrics.sync_seconds.sum() > 0.0);
        assert_eq!(metrics.durable_wait_seconds.count(), sessions * each);
        assert!(metrics.durable_wait_seconds.sum() > 0.0);
        let chains = super::super::verify::chains(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(chains.len(), 1);
        let report = super::super::verify::verify(&chains[0].files, None)
            .unwrap()
            .expect("an intact chain");
        assert!(
            report.records > 2 * sessions * each,
            "{} records",
            report.records
        );
        let text: String = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        for i in 0..sessions {
            for j in 0..each {
                assert!(text.contains(&body(&format!("{i}.{j}"))), "{i}.{j} missing");
                assert!(
                    text.contains(&body(&format!("o{i}.{j}"))),
                    "o{i}.{j} missing"
                );
            }
        }
    }

    /// buffered: no statement waits for a sync, and none is timed as if it had.
    #[tokio::test]
    async fn buffered_accepts_time_no_sync_and_no_wait() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = AuditMetrics::default();
        let settings = AuditSettings {
            dir: dir.path().to_path_buf(),
            ..AuditSettings::default()
        };
        assert_eq!(settings.durability, Durability::Buffered);
        let log = AuditLog::open(settings, "r", metrics.clone()).unwrap();
        for i in 0..20 {
            log.accept(&[body(&i.to_string())]).await.unwrap();
        }
        log.close().unwrap();
        // The twenty, and what closing the file adds.
        assert!(metrics.records.get() >= 20, "{}", metrics.records.get());
        assert_eq!(metrics.syncs.get(), 0);
        assert_eq!(metrics.sync_seconds.count(), 0);
        assert_eq!(metrics.durable_wait_seconds.count(), 0);
    }

    /// fsync: records are written into zeros already on disk (the file's size does not move
    /// with a sync); readers of the live file stop at the zeros, a closed file is cut to its
    /// records, and a copy of a live file (what a crash leaves) continues its chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_writes_into_zeros_that_readers_and_restarts_skip() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = fsync_log(dir.path(), 2);
        log.accept(&[body("s1")]).await.unwrap();
        let files = super::super::source::audit_files(dir.path()).unwrap();
        let size = || std::fs::metadata(&files[0]).unwrap().len();
        let reserved = size();
        assert!(reserved >= AuditSettings::default().reserve_bytes);
        for i in 2..=5 {
            log.accept(&[body(&format!("s{i}"))]).await.unwrap();
        }
        assert_eq!(size(), reserved, "a sync changed the file's size");
        let live = std::fs::read(&files[0]).unwrap();
        let records = super::super::source::written(&live);
        assert!(live[records.len()..].iter().all(|&b| b == 0));
        let lines: Vec<String> = super::super::source::AuditFile::Local(files[0].clone())
            .open()
            .unwrap()
            .lines()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines.len(), 6, "log_opened and five statements: {lines:?}");
        for l in &lines {
            super::super::line::parse(l.as_bytes()).unwrap();
        }

        // A crash: the live file as it is, zeros and all; the writer continues its chain.
        let crashed = tempfile::tempdir().unwrap();
        std::fs::copy(
            &files[0],
            crashed.path().join(files[0].file_name().unwrap()),
        )
        .unwrap();
        let (again, _) = fsync_log(crashed.path(), 2);
        again.accept(&[body("after")]).await.unwrap();
        again.close().unwrap();
        log.close().unwrap();
        for d in [dir.path(), crashed.path()] {
            for f in super::super::source::audit_files(d).unwrap() {
                let bytes = std::fs::read(&f).unwrap();
                assert!(!bytes.contains(&0), "{} keeps its zeros", f.display());
            }
            let chains = super::super::verify::chains(&[d.to_path_buf()]).unwrap();
            assert_eq!(chains.len(), 1);
            super::super::verify::verify(&chains[0].files, None)
                .unwrap()
                .expect("an intact chain");
        }
    }

    /// A writer with nothing to do sleeps until a session wakes it; sessions wake it only
    /// then (a busy or lingering writer looks again by itself). A lost wake-up would leave
    /// a record unwritten for the whole sleep: each one here is written well before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_wakes_a_sleeping_writer() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSettings {
            dir: dir.path().to_path_buf(),
            flush_interval_ms: 5,
            ..AuditSettings::default()
        };
        let metrics = AuditMetrics::default();
        let log = AuditLog::open(settings, "r", metrics.clone()).unwrap();
        for i in 0..5 {
            // Long enough for the writer to linger one interval and fall asleep.
            crate::clock::sleep(Duration::from_millis(40)).await;
            let before = metrics.records.get();
            let start = Instant::now();
            log.record(body(&format!("r{i}")));
            while metrics.records.get() == before {
                assert!(
                    start.elapsed() < ASLEEP_FOR / 2,
                    "record {i} waited for the sleeping writer's timeout"
                );
                crate::clock::sleep(Duration::from_millis(1)).await;
            }
        }
        log.close().unwrap();
    }

    /// Records never refused (connection and outcome records) can go past the space
    /// reserved (a full disk refuses statements, not those): reserving more afterwards must
    /// not write its zeros over them.
    #[test]
    fn zeros_ahead_never_land_on_records_past_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSettings {
            dir: dir.path().to_path_buf(),
            durability: Durability::Fsync,
            flush_interval_ms: 60_000,
            reserve_bytes: 8 * 1024,
            ..AuditSettings::default()
        };
        let log = AuditLog::open(settings, "r", AuditMetrics::default()).unwrap();
        for i in 0..300 {
            log.record(body(&format!("past the reserve {i:04}")));
        }
        log.flush().unwrap();
        let written = held(&log.state).segment.written;
        assert!(
            written > 8 * 1024,
            "the records did not go past the reserve"
        );
        log.maintain();
        log.close().unwrap();
        let chains = super::super::verify::chains(&[dir.path().to_path_buf()]).unwrap();
        let report = super::super::verify::verify(&chains[0].files, None)
            .unwrap()
            .expect("an intact chain");
        assert_eq!(report.records, 301, "log_opened and 300 records");
    }

    /// A sync wakes only the sessions whose records it covers; a failure wakes them all.
    #[test]
    fn a_sync_wakes_only_the_sessions_it_covers() {
        use std::future::Future;
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = fsync_log(dir.path(), 60_000);
        let base = log.synced();
        let counts: Vec<Arc<Count>> = (0..3)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let mut waits: Vec<_> = (1..=3)
            .map(|k| Box::pin(log.wait_synced(base + k)))
            .collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        for (w, waker) in waits.iter_mut().zip(&wakers) {
            let mut cx = std::task::Context::from_waker(waker);
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert!(
                w.as_mut().poll(&mut cx).is_pending(),
                "polled again: still one entry"
            );
        }
        let woken = || {
            counts
                .iter()
                .map(|c| c.0.load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        };
        log.synced_to(base + 1);
        assert_eq!(woken(), [1, 0, 0]);
        let mut cx = std::task::Context::from_waker(&wakers[0]);
        assert!(waits[0].as_mut().poll(&mut cx).is_ready());
        log.synced_to(base + 1);
        assert_eq!(
            woken(),
            [1, 0, 0],
            "a sync that covers nobody new wakes nobody"
        );
        log.sync_failed("disk gone".into());
        assert_eq!(woken(), [1, 1, 1]);
        let mut cx = std::task::Context::from_waker(&wakers[1]);
        match waits[1].as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => assert!(e.to_string().contains("disk gone"), "{e}"),
            other => panic!("{other:?}"),
        }
        drop(waits);
        log.close().unwrap();
    }

    /// A rotation writes the old file's last record; a head published before the next batch
    /// must name that file, or the writer refuses to continue its own chain on restart.
    #[tokio::test]
    async fn the_head_names_the_file_of_its_record_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSettings {
            dir: dir.path().to_path_buf(),
            max_file_bytes: 1,
            ..AuditSettings::default()
        };
        let log = AuditLog::open(settings.clone(), "r", AuditMetrics::default()).unwrap();
        log.record("\"ts\":\"t\",\"type\":\"x\"".into());
        log.close().unwrap();
        let head = super::super::head::Head::read(&dir.path().join("head.json"))
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join(&head.file)).unwrap();
        assert!(
            text.lines()
                .filter_map(|l| super::super::line::parse(l.as_bytes()).ok())
                .any(|l| l.seq == head.seq && l.hash == head.hash),
            "{head:?} is not in its file"
        );
        AuditLog::open(settings, "r", AuditMetrics::default())
            .expect("the writer continues its chain")
            .close()
            .unwrap();
    }
}
