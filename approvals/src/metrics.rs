//! The app's metrics (Prometheus text at `/metrics`), all `dbgw_approvals_...`: the request
//! metrics of `service::metrics` (taken by its middleware with the per-request log line) and
//! the workflow's counters.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use service::metrics::HttpMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

pub struct Metrics {
    registry: Registry,
    /// Fed by `service::metrics::track`.
    pub http: Arc<HttpMetrics>,
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
        let mut registry = service::metrics::registry("approvals");
        let http = HttpMetrics::register(&mut registry);
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
            http,
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
        service::metrics::render(&self.registry)
    }
}
