//! The one shutdown trigger: SIGTERM (what ECS and `make down` send) or SIGINT (Ctrl-C).

use std::future::Future;

use tokio::signal::unix::{signal as unix_signal, SignalKind};

/// Installs the handlers now and returns a future that resolves when the process is asked to
/// stop. Installing eagerly matters: until then the default disposition (exit) applies.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let mut term = unix_signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = unix_signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    }
}
