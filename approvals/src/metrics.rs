//! Prometheus metrics (`/metrics`) and the per-request log line, taken by one middleware.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::Instrument;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    webhook: Family<OutcomeLabels, Counter>,
    pub requests_created: Counter,
    pub decisions: Counter,
    pub revocations: Counter,
    pub expiries: Counter,
    pub provisioning_failures: Counter,
    pub scheduler_runs: Counter,
    pub scim_auth_failures: Counter,
    pub people_deprovisioned: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("approvals");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let webhook = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_messages",
            "Webhook delivery attempts by outcome (delivered, failed, given_up)",
            webhook.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        Metrics {
            requests_created: counter(&mut registry, "access_requests", "Access requests made"),
            decisions: counter(&mut registry, "decisions", "Approvals and denials recorded"),
            revocations: counter(&mut registry, "revocations", "Grants revoked by approvers"),
            expiries: counter(&mut registry, "expiries", "Grants ended at their expiry"),
            provisioning_failures: counter(
                &mut registry,
                "provisioning_failures",
                "Provisioning or ending runs that failed (retried by the scheduler)",
            ),
            scheduler_runs: counter(
                &mut registry,
                "scheduler_runs",
                "Scheduler passes completed",
            ),
            scim_auth_failures: counter(
                &mut registry,
                "scim_auth_failures",
                "SCIM calls refused for a missing or wrong bearer token",
            ),
            people_deprovisioned: counter(
                &mut registry,
                "people_deprovisioned",
                "People the identity provider deactivated or deleted (SCIM)",
            ),
            registry,
            requests,
            webhook,
        }
    }
}

impl Metrics {
    pub fn webhook(&self, outcome: &str) {
        self.webhook
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
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

/// Counts and logs every request, labelled by route pattern (never the raw path) and by
/// [`method_label`] (never the raw method).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = startup::telemetry::request_span(method, &route);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            route: route.clone(),
            status,
        })
        .inc();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        )
    });
    response
}
