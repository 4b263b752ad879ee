//! What every dbgw web service (approvals, rates-api) is built from, so that each one starts,
//! serves, reports and reaches its database the same way. `startup` holds what every binary
//! needs (configuration, logging, signals, locks); this crate adds what a long-running HTTP
//! service needs on top, and is kept out of the command-line tools and the rotation Lambda.
//!
//! - [`binary`]: the `main` skeleton: load the configuration (exit 2 on a bad one),
//!   `--print-config`, logging, the runtime, serve until SIGTERM, exit code.
//! - [`serve`]: axum until the stop signal, then in-flight requests get a drain limit.
//! - [`health`]: `/health/live`, `/health/ready` and `/metrics`, the same paths everywhere.
//! - [`metrics`]: the `dbgw_<service>_` registry and the request middleware (count, time
//!   and log every request, labelled by route pattern).
//! - [`database`]: the `[database]` settings (same keys and units in every service) and the
//!   pool whose connections log in with the login currently in the secret store.

pub mod binary;
pub mod database;
pub mod health;
pub mod metrics;
pub mod serve;
