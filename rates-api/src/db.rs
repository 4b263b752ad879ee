//! The database side: the service's pool (`service::database::pool`, whose new connections
//! log in with the credentials currently in the secret store, so rotation needs no restart;
//! with alternating users the user name changes too, `rates_api` / `rates_api_clone`), the
//! one query the service runs, and the change notifications that clear the cache.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use secret_store::SecretStore;
use serde::Serialize;
use service::database::pool::{self as shared, ConnectError};
use tokio_postgres::types::Type;

use crate::settings::DatabaseSettings;

pub use service::database::pool::{reap_expired, Pool};

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

impl From<shared::PoolError> for DbError {
    fn from(e: shared::PoolError) -> Self {
        DbError::Unavailable(shared::unavailable(&e))
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
        .cached()
        .prepare_typed_cached(RATES_SQL, RATES_TYPES)
        .await?;
    let rows = conn.query(&statement, &[&from, &to, &orig, &dest]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbError::from)
}

/// A round trip through the pool, for readiness.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    shared::ping(pool).await.map_err(DbError::Unavailable)
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
                match manager.connector().connect_listening(&config).await {
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

/// The pool: read-only sessions (backing up the role's grants), the rates query prepared
/// on every new connection.
pub async fn pool(settings: &DatabaseSettings, store: SecretStore) -> anyhow::Result<Pool> {
    let manager = shared::Manager::new(settings, store, "rates-api")?
        .set("default_transaction_read_only=on")
        .prepare(RATES_SQL, RATES_TYPES);
    shared::pool(manager).await
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
