//! What every session shares, built once by [`crate::server`] and read by
//! [`crate::session`].

use std::sync::Arc;

use secret_store::SecretStore;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditLog;
use crate::auth::person::People;
use crate::auth::service::Verifiers;
use crate::cancel::local::Canceller;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::sessions::{Handshakes, Sessions};
use crate::settings::Settings;
use crate::upstream::Connector;

pub struct Context {
    pub settings: Settings,
    pub audit: Arc<AuditLog>,
    pub secrets: SecretStore,
    pub upstream: Arc<Connector>,
    pub tls: Option<TlsAcceptor>,
    /// This replica's cancel keys.
    pub canceller: Arc<Canceller>,
    /// This replica's peers, for cancels of their sessions.
    pub fleet: Arc<Fleet>,
    pub verifiers: Verifiers,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Sessions>,
    /// Person logins (token checks and grants); `None` while `oidc.issuer` is empty.
    pub people: Option<People>,
    pub handshakes: Handshakes,
}
