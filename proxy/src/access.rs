//! The proxy's read-only view of the control plane: the access grants that let people in.
//! At login the grant is checked; while a session runs, a watcher re-checks the grants of
//! the people connected and closes the sessions whose grant was revoked or has expired.
//!
//! The re-check is pushed: the control plane NOTIFYs `dbgw_grants` when a grant changes
//! (control migration 0004) and every replica LISTENs, so a revocation reaches the whole
//! fleet within a round trip. Polling is the fallback: every `poll_interval_ms` while the
//! notification connection is down, every `notified_poll_interval_ms` while it is up (a
//! safety net against a lost trigger). A (re)connected listener re-checks at once, since
//! notifications sent while it was away are lost.
//!
//! If the control plane is unreachable, new person logins are refused (fail closed) and
//! open sessions are left alone until it answers again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secret_store::SecretStore;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::audit::Identity;
use crate::protocol::sqlstate;
use crate::sessions::Sessions;
use crate::upstream::UpstreamSettings;

/// Why the control plane could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the proxy's control-plane login: {0}")]
    Secret(#[from] secret_store::Error),
    #[error(transparent)]
    Connect(#[from] pg_connect::ConnectError),
    #[error("querying the control plane: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("the control plane did not answer in {} s", CHECK_TIMEOUT.as_secs())]
    Timeout,
}

/// The `[grants]` section of the proxy's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrantsSettings {
    /// The control-plane database; the server, TLS and CA are those of `[upstream]` unless
    /// given here.
    pub database: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub ca_file: Option<PathBuf>,
    /// Secret with the proxy's read-only login to the control plane.
    pub secret: String,
    /// How often open sessions' grants are polled while change notifications cannot be
    /// received (revocation then takes at most this long).
    pub poll_interval_ms: u64,
    /// Listen for the control plane's change notifications (`dbgw_grants`).
    pub listen: bool,
    /// How often grants are polled anyway while notifications are received.
    pub notified_poll_interval_ms: u64,
}

impl GrantsSettings {
    /// The control plane's server: `[upstream]`'s unless this section names another.
    pub fn server(&self, upstream: &UpstreamSettings) -> pg_connect::Target {
        let mut server = upstream.target();
        server.host = self.host.clone().unwrap_or(server.host);
        server.port = self.port.unwrap_or(server.port);
        server.ca_file = self.ca_file.clone().or(server.ca_file);
        server
    }
}

impl Default for GrantsSettings {
    fn default() -> Self {
        GrantsSettings {
            database: "dbgw".into(),
            host: None,
            port: None,
            ca_file: None,
            secret: "dbgw/proxy-control".into(),
            poll_interval_ms: 1000,
            listen: true,
            notified_poll_interval_ms: 30_000,
        }
    }
}

pub struct Access {
    settings: GrantsSettings,
    upstream: UpstreamSettings,
    secrets: SecretStore,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// True while the notification connection listens.
    listening: AtomicBool,
    /// Set to 1 while listening (`dbgw_proxy_grants_listening`).
    listening_gauge: prometheus_client::metrics::gauge::Gauge,
    /// Wakes the watcher for a check now.
    wake: tokio::sync::Notify,
    /// `dbgw_proxy_sessions_closed_total{reason="revoked"}`.
    closed: prometheus_client::metrics::counter::Counter,
}

/// The application name of the notification connection (operators see it in
/// `pg_stat_activity`).
pub const LISTENER_APPLICATION: &str = "dbgw-proxy-grants";
/// The channel the control plane notifies.
const CHANNEL: &str = "dbgw_grants";

/// How long one check of the open sessions' grants may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

impl Access {
    pub fn new(
        settings: GrantsSettings,
        upstream: UpstreamSettings,
        secrets: SecretStore,
        listening_gauge: prometheus_client::metrics::gauge::Gauge,
        closed: prometheus_client::metrics::counter::Counter,
    ) -> Arc<Access> {
        Arc::new(Access {
            settings,
            upstream,
            secrets,
            client: tokio::sync::Mutex::new(None),
            listening: AtomicBool::new(false),
            listening_gauge,
            wake: tokio::sync::Notify::new(),
            closed,
        })
    }

    /// The shared connection, (re)opened when needed.
    pub async fn client(&self) -> Result<Arc<Client>, AccessError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = self
            .settings
            .server(&self.upstream)
            .connect_with_secret(
                &self.secrets,
                &self.settings.secret,
                &self.settings.database,
                "dbgw-proxy",
            )
            .await?;
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    /// The grant that lets the person (`issuer`, `subject`, `email`) into `database` now.
    pub async fn check(
        &self,
        person: (&str, &str),
        email: &str,
        database: &str,
    ) -> Result<grants::Check, AccessError> {
        let client = self.client().await?;
        Ok(grants::check_person(&client, Some(person), email, database).await?)
    }

    /// Closes the sessions whose grant ended, when notified and every poll interval, until
    /// `stop`.
    pub async fn watch(
        self: Arc<Self>,
        sessions: Arc<Sessions>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if self.settings.listen {
            tokio::spawn(self.clone().listen(stop.clone()));
        }
        loop {
            let every = if self.listening.load(Ordering::Relaxed) {
                self.settings.notified_poll_interval_ms
            } else {
                self.settings.poll_interval_ms
            };
            tokio::select! {
                _ = crate::clock::sleep(Duration::from_millis(every.max(100))) => {}
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => return,
            }
            let ids = sessions.grant_ids();
            if ids.is_empty() {
                continue;
            }
            let check = async {
                let c = self.client().await?;
                Ok::<_, AccessError>(grants::review(&c, &ids).await?)
            };
            // A connection that hangs rather than fails must not stop the watcher; sessions
            // still end at their grant's expiry without it (see `session`).
            let reviewed = match crate::clock::timeout(CHECK_TIMEOUT, check).await {
                Ok(ended) => ended,
                Err(_) => {
                    *self.client.lock().await = None;
                    Err(AccessError::Timeout)
                }
            };
            match reviewed {
                Ok(review) => {
                    for (grant, why) in review.ended {
                        let n = sessions.halt_where(
                            |id| matches!(id, Identity::Person { grant_id, .. } if *grant_id == grant),
                            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                            &format!("access revoked: {why}"),
                        );
                        if n > 0 {
                            self.closed.inc_by(n as u64);
                            tracing::info!(grant, sessions = n, reason = %why, "closed sessions of an ended grant");
                        }
                    }
                    // An extended (or shortened) grant: its sessions follow it, no drop.
                    for (grant, end) in review.ends {
                        let n = sessions.set_grant_end(grant, end);
                        if n > 0 {
                            tracing::info!(grant, sessions = n, ends_at = %end, "grant end moved");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking grants failed; will retry"),
            }
        }
    }
}

impl Access {
    /// Keeps a connection listening on the control plane's channel and wakes the watcher at
    /// each notification; reconnects with back-off when the connection ends.
    async fn listen(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let ended = tokio::select! {
                ended = self.listen_once() => ended,
                _ = stop.cancelled() => return,
            };
            self.set_listening(false);
            // The watcher may be in its long notified-mode sleep: back to polling now.
            self.wake.notify_one();
            match ended {
                Ok(()) => tracing::warn!("grant notifications stopped; polling until reconnected"),
                Err(e) => tracing::warn!(error = %e, "cannot listen for grant changes; polling"),
            }
            tokio::select! {
                _ = crate::clock::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One notification connection, until it ends.
    async fn listen_once(&self) -> Result<(), AccessError> {
        let connector = self.settings.server(&self.upstream).connector()?;
        let config = connector
            .config_with_secret(
                &self.secrets,
                &self.settings.secret,
                &self.settings.database,
                LISTENER_APPLICATION,
            )
            .await?;
        let (client, mut messages, _driver) = connector.connect_listening(&config).await?;
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        self.set_listening(true);
        // Notifications sent while no one listened are lost: check now.
        self.wake.notify_one();
        tracing::info!("listening for grant changes");
        while let Some(message) = messages.recv().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                tracing::debug!(grant = n.payload(), "grant changed");
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::Relaxed);
        self.listening_gauge.set(i64::from(on));
    }
}
