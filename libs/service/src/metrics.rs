//! One metric naming scheme and one request middleware for every service.
//!
//! Every metric is `dbgw_<service>_<name>` ([`registry`]): `dbgw_proxy_`, `dbgw_approvals_`,
//! `dbgw_rates_api_`, so one dashboard query can select a service by prefix and no two
//! services share a name. [`HttpMetrics`] counts and times every request; [`track`] is the
//! middleware that feeds it and writes the per-request log line.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing::Instrument;

/// The registry of one service: every metric registered in it is `dbgw_<service>_...`.
/// `service` is the service's name with `_` for `-` (`rates_api`).
pub fn registry(service: &str) -> Registry {
    Registry::with_prefix(format!("dbgw_{service}"))
}

/// The exposition text of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~4 s: rates answer in milliseconds, pages in tens; the ceiling is timeouts.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// `http_requests_total{method, route, status}` and
/// `http_request_duration_seconds{route}`.
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

impl HttpMetrics {
    /// Registers the request metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<HttpMetrics> {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from receiving a request to its response, by route",
            latency.clone(),
        );
        Arc::new(HttpMetrics { requests, latency })
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }
}

/// The methods a metric label or log line may name; anything else is `other`, so a client
/// sending made-up methods (HTTP allows any token) cannot grow the label set.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// The label of a request method: itself if standard, else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    METHODS
        .iter()
        .take(METHODS.len() - 1)
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// The middleware: counts, times and logs every request, errors included, once. Routes are
/// labelled by their pattern, never by the raw path, and methods by [`method_label`], so a
/// scan of random URLs or methods cannot blow up the number of series.
pub async fn track(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // The path without its query string, which may carry codes or search terms.
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = startup::telemetry::request_span(method, &route);
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.observe(method, &route, status, elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            path = %path,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        )
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_dbgw_service_prefix_and_methods_are_bounded() {
        let mut registry = registry("rates_api");
        let http = HttpMetrics::register(&mut registry);
        http.observe(method_label(&"BREW".parse().unwrap()), "/rates", 200, 0.001);
        let text = render(&registry);
        assert!(
            text.contains(
                r#"dbgw_rates_api_http_requests_total{method="other",route="/rates",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"dbgw_rates_api_http_request_duration_seconds_count{route="/rates"} 1"#
            ),
            "{text}"
        );
    }
}
