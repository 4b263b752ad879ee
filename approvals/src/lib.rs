//! The approvals app: people request access to a database, data-security approvers decide,
//! and the app makes and removes the person's database role (see `docs/approvals.md`).
//!
//! Reading order: [`settings`] → [`status`] (a request's states and the moves between them)
//! → [`workflow`] (the rules) → [`provision`] (making and ending access on the server) →
//! [`extension`] (a later end for active access) → [`scheduler`] (start, expiry, retries) → [`web`] (pages) and [`api`] (JSON), which share
//! [`body`] (reading bodies) and [`export`] (the history as JSON lines) → [`oidc`] and
//! [`session`] (sign-in) → [`model`] (tables, events) → [`webhook`], [`metrics`],
//! [`health`] (readiness), [`db`], [`error`]; [`history`] verifies the event chain. [`scim`] is
//! the identity provider's provisioning endpoint; [`deprovision`] ends a deactivated person's
//! access. The
//! `main` skeleton, health routes, request middleware, `[control]`/`[target]` settings and
//! the pools come from the workspace's `service` crate, shared with rates-api.
//!
//! [`Application::build`] checks the configuration and the app's database login, binds the
//! listener and returns; tests start the real app on port 0 and read [`Application::port`].

pub mod activity;
pub mod api;
pub mod body;
pub mod cli_handoff;
pub mod db;
pub mod deprovision;
pub mod error;
pub mod export;
pub mod extension;
pub mod health;
pub mod history;
mod login_check;
pub mod metrics;
pub mod model;
pub mod oidc;
pub mod provision;
pub mod routes;
pub mod scheduler;
pub mod scim;
pub mod session;
pub mod settings;
pub mod status;
pub mod web;
pub mod webhook;
pub mod workflow;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use secret_store::SecretStore;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

/// Everything a request handler or the scheduler needs; cheap to clone.
#[derive(Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub control: db::Pool,
    pub target: db::Pool,
    pub secrets: SecretStore,
    pub oidc: Arc<oidc::Oidc>,
    pub sessions: session::Sessions,
    pub metrics: Arc<metrics::Metrics>,
    /// The identity provider's SCIM bearer token; `None`: the SCIM endpoint is off.
    pub scim: Option<Arc<scim::auth::Token>>,
}

/// The app, bound and ready to serve.
pub struct Application {
    listener: tokio::net::TcpListener,
    port: u16,
    app: App,
}

impl Application {
    /// Reads the secrets, checks the database login's rights (refusing one that could exceed
    /// its job, see `login_check`), binds
    /// `settings.listen`.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        tls_config::install_provider();
        settings.validate()?;
        let secrets = SecretStore::from_settings(&settings.secrets);
        let client_secret = read_client_secret(&secrets, &settings.oidc.secret).await?;
        let scim = if settings.scim.enabled {
            Some(Arc::new(
                scim::auth::Token::read(&secrets, &settings.scim.secret).await?,
            ))
        } else {
            None
        };
        let control = db::pool(&settings.control, secrets.clone(), "dbgw-approvals").await?;
        let target = db::pool(&settings.target, secrets.clone(), "dbgw-approvals").await?;
        login_check::check(&settings, &target).await?;
        if settings.people.login == grants::PeopleLogin::RdsIam {
            let switched = provision::switch_to_iam(&control, &target, &secrets).await?;
            if switched > 0 {
                tracing::info!(switched, "people's roles switched to RDS IAM logins");
            }
        }
        let sessions = session::Sessions::new(
            control.clone(),
            settings.sessions.clone(),
            settings.secure_cookies(),
            client_secret.expose_secret().as_bytes(),
        );
        let oidc = Arc::new(oidc::Oidc::new(
            settings.oidc.clone(),
            &settings.public_url,
            client_secret,
        )?);
        if !oidc.ready().await {
            tracing::warn!(
                "the identity provider cannot be reached yet; sign-in works once it can"
            );
        }
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        Ok(Application {
            listener,
            port,
            app: App {
                settings: Arc::new(settings),
                control,
                target,
                secrets,
                oidc,
                sessions,
                metrics: Arc::new(metrics::Metrics::default()),
                scim,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests drive workflows and the scheduler through it).
    pub fn app(&self) -> App {
        self.app.clone()
    }

    /// Serves and runs the scheduler until `shutdown` resolves; then stops accepting
    /// connections, lets requests in flight finish (at most `shutdown_grace_secs`), stops
    /// the scheduler after its current pass, and returns.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let scheduler = tokio::spawn(scheduler::run(self.app.clone(), stop.clone()));
        let router = routes::router(self.app.clone());
        tracing::info!(port = self.port, "approvals listening");
        let grace = Duration::from_secs(self.app.settings.shutdown_grace_secs);
        let served = service::serve::serve(self.listener, router, shutdown, grace).await;
        stop.cancel();
        let _ = scheduler.await;
        tracing::info!("approvals stopped");
        Ok(served?)
    }
}

/// The OpenID client secret, from `{"client_secret": "..."}` in the secret store.
async fn read_client_secret(store: &SecretStore, id: &str) -> anyhow::Result<SecretString> {
    let raw = store
        .get(id)
        .await
        .with_context(|| "reading the OpenID client secret")?;
    #[derive(serde::Deserialize)]
    struct ClientSecret {
        client_secret: SecretString,
    }
    let parsed: ClientSecret = serde_json::from_str(raw.expose_secret())
        .map_err(|_| anyhow::anyhow!("secret `{id}` must be {{\"client_secret\": \"...\"}}"))?;
    Ok(parsed.client_secret)
}
