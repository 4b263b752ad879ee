//! Database connections: one `connect` function (the login is read from the secret store
//! for every new connection, so a rotated password is picked up) and a small pool over it.
//! The app keeps two pools: the control plane and the target server.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use secret_store::SecretStore;
use tokio_postgres::Client;

use crate::settings::DatabaseSettings;

pub type Pool = managed::Pool<Manager>;
pub type Conn = managed::Object<Manager>;

/// Why a connection could not be opened. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the database login from the secret store: {0}")]
    Secret(#[from] secret_store::Error),
    #[error(transparent)]
    Connect(#[from] pg_connect::ConnectError),
}

/// Opens one connection as the login in `settings.secret`; a spawned task drives it.
pub async fn connect(
    settings: &DatabaseSettings,
    store: &SecretStore,
    application: &str,
) -> Result<Client, ConnectError> {
    let creds = store.db_credentials(&settings.secret).await?;
    let connector = settings.target().connector()?;
    let mut config = connector.config(&settings.dbname, &creds, application);
    config.options(format!(
        "-c statement_timeout={}s -c lock_timeout={}s",
        settings.statement_timeout_secs, settings.statement_timeout_secs
    ));
    let (client, _driver) = connector.connect(&config).await?;
    Ok(client)
}

/// Opens pooled connections with [`connect`].
pub struct Manager {
    settings: DatabaseSettings,
    store: SecretStore,
    application: &'static str,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = ConnectError;

    async fn create(&self) -> Result<Client, ConnectError> {
        connect(&self.settings, &self.store, self.application).await
    }

    async fn recycle(&self, client: &mut Client, _: &Metrics) -> RecycleResult<ConnectError> {
        if client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// A pool; no connection is opened until one is needed.
pub fn pool(
    settings: &DatabaseSettings,
    store: SecretStore,
    application: &'static str,
) -> anyhow::Result<Pool> {
    let timeout = Some(Duration::from_secs(settings.connect_timeout_secs));
    Ok(managed::Pool::builder(Manager {
        settings: settings.clone(),
        store,
        application,
    })
    .max_size(settings.pool_size)
    .wait_timeout(timeout)
    .create_timeout(timeout)
    .recycle_timeout(Some(Duration::from_secs(1)))
    .runtime(deadpool::Runtime::Tokio1)
    .build()?)
}
