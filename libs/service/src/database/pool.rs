//! The pool of a service's database connections, each logging in with the login currently in
//! the secret store.
//!
//! Password rotation works without a restart: a new connection reads the login from the store
//! (reusing it for `credentials_ttl`; the `aws` store caches its reads too), a refused login
//! rereads the secret once and tries again at once, and connections older than
//! `max_lifetime` are closed instead of reused ([`reap_expired`] retires idle ones, a few at
//! a time as they come of age). Existing sessions are not affected by a password change in
//! PostgreSQL, so nothing breaks in between. With alternating users the login's user name
//! changes too: it is read from the secret with the password.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;
use secret_store::{DbCredentials, SecretStore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::DatabaseSettings;

pub type Pool = managed::Pool<Manager>;
pub type Conn = managed::Object<Manager>;
pub type PoolError = managed::PoolError<ConnectError>;

/// Why a new connection could not be opened. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the database login from the secret store: {0}")]
    Secret(#[from] secret_store::Error),
    #[error(transparent)]
    Connect(#[from] pg_connect::ConnectError),
    #[error("preparing a statement: {0}")]
    Prepare(#[from] tokio_postgres::Error),
}

/// A pooled connection: a `tokio_postgres::Client` (through `Deref`; `&**conn` for a
/// function that takes `&impl GenericClient`) that aborts its connection task when dropped.
pub struct PgConn {
    client: ClientWrapper,
    /// `max_lifetime` less up to a fifth, at random: connections opened together (at start,
    /// after an outage) are retired one by one, not all at once.
    lifetime: Duration,
}

impl Deref for PgConn {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }
}

impl PgConn {
    /// The client with its cache of prepared statements (`prepare_typed_cached`).
    pub fn cached(&self) -> &ClientWrapper {
        &self.client
    }
}

fn jittered(max_lifetime: Duration) -> Duration {
    max_lifetime.mul_f64(1.0 - rand::random::<f64>() * 0.2)
}

/// Opens connections as the login currently in the secret store.
pub struct Manager {
    settings: DatabaseSettings,
    connector: pg_connect::Connector,
    store: SecretStore,
    application: &'static str,
    /// Sent in the startup packet with the statement timeout (no extra round trip).
    options: String,
    /// Prepared on every new connection, so requests only execute them.
    prepare: Vec<(&'static str, &'static [Type])>,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<DbCredentials>)>>,
}

impl Manager {
    /// Fails when the CA bundle cannot be read: that is configuration, not the database.
    pub fn new(
        settings: &DatabaseSettings,
        store: SecretStore,
        application: &'static str,
    ) -> anyhow::Result<Self> {
        let connector = settings.target().connector()?;
        Ok(Manager {
            settings: settings.clone(),
            connector,
            store,
            application,
            options: format!("-c statement_timeout={}", settings.statement_timeout_ms),
            prepare: Vec::new(),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// Adds a server setting sent when connecting, e.g. `default_transaction_read_only=on`.
    pub fn set(mut self, setting: &str) -> Self {
        self.options.push_str(" -c ");
        self.options.push_str(setting);
        self
    }

    /// Prepares `sql` on every new connection.
    pub fn prepare(mut self, sql: &'static str, types: &'static [Type]) -> Self {
        self.prepare.push((sql, types));
        self
    }

    /// The login, from the cache while it is fresh, else from the store. The lock makes
    /// concurrent connection attempts share one read of the store.
    pub async fn credentials(&self) -> Result<Arc<DbCredentials>, secret_store::Error> {
        let mut cached = self.cached.lock().await;
        if let Some((read_at, creds)) = cached.as_ref() {
            if read_at.elapsed() < self.settings.credentials_ttl() {
                return Ok(creds.clone());
            }
        }
        let creds = Arc::new(self.store.db_credentials(&self.settings.secret).await?);
        *cached = Some((Instant::now(), creds.clone()));
        Ok(creds)
    }

    /// Drops the cached login here and in the store, after a refused login.
    async fn forget_credentials(&self) {
        *self.cached.lock().await = None;
        self.store.refresh(&self.settings.secret);
    }

    /// tokio-postgres settings for `creds`, with this pool's options.
    pub fn config(&self, creds: &DbCredentials) -> tokio_postgres::Config {
        let mut config = self
            .connector
            .config(&self.settings.dbname, creds, self.application);
        config.options(&self.options);
        config
    }

    pub fn connector(&self) -> &pg_connect::Connector {
        &self.connector
    }

    /// One connection outside the pool (a command that runs once), as the login in the
    /// secret store and with this pool's settings.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ConnectError> {
        let (client, _driver) = self.login().await?;
        Ok(client)
    }

    async fn login(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), ConnectError> {
        let creds = self.credentials().await?;
        let config = self.config(&creds);
        drop(creds);
        Ok(self.connector.connect(&config).await?)
    }

    /// One connection attempt with the current login.
    async fn open(&self) -> Result<PgConn, ConnectError> {
        let (client, task) = self.login().await?;
        let client = ClientWrapper::new(client, task);
        for (sql, types) in &self.prepare {
            client.prepare_typed_cached(sql, types).await?;
        }
        tracing::debug!("opened a database connection");
        Ok(PgConn {
            client,
            lifetime: jittered(self.settings.max_lifetime()),
        })
    }
}

/// A login refused for its credentials: wrong password (PostgreSQL), or refused by the
/// proxy (which reports the database's refusal as `28000`).
fn refused_login(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    )
}

impl managed::Manager for Manager {
    type Type = PgConn;
    type Error = ConnectError;

    async fn create(&self) -> Result<PgConn, ConnectError> {
        // Boxed: the connect future is deep, and twice in one state machine it overflows
        // the compiler's layout query limit.
        match Box::pin(self.open()).await {
            // The store may hold a newer login than the one we used: read it again, once.
            Err(ConnectError::Connect(e)) if e.postgres().is_some_and(refused_login) => {
                tracing::info!("database login refused; rereading the secret");
                self.forget_credentials().await;
                Box::pin(self.open()).await
            }
            other => other,
        }
    }

    async fn recycle(&self, conn: &mut PgConn, metrics: &Metrics) -> RecycleResult<ConnectError> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        if metrics.age() >= conn.lifetime {
            return Err(RecycleError::message("connection reached its max lifetime"));
        }
        Ok(())
    }
}

/// The pool. The secret is read once here, so a missing or malformed secret stops the
/// start; no connection is opened, so the service starts (and reports not ready) while the
/// database is down.
pub async fn pool(manager: Manager) -> anyhow::Result<Pool> {
    manager.credentials().await?;
    let timeout = Some(manager.settings.connect_timeout());
    let size = manager.settings.pool_size;
    Ok(managed::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(Some(Duration::from_secs(1)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?)
}

/// Closes idle connections past their lifetime, so they do not wait for the next request.
/// It looks often (a twentieth of the lifetime, 0.1 to 10 s): with jittered lifetimes, few
/// connections are retired at once, so few requests wait for a new login at the same time.
pub async fn reap_expired(pool: Pool, max_lifetime: Duration) {
    let every = (max_lifetime / 20).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        pool.retain(|conn, metrics| metrics.age() < conn.lifetime);
    }
}

/// A round trip through the pool, for readiness; the error says why in a line.
pub async fn ping(pool: &Pool) -> Result<(), String> {
    let conn = pool.get().await.map_err(|e| unavailable(&e))?;
    conn.simple_query("SELECT 1")
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Why no connection could be had (database down, login refused, pool exhausted).
pub fn unavailable(e: &PoolError) -> String {
    match e {
        PoolError::Timeout(kind) => format!("timed out getting a connection ({kind:?})"),
        PoolError::Backend(e) => e.to_string(),
        PoolError::Closed => "the pool is closed".into(),
        PoolError::NoRuntimeSpecified => "the pool has no runtime".into(),
        PoolError::PostCreateHook(e) => e.to_string(),
    }
}
