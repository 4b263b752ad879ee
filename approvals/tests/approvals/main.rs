//! The approvals app's integration tests, one binary: each test starts its own stack
//! (cluster, identity provider, app, and the proxy where it needs one; see `common`).

mod api;
mod browser;
mod common;
mod crash;
mod expiry;
mod process;
mod security;
