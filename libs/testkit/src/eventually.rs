//! Waiting in tests: poll a condition until it holds, with a deadline and a failure that says
//! what was awaited and what was last seen. Tests wait on conditions, never on a sleep that
//! hopes the other side is done.
//!
//! The check returns a [`Poll`]: `bool`; `Option<T>` (`Some` is done and hands back the
//! value); or `Result<T, E>` (`Ok` is done; the last `Err` is shown on failure, so a check
//! that returns `Err(what it saw)` fails with it).

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Polls, quickly at first and then every [`MAX_PAUSE`]: cheap checks settle fast, costly
/// ones (a query, an HTTP request) do not spin.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// What a check returns: done (with a value) or not yet (with what it saw).
pub trait Poll {
    type Value;
    /// `Ok(value)` when the condition holds; otherwise what was seen, if anything.
    fn outcome(self) -> Result<Self::Value, Option<String>>;
}

impl Poll for bool {
    type Value = ();
    fn outcome(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Poll for Option<T> {
    type Value = T;
    fn outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Debug> Poll for Result<T, E> {
    type Value = T;
    fn outcome(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(format!("{e:?}")))
    }
}

/// Waits until `check` holds and returns its value; fails after `limit` naming `what` and
/// the last value seen.
pub async fn eventually<P: Poll>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> P,
) -> P::Value {
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    loop {
        let last = match check().await.outcome() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            fail(what, limit, last);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`eventually`] for code that does not run on an async runtime (a child process, a
/// blocking socket): the same rules, the thread sleeps between checks.
pub fn eventually_blocking<P: Poll>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> P,
) -> P::Value {
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    loop {
        let last = match check().outcome() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            fail(what, limit, last);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn fail(what: &str, limit: Duration, last: Option<String>) -> ! {
    match last {
        Some(seen) => panic!("{what}: not within {limit:?}; last seen: {seen}"),
        None => panic!("{what}: not within {limit:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), async || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "the count reaches 0: not within 50ms; last seen: \"2 left\"")]
    async fn fails_naming_what_and_the_last_value_seen() {
        eventually(
            "the count reaches 0",
            Duration::from_millis(50),
            async || Err::<(), _>("2 left"),
        )
        .await;
    }

    #[test]
    fn the_blocking_form_waits_too() {
        let start = Instant::now();
        eventually_blocking("20 ms pass", Duration::from_secs(5), || {
            start.elapsed() >= Duration::from_millis(20)
        });
    }

    #[test]
    #[should_panic(expected = "never: not within 30ms")]
    fn the_blocking_form_fails_after_the_limit() {
        eventually_blocking("never", Duration::from_millis(30), || false);
    }
}
