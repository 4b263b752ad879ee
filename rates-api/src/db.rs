//! The database side: a connection pool whose new connections log in with the credentials
//! currently in the secret store, and the one query the service runs.
//!
//! Password rotation works without a restart: a new connection reads the login from the store
//! (reusing it for `credentials_ttl`; the `aws` store caches its reads too), a refused login
//! rereads the secret once and tries again at once, and connections older than
//! `max_lifetime` are closed instead of reused, a few at a time as they come of age. Existing
//! sessions are not affected by a password change in PostgreSQL, so nothing breaks in
//! between. With alternating users the login's user name changes too (`rates_api`,
//! `rates_api_clone`): it is read from the secret with the password.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;
use secret_store::{DbCredentials, SecretStore};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::settings::DatabaseSettings;

pub type Pool = managed::Pool<PgManager>;

/// The rates query: prices per day for every origin and destination port the two codes stand
/// for, in one statement.
///
/// A code stands for the port with exactly that code. When no port has that code, it stands
/// for every port of the region with that slug and of its sub-regions at any depth (none if
/// there is no such region either). Counting and summing happen here; the mean is divided in
/// Rust (see [`Rate`]).
///
/// Shaped for speed on 2 cores (measured with pgbench, see docs/benchmarks.md):
/// - the `CASE` sub-plans are evaluated lazily, so for a port code the recursive region walk
///   never runs (1.8x the throughput of joining code sets built by CTEs);
/// - `prices` is read with `= ANY(array)` conditions, an index-only range scan of
///   `prices_orig_dest_day_idx (orig_code, dest_code, day) INCLUDE (price)` per
///   (origin, destination) pair, for custom and generic plans alike (a join against CTEs
///   made the planner hash-join a sequential scan of all prices: 20 ms instead of 0.3 ms).
pub const RATES_SQL: &str = "\
WITH RECURSIVE
    orig_regions(slug) AS (
        SELECT $3::text
        UNION
        SELECT r.slug FROM regions r JOIN orig_regions o ON r.parent_slug = o.slug
    ),
    dest_regions(slug) AS (
        SELECT $4::text
        UNION
        SELECT r.slug FROM regions r JOIN dest_regions d ON r.parent_slug = d.slug
    )
SELECT day, count(*) AS n, sum(price)::bigint AS total
FROM prices
WHERE orig_code = ANY (CASE WHEN EXISTS (SELECT FROM ports WHERE code = $3::text)
        THEN ARRAY[$3::text]
        ELSE ARRAY(SELECT p.code FROM ports p JOIN orig_regions o ON p.parent_slug = o.slug)
    END)
  AND dest_code = ANY (CASE WHEN EXISTS (SELECT FROM ports WHERE code = $4::text)
        THEN ARRAY[$4::text]
        ELSE ARRAY(SELECT p.code FROM ports p JOIN dest_regions d ON p.parent_slug = d.slug)
    END)
  AND day BETWEEN $1::date AND $2::date
GROUP BY day";

const RATES_TYPES: &[Type] = &[Type::DATE, Type::DATE, Type::TEXT, Type::TEXT];

/// Days with fewer prices than this get no average (too few to be meaningful).
pub const MIN_PRICES_FOR_AVERAGE: i64 = 3;

/// One day of the `/rates` answer. Field order is the JSON order of the old service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub count: Option<i64>,
    pub day: NaiveDate,
    pub price: Option<f64>,
}

impl Rate {
    /// A day from its price count and sum as PostgreSQL computed them (exact integers).
    ///
    /// Both are below 2^53 (at most a few million prices of a few thousand each), so they
    /// convert to `f64` exactly, and IEEE division rounds the exact quotient once: the
    /// result is the exact mean rounded to the nearest double, as the contract requires.
    pub fn from_totals(day: NaiveDate, count: i64, sum: i64) -> Rate {
        Rate {
            count: (count > 0).then_some(count),
            day,
            price: (count >= MIN_PRICES_FOR_AVERAGE).then(|| sum as f64 / count as f64),
        }
    }

    pub fn empty(day: NaiveDate) -> Rate {
        Rate {
            count: None,
            day,
            price: None,
        }
    }
}

/// Every day from `to` down to `from` (inclusive), filled from the per-day totals.
/// The caller has checked `from <= to` and the range length.
pub fn fill_days(from: NaiveDate, to: NaiveDate, totals: &[(NaiveDate, i64, i64)]) -> Vec<Rate> {
    let days = (to - from).num_days() as usize + 1;
    let mut by_offset: Vec<Option<(i64, i64)>> = vec![None; days];
    for &(day, count, sum) in totals {
        if let Some(slot) = usize::try_from((day - from).num_days())
            .ok()
            .and_then(|i| by_offset.get_mut(i))
        {
            *slot = Some((count, sum));
        }
    }
    (0..days)
        .rev()
        .map(|offset| {
            let day = from + chrono::Days::new(offset as u64);
            match by_offset[offset] {
                Some((count, sum)) => Rate::from_totals(day, count, sum),
                None => Rate::empty(day),
            }
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (database down, login refused, pool exhausted).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
}

impl From<managed::PoolError<ConnectError>> for DbError {
    fn from(e: managed::PoolError<ConnectError>) -> Self {
        use managed::PoolError;
        DbError::Unavailable(match e {
            PoolError::Timeout(kind) => format!("timed out getting a connection ({kind:?})"),
            PoolError::Backend(e) => e.to_string(),
            PoolError::Closed => "the pool is closed".into(),
            PoolError::NoRuntimeSpecified => "the pool has no runtime".into(),
            PoolError::PostCreateHook(e) => e.to_string(),
        })
    }
}

/// The per-day totals of the rates query.
pub async fn rates_totals(
    pool: &Pool,
    from: NaiveDate,
    to: NaiveDate,
    orig: &str,
    dest: &str,
) -> Result<Vec<(NaiveDate, i64, i64)>, DbError> {
    let conn = pool.get().await?;
    let statement = conn
        .client
        .prepare_typed_cached(RATES_SQL, RATES_TYPES)
        .await?;
    let rows = conn
        .client
        .query(&statement, &[&from, &to, &orig, &dest])
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbError::from)
}

/// A round trip through the pool, for readiness.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let conn = pool.get().await?;
    conn.client.simple_query("SELECT 1").await?;
    Ok(())
}

/// Why a new connection could not be opened. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the database login from the secret store: {0}")]
    Secret(#[from] secret_store::Error),
    #[error(transparent)]
    Connect(#[from] pg_connect::ConnectError),
    #[error("preparing the rates query: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// A pooled connection.
pub struct PgConn {
    /// Aborts the connection task when dropped; caches prepared statements.
    pub client: ClientWrapper,
    /// `max_lifetime` less up to a fifth, at random: connections opened together (at start,
    /// after an outage) are retired one by one, not all at once.
    lifetime: Duration,
}

fn jittered(max_lifetime: Duration) -> Duration {
    max_lifetime.mul_f64(1.0 - rand::random::<f64>() * 0.2)
}

/// Opens connections with the login currently in the secret store.
pub struct PgManager {
    settings: DatabaseSettings,
    connector: pg_connect::Connector,
    store: SecretStore,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<DbCredentials>)>>,
}

impl PgManager {
    /// Fails when the CA bundle cannot be read: that is configuration, not the database.
    pub fn new(settings: DatabaseSettings, store: SecretStore) -> anyhow::Result<Self> {
        let connector = settings.target().connector()?;
        Ok(PgManager {
            settings,
            connector,
            store,
            cached: tokio::sync::Mutex::new(None),
        })
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

    fn config(&self, creds: &DbCredentials) -> tokio_postgres::Config {
        let s = &self.settings;
        let mut config = self.connector.config(&s.dbname, creds, "rates-api");
        // Sent in the startup packet: no extra round trip per connection. Read-only backs
        // up the role's grants.
        config.options(format!(
            "-c statement_timeout={} -c default_transaction_read_only=on",
            s.statement_timeout_ms
        ));
        config
    }
}

impl managed::Manager for PgManager {
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

/// A login refused for its credentials: wrong password (PostgreSQL), or refused by the
/// proxy (which reports the database's refusal as `28000`).
fn refused_login(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    )
}

impl PgManager {
    /// One connection attempt with the current login.
    async fn open(&self) -> Result<PgConn, ConnectError> {
        let creds = self.credentials().await?;
        let config = self.config(&creds);
        drop(creds);
        let (client, task) = self.connector.connect(&config).await?;
        let client = ClientWrapper::new(client, task);
        // Prepared once here, so requests only execute it.
        client.prepare_typed_cached(RATES_SQL, RATES_TYPES).await?;
        tracing::debug!("opened a database connection");
        Ok(PgConn {
            client,
            lifetime: jittered(self.settings.max_lifetime()),
        })
    }
}

/// Keeps a connection listening for `rates_changed` and clears `cache` at each
/// notification. Reconnects (with back-off) when the connection ends; meanwhile the cache
/// is off, so no answer outlives a change it could not hear about.
pub async fn watch_changes(pool: Pool, cache: Arc<crate::cache::Cache>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let manager = pool.manager();
        let ended = match manager.credentials().await {
            Err(e) => Err(ConnectError::from(e)),
            Ok(creds) => {
                let mut config = manager.config(&creds);
                config.application_name("rates-api-changes");
                match manager.connector.connect_listening(&config).await {
                    Ok((client, messages, _driver)) => listen(client, messages, &cache).await,
                    Err(e) => Err(e.into()),
                }
            }
        };
        cache.set_live(false);
        match ended {
            Ok(()) => {
                tracing::warn!("change notifications stopped; answer cache off until reconnected")
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for changes; answer cache off"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen(
    client: tokio_postgres::Client,
    mut messages: pg_connect::Messages,
    cache: &crate::cache::Cache,
) -> Result<(), ConnectError> {
    let listen = client.batch_execute("LISTEN rates_changed");
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                done?;
                listening = true;
                cache.set_live(true);
                tracing::info!("listening for rates changes; answer cache on");
            }
            message = messages.recv() => match message {
                Some(tokio_postgres::AsyncMessage::Notification(n)) => {
                    tracing::debug!(table = n.payload(), "rates data changed");
                    cache.invalidate();
                }
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// The pool. The secret is read once here, so a missing or malformed secret stops the
/// start; no connection is opened, so the service starts (and reports not ready) while the
/// database is down.
pub async fn pool(settings: &DatabaseSettings, store: SecretStore) -> anyhow::Result<Pool> {
    let manager = PgManager::new(settings.clone(), store)?;
    manager.credentials().await?;
    let pool = managed::Pool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(settings.connect_timeout()))
        .create_timeout(Some(settings.connect_timeout()))
        .recycle_timeout(Some(Duration::from_secs(1)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?;
    Ok(pool)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn counts_below_three_have_no_price_and_zero_is_null() {
        let day = d("2021-01-05");
        assert_eq!(Rate::from_totals(day, 0, 0), Rate::empty(day));
        assert_eq!(
            Rate::from_totals(day, 2, 2000),
            Rate {
                count: Some(2),
                day,
                price: None
            }
        );
        assert_eq!(Rate::from_totals(day, 3, 3462).price, Some(1154.0));
        assert_eq!(
            Rate::from_totals(day, 3, 3463).price,
            Some(1154.3333333333333)
        );
    }

    #[test]
    fn every_day_newest_first_including_empty_ones() {
        let rates = fill_days(
            d("2021-01-01"),
            d("2021-01-04"),
            &[(d("2021-01-02"), 3, 30), (d("2021-01-04"), 1, 7)],
        );
        let days: Vec<_> = rates.iter().map(|r| r.day.to_string()).collect();
        assert_eq!(
            days,
            ["2021-01-04", "2021-01-03", "2021-01-02", "2021-01-01"]
        );
        assert_eq!(rates[0].count, Some(1));
        assert_eq!(rates[0].price, None);
        assert_eq!(rates[1], Rate::empty(d("2021-01-03")));
        assert_eq!(rates[2].price, Some(10.0));
        assert_eq!(fill_days(d("2021-01-01"), d("2021-01-01"), &[]).len(), 1);
    }
}
