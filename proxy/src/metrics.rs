//! Prometheus metrics and the admin HTTP endpoint (`/metrics`, `/health/live`,
//! `/health/ready`). Hot-path counters are plain atomics behind prometheus-client handles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::audit::writer::AuditMetrics;
use crate::audit::AuditLog;

type Labels = [(&'static str, &'static str); 1];

/// How a client connection ended up: the `result` label of `dbgw_proxy_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionResult {
    Accepted,
    Refused,
    /// Start-up took longer than `limits.startup_timeout_secs`.
    Timeout,
    /// Over `limits.max_connections` or `limits.max_handshakes_per_address`.
    OverLimit,
    /// A CancelRequest.
    Cancel,
}

impl ConnectionResult {
    pub const ALL: [ConnectionResult; 5] = [
        ConnectionResult::Accepted,
        ConnectionResult::Refused,
        ConnectionResult::Timeout,
        ConnectionResult::OverLimit,
        ConnectionResult::Cancel,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionResult::Accepted => "accepted",
            ConnectionResult::Refused => "refused",
            ConnectionResult::Timeout => "timeout",
            ConnectionResult::OverLimit => "over_limit",
            ConnectionResult::Cancel => "cancel",
        }
    }
}

/// What went wrong: the `kind` label of `dbgw_proxy_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A client broke the protocol (or a rule the proxy enforces on it).
    Protocol,
    /// A login was refused.
    Auth,
    /// The database could not be reached or refused the proxy's login.
    Upstream,
    /// The audit log could not accept a record (the session ends: fail closed).
    Audit,
    /// Reading from or writing to a socket failed.
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Protocol,
        ErrorKind::Auth,
        ErrorKind::Upstream,
        ErrorKind::Audit,
        ErrorKind::Io,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::Auth => "auth",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Audit => "audit",
            ErrorKind::Io => "io",
        }
    }
}

/// Where a cancel request went: the `route` label of `dbgw_proxy_cancel_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRoute {
    /// This replica's session: sent to the database.
    Local,
    /// Another replica's key: forwarded to the peers.
    Forwarded,
    /// Forwarded by a peer and this replica's session: sent to the database.
    FromPeer,
    /// No live session has this key (a stale or forged key): nothing cancelled.
    Unknown,
    /// A peer message that failed authentication or was stale: dropped.
    PeerRefused,
}

impl CancelRoute {
    pub const ALL: [CancelRoute; 5] = [
        CancelRoute::Local,
        CancelRoute::Forwarded,
        CancelRoute::FromPeer,
        CancelRoute::Unknown,
        CancelRoute::PeerRefused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CancelRoute::Local => "local",
            CancelRoute::Forwarded => "forwarded",
            CancelRoute::FromPeer => "from_peer",
            CancelRoute::Unknown => "unknown",
            CancelRoute::PeerRefused => "peer_refused",
        }
    }
}

/// Why the proxy closed a session on its own: the `reason` label of
/// `dbgw_proxy_sessions_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Idle past the policy's `idle_timeout_secs`.
    Idle,
    /// Idle inside a transaction past `idle_in_transaction_timeout_secs`.
    IdleInTransaction,
    /// Older than `max_session_secs`.
    MaxSession,
    /// The grant ended (its expiry, as this session last knew it).
    GrantExpired,
    /// The grant watcher found the grant revoked, expired or gone.
    Revoked,
}

impl Closed {
    pub const ALL: [Closed; 5] = [
        Closed::Idle,
        Closed::IdleInTransaction,
        Closed::MaxSession,
        Closed::GrantExpired,
        Closed::Revoked,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::IdleInTransaction => "idle_in_transaction",
            Closed::MaxSession => "max_session",
            Closed::GrantExpired => "grant_expired",
            Closed::Revoked => "revoked",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// Connections by how they ended up ([`ConnectionResult`]).
    pub connections: Family<Labels, Counter>,
    pub active_sessions: Gauge,
    pub statements: Counter,
    pub bytes_from_clients: Counter,
    pub bytes_to_clients: Counter,
    /// Errors by [`ErrorKind`].
    pub errors: Family<Labels, Counter>,
    pub audit: AuditMetrics,
    /// Sessions now, by the secret and version they logged in with: who still runs on the
    /// version before a rotation.
    pub sessions_by_secret_version: Family<Vec<(String, String)>, Gauge>,
    /// 1 while the control plane's grant notifications are received.
    pub grants_listening: Gauge,
    /// Cancel requests by where they went ([`CancelRoute`]).
    pub cancel_requests: Family<Labels, Counter>,
    /// Sessions the proxy closed by its own rules ([`Closed`]).
    pub sessions_closed: Family<Labels, Counter>,
}

/// Counts a session under its secret version until dropped.
pub struct OnVersion(Gauge);

impl Drop for OnVersion {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("dbgw_proxy");
        let m = Metrics {
            connections: Family::default(),
            active_sessions: Gauge::default(),
            statements: Counter::default(),
            bytes_from_clients: Counter::default(),
            bytes_to_clients: Counter::default(),
            errors: Family::default(),
            audit: AuditMetrics::default(),
            sessions_by_secret_version: Family::default(),
            grants_listening: Gauge::default(),
            cancel_requests: Family::default(),
            sessions_closed: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Client connections by result",
            m.connections.clone(),
        );
        registry.register(
            "active_sessions",
            "Logged-in sessions now",
            m.active_sessions.clone(),
        );
        registry.register(
            "statements",
            "Statements audited and forwarded",
            m.statements.clone(),
        );
        registry.register(
            "client_received_bytes",
            "Bytes read from clients",
            m.bytes_from_clients.clone(),
        );
        registry.register(
            "client_sent_bytes",
            "Bytes written to clients",
            m.bytes_to_clients.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "sessions_by_secret_version",
            "Logged-in sessions by the secret and version of their credentials",
            m.sessions_by_secret_version.clone(),
        );
        registry.register(
            "grants_listening",
            "1 while grant change notifications are received (else grants are polled)",
            m.grants_listening.clone(),
        );
        registry.register(
            "cancel_requests",
            "Cancel requests by route",
            m.cancel_requests.clone(),
        );
        registry.register(
            "sessions_closed",
            "Sessions the proxy closed by policy or grant, by reason",
            m.sessions_closed.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records written",
            m.audit.records.clone(),
        );
        registry.register(
            "audit_batches",
            "Audit write batches",
            m.audit.batches.clone(),
        );
        registry.register(
            "audit_syncs",
            "fdatasync calls that made audit batches durable (fsync durability: group commits)",
            m.audit.syncs.clone(),
        );
        registry.register(
            "audit_sync_seconds",
            "Time each of those fdatasync calls took",
            m.audit.sync_seconds.clone(),
        );
        registry.register(
            "audit_durable_wait_seconds",
            "Time a statement waited for the sync that made its audit record durable (fsync durability)",
            m.audit.durable_wait_seconds.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Failed audit writes",
            m.audit.write_errors.clone(),
        );
        registry.register(
            "audit_queue_depth",
            "Audit records waiting to be written",
            m.audit.buffered.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&[("kind", kind.label())]).inc();
    }

    pub fn cancel(&self, route: CancelRoute) {
        self.cancel_requests
            .get_or_create(&[("route", route.label())])
            .inc();
    }

    pub fn closed(&self, reason: Closed) {
        self.sessions_closed
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    pub fn connection(&self, result: ConnectionResult) {
        self.connections
            .get_or_create(&[("result", result.label())])
            .inc();
    }

    /// Counts a session on `version` of `secret` until the guard is dropped.
    pub fn session_on_version(&self, secret: &str, version: &str) -> OnVersion {
        let labels = vec![
            ("secret".to_string(), secret.to_string()),
            ("version".to_string(), version.to_string()),
        ];
        let gauge = self
            .sessions_by_secret_version
            .get_or_create(&labels)
            .clone();
        gauge.inc();
        OnVersion(gauge)
    }

    /// The Prometheus text exposition (what `/metrics` answers).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// What the admin endpoint reports on.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub audit: Arc<AuditLog>,
    pub draining: Arc<AtomicBool>,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn ready(State(h): State<Health>) -> impl IntoResponse {
    if h.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !h.audit.is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "audit log unavailable\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
}
