//! Serving until told to stop: stop accepting connections, let requests in flight finish,
//! and give up on them after a drain limit, so a stuck client cannot hold a deploy.

use std::future::Future;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;

/// Serves `router` on `listener` until `shutdown` resolves, then drains requests in flight
/// for at most `drain_limit`.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: F,
    drain_limit: Duration,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // Responses are small and latency matters more than packet count.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let drain = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(drain_limit).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = axum::serve(listener, router).with_graceful_shutdown(signal) => served?,
        () = drain => tracing::warn!(
            limit = ?drain_limit,
            "requests still in flight after the drain limit; stopping anyway"
        ),
    }
    Ok(())
}
