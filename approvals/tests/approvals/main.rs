//! The approvals app's integration tests, one binary: each test starts its own stack
//! (cluster, identity provider, app, and the proxy where it needs one; see `common`).
//! `DBGW_TEST_LOG=debug` shows the app's logs of a failing test.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod activity;
mod api;
mod boundaries;
mod browser;
mod common;
mod crash;
mod docs;
mod expiry;
mod extend;
mod extension_live;
mod history;
mod process;
mod rds_iam;
mod scim;
mod security;
mod tokens;
mod withdraw_extension;
