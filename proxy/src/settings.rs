//! The proxy's configuration: defaults for the local stack, overridden by a TOML file and
//! `PROXY_<SECTION>__<KEY>` environment variables (see `startup::config`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pg_connect::TlsMode;
use serde::{Deserialize, Serialize};

use crate::audit::AuditSettings;
use crate::upstream::{UpstreamAuth, UpstreamSettings};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where PostgreSQL clients connect.
    pub listen: String,
    /// Health and metrics endpoints (`/health/live`, `/health/ready`, `/metrics`).
    pub admin_listen: String,
    pub tls: ListenerTls,
    pub upstream: UpstreamSettings,
    /// Service accounts: database user name → id of the secret holding its credentials.
    pub services: BTreeMap<String, String>,
    pub limits: Limits,
    /// Session timers: warnings before a session is closed, and services' limits.
    pub sessions: SessionSettings,
    /// Load balancers that send the client's address first (PROXY protocol v2).
    pub proxy_protocol: crate::client_address::ProxyProtocolSettings,
    /// People signing in with ID tokens (off while `oidc.issuer` is empty).
    pub oidc: crate::auth::token::OidcSettings,
    /// Where people's access grants are.
    pub grants: crate::access::GrantsSettings,
    pub audit: AuditSettings,
    /// Replicas: this one's name and index, and its peers for cancel routing.
    pub fleet: crate::fleet::FleetSettings,
    pub secrets: secret_store::SecretsSettings,
    pub log: startup::telemetry::LogSettings,
    /// On SIGTERM, sessions get this long to finish before they are closed.
    pub shutdown_grace_secs: u64,
    /// Session threads (each a single-threaded runtime); 0 means one per core.
    pub worker_threads: usize,
}

/// TLS towards clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain and key. Without them the proxy answers SSLRequest with 'N'.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub plaintext: Plaintext,
}

/// Which clients may skip TLS. Tokens are refused over plaintext whatever this says.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Plaintext {
    Never,
    /// Only clients connecting from a loopback address (the local stack).
    Loopback,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest client message the proxy buffers to audit (Query, Parse, Bind). COPY data
    /// streams through whatever its size.
    pub max_message_bytes: usize,
    /// Time allowed from accept to a logged-in session.
    pub startup_timeout_secs: u64,
    /// After a client leaves, how long to wait for the outcomes of statements still running.
    pub drain_timeout_secs: u64,
    pub max_connections: usize,
    /// Connections from one client address that may be in start-up (not yet logged in) at
    /// once; more are refused at once (`53300`).
    pub max_handshakes_per_address: usize,
}

/// The `[sessions]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// A NOTICE goes to the client this long before the proxy closes its session (grant
    /// expiry, idle limit, age limit); at most half the limit, so short limits warn too.
    pub warn_before_secs: u64,
    /// Where a person asks for more time (the approvals app's request page); named in the
    /// notice before a grant ends. Empty: not named.
    pub approvals_url: String,
    /// Limits for service accounts (people's come from their grant). Off by default.
    pub services: ServiceLimits,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            warn_before_secs: 300,
            approvals_url: String::new(),
            services: ServiceLimits::default(),
        }
    }
}

/// The timers of `grants::SessionPolicy` that apply to service accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceLimits {
    pub idle_timeout_secs: Option<u32>,
    pub idle_in_transaction_timeout_secs: Option<u32>,
    pub max_session_secs: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:6432".into(),
            admin_listen: "127.0.0.1:9187".into(),
            tls: ListenerTls::default(),
            upstream: UpstreamSettings::default(),
            services: BTreeMap::from([("rates_api".to_string(), "dbgw/rates-api".to_string())]),
            limits: Limits::default(),
            sessions: SessionSettings::default(),
            proxy_protocol: Default::default(),
            oidc: Default::default(),
            grants: Default::default(),
            audit: AuditSettings::default(),
            fleet: Default::default(),
            secrets: Default::default(),
            log: Default::default(),
            shutdown_grace_secs: 30,
            worker_threads: 0,
        }
    }
}

impl Default for ListenerTls {
    fn default() -> Self {
        ListenerTls {
            cert_file: None,
            key_file: None,
            plaintext: Plaintext::Never,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            startup_timeout_secs: 15,
            drain_timeout_secs: 60,
            max_connections: 2000,
            max_handshakes_per_address: 50,
        }
    }
}

impl Settings {
    /// Checks what serde cannot: combinations that would weaken security.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.upstream.auth != UpstreamAuth::RdsIam || self.upstream.tls == TlsMode::VerifyFull,
            "upstream.auth = \"rds-iam\" sends the token as a password: it needs upstream.tls = \"verify-full\""
        );
        self.upstream
            .client_cert()
            .map_err(|e| anyhow::anyhow!("upstream.client_cert_file, client_key_file: {e}"))?;
        self.upstream
            .target()
            .check()
            .map_err(|e| anyhow::anyhow!("upstream: {e}"))?;
        anyhow::ensure!(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "tls.cert_file and tls.key_file go together"
        );
        anyhow::ensure!(
            self.tls.cert_file.is_some() || self.tls.plaintext != Plaintext::Never,
            "no TLS certificate and plaintext = \"never\": no client could connect"
        );
        self.fleet.validate()?;
        let services = &self.sessions.services;
        for (name, value) in [
            ("idle_timeout_secs", services.idle_timeout_secs),
            (
                "idle_in_transaction_timeout_secs",
                services.idle_in_transaction_timeout_secs,
            ),
            ("max_session_secs", services.max_session_secs),
        ] {
            anyhow::ensure!(
                value != Some(0),
                "sessions.services.{name} must be at least 1 (leave it out for none)"
            );
        }
        anyhow::ensure!(
            self.limits.max_message_bytes >= 1024,
            "limits.max_message_bytes is too small"
        );
        Ok(())
    }
}
