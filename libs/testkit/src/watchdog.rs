//! A limit on a whole test. A test that hangs (somewhere a wait with no deadline) fails
//! within minutes, naming itself and its last step, instead of holding CI until CI's own
//! limit with nothing said.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The limit of a test with a throwaway cluster ([`crate::TestDb`] starts the watch): the
/// slowest in CI take about 70 s. `DBGW_TEST_LIMIT_SECS` sets another, for a long run by
/// hand (`make fuzz-ledger` with thousands of sessions).
pub fn test_limit() -> Duration {
    std::env::var("DBGW_TEST_LIMIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(600), Duration::from_secs)
}

/// Watches the test that started it; cheap to clone (each browser of a test keeps a clone
/// to record its steps). The watch ends when the last clone is dropped.
#[derive(Clone)]
pub struct Watchdog {
    shared: Arc<Shared>,
    _watching: Arc<Watching>,
}

struct Shared {
    state: Mutex<State>,
    ended: Condvar,
}

struct State {
    step: String,
    done: bool,
}

/// Dropped with the last clone: tells the watching thread the test is over.
struct Watching(Arc<Shared>);

impl Drop for Watching {
    fn drop(&mut self) {
        startup::sync::lock(&self.0.state).done = true;
        self.0.ended.notify_all();
    }
}

impl Watchdog {
    /// Starts watching the current test: past `limit`, the test binary prints the test's
    /// name and last step and aborts (a hung test cannot be failed from outside its thread).
    pub fn start(limit: Duration) -> Watchdog {
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                step: "starting".into(),
                done: false,
            }),
            ended: Condvar::new(),
        });
        let watched = shared.clone();
        std::thread::spawn(move || {
            let state = startup::sync::lock(&watched.state);
            let (state, waited) = watched
                .ended
                .wait_timeout_while(state, limit, |s| !s.done)
                .unwrap_or_else(|e| e.into_inner());
            if waited.timed_out() {
                // Straight to the file descriptor: the test harness captures `eprintln!`,
                // and the abort would lose it.
                let _ = writeln!(
                    std::io::stderr(),
                    "{test}: still running after {limit:?}; its last step: {}",
                    state.step
                );
                std::process::abort();
            }
        });
        Watchdog {
            _watching: Arc::new(Watching(shared.clone())),
            shared,
        }
    }

    /// Records what the test is doing now (shown if it never finishes).
    pub fn step(&self, what: impl Into<String>) {
        startup::sync::lock(&self.shared.state).step = what.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_that_finishes_in_time_is_not_stopped() {
        let dog = Watchdog::start(Duration::from_millis(200));
        dog.step("working");
        drop(dog.clone());
        drop(dog);
        // Past the limit: the watching thread saw the end and did not abort the process.
        std::thread::sleep(Duration::from_millis(400));
    }

    /// Run by the test below in a child process: it outlives its limit.
    #[test]
    #[ignore = "run by a_test_past_its_limit_stops_the_process_naming_its_last_step"]
    fn hangs_past_its_limit() {
        let dog = Watchdog::start(Duration::from_millis(100));
        dog.step("waiting on nothing");
        std::thread::sleep(Duration::from_secs(30));
    }

    #[test]
    fn a_test_past_its_limit_stops_the_process_naming_its_last_step() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "watchdog::tests::hangs_past_its_limit",
                "--ignored",
            ])
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}", out.status);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "watchdog::tests::hangs_past_its_limit: still running after 100ms; \
                 its last step: waiting on nothing"
            ),
            "{stderr}"
        );
    }
}
