//! The rates database and the PostgreSQL clusters it runs on locally.
//!
//! - [`schema`]: roles, the dump, and versioned migrations, applied to any server
//!   (a local cluster, RDS) by the same code.
//! - [`cluster`]: throwaway clusters for tests (SCRAM, TLS, a free port, removed afterwards)
//!   and the persistent dev cluster of `make up`. Both start from one template built once per
//!   version of the schema files.
//! - [`tls`]: the test certificate authority those clusters (and the proxy in tests) use.

pub mod cluster;
pub mod schema;
pub mod tls;

pub use cluster::Cluster;
