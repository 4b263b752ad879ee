//! A task serving for a test (an app, the proxy) that stops when asked, as on SIGTERM.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The future a served task gets: it resolves when the test asks the task to stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

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
        task.await.expect("the served task panicked")
    }
}
