//! The proxy's integration tests, one binary (zero2prod's layout): each module attacks or
//! exercises one promise against a real PostgreSQL through the proxy (see `common`).
//! `DBGW_TEST_LOG=debug` shows the proxy's logs of a failing test.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]
// The tests drive their own runtimes, which have timer drivers; the rule that every timer
// is made by `proxy::clock` is for the proxy's session threads.
#![allow(clippy::disallowed_methods)]

mod common;

mod audit_chain;
mod audit_evidence;
mod audit_s3;
mod audit_session;
mod bad_input;
mod client_address;
mod clients;
mod crosscheck;
mod docs;
mod drivers;
mod fail_closed;
mod fleet;
mod hostile;
mod ledger;
mod lexer;
mod nested_statements;
mod people_logins;
mod pipeline;
mod read_only;
mod rotation;
mod session_policy;
mod sso;
mod step_up;
