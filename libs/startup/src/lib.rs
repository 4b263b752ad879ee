//! Start-up plumbing shared by every dbgw binary, so each service is configured, logs and
//! stops the same way.
//!
//! - [`config::load`]: built-in defaults, then a TOML file, then environment variables.
//! - [`telemetry::init`]: structured `tracing` logs (JSON by default) on stderr.
//! - [`shutdown::signal`]: resolves on SIGTERM or Ctrl-C.
//! - [`sync`]: `std` locks taken without `unwrap`, the poisoning rule stated once.

pub mod config;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
