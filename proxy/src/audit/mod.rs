//! The audit log: what is written, how, and how it is checked.
//!
//! - [`line`]: the line format (seq, prev, hash), its one encoder and reader.
//! - [`head`]: the chain's head, published outside it, so a cut tail is detected.
//! - [`params`]: bound parameters as readable, searchable JSON.
//! - [`record`]: the JSON records (connection events, statement intents, outcomes).
//! - [`writer`]: the write-ahead, hash-chained, rotating file writer.
//! - [`verify`]: `proxy audit verify`, which finds the first altered, removed, inserted or
//!   reordered record, in each replica's chain.
//! - [`merge`]: `proxy audit merge`, the records of several replicas as one stream in time
//!   order.
//! - [`crosscheck`]: `proxy audit crosscheck`, which compares the log with the database
//!   server's own (pgaudit) and reports every difference.
//! - [`source`]: where the audit is read from: local files and directories, or the shipped
//!   copy in S3 ([`s3`]), streamed.
//! - [`evidence`]: `proxy audit evidence`, a period's evidence bundle with its manifest.
//! - [`read`]: the typed read side of the records (what `record` and `writer` write).
//! - [`transcript`]: `proxy audit session ID`, one session as a verified transcript.
//! - [`sessions`]: `proxy audit sessions`, one line per session, with [`filter`]'s filters,
//!   streaming.
//!
//! Every line is one JSON object that starts with `seq` and `prev` and ends with `hash`:
//! `hash = SHA-256(line up to the comma before "hash")`, and `prev` is the previous record's
//! hash, across file rotations and restarts.

pub mod crosscheck;
pub mod evidence;
pub mod filter;
pub mod head;
pub mod line;
pub mod merge;
pub mod params;
pub mod read;
pub mod record;
pub mod s3;
pub mod sessions;
pub mod source;
#[cfg(test)]
mod testlog;
pub mod transcript;
pub mod verify;
pub mod writer;

pub use record::{Identity, SessionInfo};
pub use writer::{AuditError, AuditLog, AuditSettings, Durability};
