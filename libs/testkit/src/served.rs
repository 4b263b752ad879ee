//! A task serving for a test (an app, the proxy) that stops when asked, as on SIGTERM.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The future a served task gets: it resolves when the test asks the task to stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long a served task may take to stop once asked. The apps' own drain limits in tests
/// are seconds; past this the test fails saying so instead of waiting for ever.
const STOP_LIMIT: Duration = Duration::from_secs(120);

/// A task serving for a test (an app, the proxy) that stops when asked, as on SIGTERM.
pub struct Served<T> {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Served<T> {
    /// Spawns `run(stop)`; `stop` resolves at [`Served::stop`] (or when this is dropped).
    pub fn spawn<Fut>(run: impl FnOnce(StopSignal) -> Fut) -> Served<T>
    where
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let stopped: StopSignal = Box::pin(async move {
            let _ = rx.await;
        });
        Served {
            stop: Some(tx),
            task: Some(tokio::spawn(run(stopped))),
        }
    }

    /// Signals the task to stop and waits for what it returns.
    pub async fn stop(mut self) -> T {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("stopped once");
        match tokio::time::timeout(STOP_LIMIT, task).await {
            Ok(joined) => joined.expect("the served task panicked"),
            Err(_) => panic!("the served task did not stop within {STOP_LIMIT:?} of being asked"),
        }
    }
}
