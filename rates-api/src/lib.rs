//! The rates service: for two ports (or regions) and a range of days, the number of prices
//! and their average, day by day. The contract is `shared/specs/rates-api.md`; the operator's
//! guide is `docs/rates-api.md`.
//!
//! [`Application::build`] binds the listener and prepares the pool, so tests start the real
//! service on port 0 and read [`Application::port`]; [`Application::run_until_stopped`] serves
//! until the given future resolves, then drains in-flight requests.
//!
//! - [`settings`]: configuration (defaults, file, environment).
//! - [`db`]: the connection pool, credentials from the secret store, the rates query.
//! - [`cache`]: answers kept until the database says the data changed.
//! - [`routes`]: the handlers and request validation.
//! - [`error`]: JSON errors.
//! - [`metrics`]: the service's Prometheus metrics.
//!
//! The `main` skeleton, health endpoints, request middleware, `[database]` settings and
//! pool come from the workspace's `service` crate, shared with approvals.

pub mod cache;
pub mod db;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod settings;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use secret_store::SecretStore;

pub use settings::Settings;

/// Longest wait for in-flight requests after a shutdown signal. Requests are bounded by the
/// pool wait and statement timeouts well below this; it guards against stuck clients.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The service, bound and ready to serve.
pub struct Application {
    listener: tokio::net::TcpListener,
    port: u16,
    router: axum::Router,
    pool: db::Pool,
    cache: Option<Arc<cache::Cache>>,
    max_lifetime: std::time::Duration,
}

impl Application {
    /// Binds `settings.listen` and builds the pool. Fails on configuration problems (an
    /// unreadable CA bundle or secret, an address in use), not when the database is down:
    /// the service then runs and reports not ready until the database is back.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = SecretStore::from_settings(&settings.secrets);
        Self::build_with_secrets(settings, store).await
    }

    /// [`Application::build`] with a secret store made by the caller (tests: an emulator
    /// client with static credentials).
    pub async fn build_with_secrets(
        settings: Settings,
        store: SecretStore,
    ) -> anyhow::Result<Application> {
        tls_config::install_provider();
        let pool = db::pool(&settings.database, store).await?;
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let cache = settings
            .api
            .cache
            .then(|| Arc::new(cache::Cache::new(settings.api.cache_entries)));
        let router = routes::router(routes::AppState {
            pool: pool.clone(),
            cache: cache.clone(),
            max_range_days: settings.api.max_range_days,
            metrics: Arc::new(metrics::Metrics::default()),
        });
        Ok(Application {
            listener,
            port,
            router,
            pool,
            cache,
            max_lifetime: settings.database.max_lifetime(),
        })
    }

    /// The bound port (the real one when `listen` asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves; then stops accepting connections, lets in-flight
    /// requests finish (at most [`DRAIN_LIMIT`]), and returns.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let reaper = tokio::spawn(db::reap_expired(self.pool.clone(), self.max_lifetime));
        let watcher = self
            .cache
            .clone()
            .map(|cache| tokio::spawn(db::watch_changes(self.pool.clone(), cache)));
        tracing::info!(port = self.port, "rates-api listening");
        let served = service::serve::serve(self.listener, self.router, shutdown, DRAIN_LIMIT).await;
        reaper.abort();
        if let Some(w) = watcher {
            w.abort();
        }
        self.pool.close();
        tracing::info!("rates-api stopped");
        served
    }
}
