//! dbgw's audit proxy: a PostgreSQL wire-protocol proxy that authenticates clients itself,
//! logs in to the database with credentials it holds, and writes every statement to a
//! tamper-evident audit log before forwarding it.
//!
//! Reading order: [`server`] (accept loop, shutdown) → [`session`] (one connection) →
//! [`auth`] (who is this) → [`upstream`] (the proxy's own database login) → [`relay`] (the
//! hot path) → [`audit`] (records, writer, verifier). [`protocol`] holds the message codecs,
//! [`sql`] the statement splitter and password redaction, [`cancel`] the cancel keys.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod cancel;
pub mod client_address;
pub mod clock;
pub mod context;
pub mod fleet;
pub mod halt;
pub mod metrics;
pub mod protocol;
pub mod rds_iam;
pub mod relay;
pub mod server;
pub mod session;
pub mod sessions;
pub mod settings;
pub mod sql;
pub mod stream;
pub mod upstream;
pub mod wire;
