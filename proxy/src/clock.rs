//! The proxy's timers, on a thread of their own.
//!
//! Session threads run tokio without its timer driver. With it, every park of a session
//! thread (two per statement: waiting for the client, then for the database) also locked and
//! scanned the timer wheel and read the clock: about 730 instructions per statement under
//! callgrind, for timers that almost never fire. The proxy's timers (start-up and connect
//! deadlines, idle limits, drains, waits for disk space) are per session or rarer, never per
//! statement, so they are registered with the `timers` thread's runtime instead. When one
//! fires, its wake-up reaches the waiting task on whatever thread it runs, like a socket's.
//!
//! Every timer in the proxy is made here (clippy's `disallowed-methods` refuses
//! `tokio::time::{sleep, sleep_until, timeout}` elsewhere): one made directly on a session
//! thread would panic. Libraries that make their own timers (the HTTP client that fetches an
//! identity provider's keys, the AWS SDK, the grants database's client) run inside
//! [`with_timers`].

use std::future::{Future, IntoFuture};
use std::sync::LazyLock;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::{Instant, Sleep, Timeout};

/// The `timers` thread's runtime: timers, and I/O for what runs inside [`with_timers`]. It
/// runs until the process exits, so no timer outlives its driver.
static TIMERS: LazyLock<Handle> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the timer runtime starts");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("timers".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("the timer thread starts");
    handle
});

/// Starts the timer thread now rather than at the first session's first timer.
pub fn start() {
    LazyLock::force(&TIMERS);
}

/// `make`, with the timer runtime as tokio's current one: what it creates registers there.
fn on_timers<T>(make: impl FnOnce() -> T) -> T {
    let _timers = TIMERS.enter();
    make()
}

/// [`tokio::time::sleep`].
#[allow(clippy::disallowed_methods)]
pub fn sleep(duration: Duration) -> Sleep {
    on_timers(|| tokio::time::sleep(duration))
}

/// [`tokio::time::sleep_until`].
#[allow(clippy::disallowed_methods)]
pub fn sleep_until(deadline: Instant) -> Sleep {
    on_timers(|| tokio::time::sleep_until(deadline))
}

/// [`tokio::time::timeout`]: `future` is polled where it is awaited; only its deadline is on
/// the timer thread.
#[allow(clippy::disallowed_methods)]
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    on_timers(|| tokio::time::timeout(duration, future))
}

/// Runs `future` where it is awaited, but with the timer runtime as tokio's current one, so
/// the timers, sockets and tasks a library creates inside it belong to that runtime (which
/// has a timer driver). Sockets made before keep their own runtime. For the rare calls
/// (log-in, a secret's fetch) that reach HTTP clients or database drivers, never for the
/// relay.
pub async fn with_timers<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _timers = TIMERS.enter();
        future.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session thread's runtime: I/O only, no timer driver.
    fn without_timers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap()
    }

    #[test]
    fn timers_work_on_a_runtime_without_a_timer_driver() {
        without_timers().block_on(async {
            let started = Instant::now();
            sleep(Duration::from_millis(20)).await;
            assert!(started.elapsed() >= Duration::from_millis(20));
            let late = timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
            assert!(late.is_err(), "the deadline fired");
            let on_time = timeout(Duration::from_secs(5), async { 7 }).await;
            assert_eq!(on_time.ok(), Some(7));
            sleep_until(Instant::now() + Duration::from_millis(5)).await;
        });
    }

    #[test]
    fn a_library_timer_runs_inside_with_timers() {
        without_timers().block_on(async {
            // Made directly, this timer would panic: the runtime has no timer driver.
            #[allow(clippy::disallowed_methods)]
            let slept = with_timers(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                "slept"
            })
            .await;
            assert_eq!(slept, "slept");
        });
    }

    #[test]
    fn a_timer_made_on_a_session_thread_outside_this_module_panics() {
        // What the clippy rule keeps from happening: proof that the rule is needed.
        let panicked = std::thread::spawn(|| {
            without_timers().block_on(async {
                #[allow(clippy::disallowed_methods)]
                tokio::time::sleep(Duration::from_millis(1)).await;
            })
        })
        .join();
        assert!(panicked.is_err());
    }
}
