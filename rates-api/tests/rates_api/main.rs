//! rates-api's integration tests, one binary (zero2prod's layout): the real application on a
//! free port against a throwaway cluster (see `common`). `DBGW_TEST_LOG=debug` shows the
//! application's logs of a failing test.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

mod cache;
mod docs;
mod health;
mod rates;
mod rotation;
mod shutdown;
