//! What the workspace's tests share, so that a test reads as what it checks. A
//! dev-dependency only (and the benchmarks'): no production crate links it, so no binary
//! ships a test harness.
//!
//! - [`db`]: a throwaway cluster started off the runtime's threads, with a temporary file
//!   secret store and logins in it ([`TestDb`]).
//! - [`served`]: a task serving for a test (an app, the proxy) that stops on request.
//! - [`moto`]: a moto server (the Secrets Manager emulator) per test and secrets in the AWS
//!   layout.
//! - [`docs`]: every configuration key and metric documented, every deployed variable a key.
//! - [`eventually`]: waiting on a condition with a deadline.
//! - [`logs`]: the code's logs behind `DBGW_TEST_LOG`.
//! - [`watchdog`]: a limit on a whole test, so a hang fails naming where it stopped
//!   ([`TestDb`] starts one).

pub mod db;
pub mod docs;
pub mod eventually;
pub mod logs;
pub mod moto;
pub mod served;
pub mod watchdog;

pub use db::TestDb;
pub use docs::{assert_deployed_keys, assert_documented, config_keys, metric_names};
pub use eventually::{eventually, eventually_blocking};
pub use logs::init_logs;
pub use moto::Moto;
pub use served::{Served, StopSignal};
pub use watchdog::Watchdog;
