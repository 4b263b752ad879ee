//! The service's metrics (Prometheus text at `/metrics`), all `dbgw_rates_api_...`: the
//! request metrics of `service::metrics` (taken by its middleware, so every response, errors
//! included, is counted and logged once), the pool's size and the cache's hits.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use service::metrics::HttpMetrics;

pub struct Metrics {
    registry: Registry,
    /// Fed by `service::metrics::track`.
    pub http: Arc<HttpMetrics>,
    pool_size: Gauge,
    pool_available: Gauge,
    /// `/rates` answers served from the cache.
    pub cache_hits: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = service::metrics::registry("rates_api");
        let http = HttpMetrics::register(&mut registry);
        let pool_size = Gauge::default();
        let pool_available = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Database connections the pool holds open",
            pool_size.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Open database connections not in use",
            pool_available.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Answers served from the cache without a query",
            cache_hits.clone(),
        );
        Metrics {
            registry,
            http,
            pool_size,
            pool_available,
            cache_hits,
        }
    }
}

impl Metrics {
    /// The exposition text, with the pool gauges read now.
    pub fn render(&self, pool_size: usize, pool_available: usize) -> String {
        self.pool_size.set(pool_size as i64);
        self.pool_available.set(pool_available as i64);
        service::metrics::render(&self.registry)
    }
}
