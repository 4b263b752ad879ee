//! Database connections: the app keeps two pools of `service::database::pool` (the control
//! plane and the target server), whose connections log in with the login currently in the
//! secret store, so a rotated password is picked up without a restart.

use secret_store::SecretStore;
pub use service::database::pool::{Conn, ConnectError, Pool, PoolError};

use crate::settings::DatabaseSettings;

/// Connections as the login in `settings.secret`; a statement and a lock wait are both
/// limited by `statement_timeout_ms`.
fn manager(
    settings: &DatabaseSettings,
    store: SecretStore,
    application: &'static str,
) -> anyhow::Result<service::database::pool::Manager> {
    Ok(
        service::database::pool::Manager::new(settings, store, application)?
            .set(&format!("lock_timeout={}", settings.statement_timeout_ms)),
    )
}

/// One connection outside the pools (the `approvals events` commands).
pub async fn connect(
    settings: &DatabaseSettings,
    store: SecretStore,
    application: &'static str,
) -> anyhow::Result<tokio_postgres::Client> {
    Ok(manager(settings, store, application)?.connect().await?)
}

/// A pool; the login is read once now (a missing secret stops the start), but no
/// connection is opened until one is needed.
pub async fn pool(
    settings: &DatabaseSettings,
    store: SecretStore,
    application: &'static str,
) -> anyhow::Result<Pool> {
    service::database::pool::pool(manager(settings, store, application)?).await
}
