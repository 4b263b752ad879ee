//! The answer cache: a repeated question is answered from memory, and a change to the data
//! is visible at once (the database notifies; the cache forgets).

use crate::common;

use std::time::Duration;
use testkit::eventually;

use crate::common::spawn_app;

const DAY: &str = "2021-01-05";

async fn hits(app: &common::TestApp) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("dbgw_rates_api_cache_hits_total "))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_until_the_data_changes() {
    let app = spawn_app().await;
    let day = || async { app.rates(DAY, DAY, "CNGGZ", "EETLL").await[0].clone() };
    assert_eq!(day().await["count"], 3);

    // Once the change listener is up, repeating the question is a cache hit.
    eventually(
        "the answer is served from the cache",
        Duration::from_secs(10),
        async || {
            let before = hits(&app).await;
            assert_eq!(day().await["count"], 3);
            hits(&app).await > before
        },
    )
    .await;

    // A new price: the next answers include it, computed afresh.
    app.db
        .admin
        .batch_execute(&format!(
            "INSERT INTO prices (orig_code, dest_code, day, price) VALUES ('CNGGZ', 'EETLL', '{DAY}', 1000)"
        ))
        .await
        .unwrap();
    let (count, sum): (i64, i64) = {
        let r = app
            .db
            .admin
            .query_one(
                "SELECT count(*), sum(price)::bigint FROM prices \
                 WHERE orig_code = 'CNGGZ' AND dest_code = 'EETLL' AND day = $1::text::date",
                &[&DAY],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(count, 4);
    let now = eventually(
        "an answer with the change (no stale one outlives it)",
        Duration::from_secs(2),
        async || {
            let now = day().await;
            if now["count"] == 4 {
                Ok(now)
            } else {
                Err(now)
            }
        },
    )
    .await;
    assert_eq!(now["price"].as_f64().unwrap(), sum as f64 / count as f64);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_when_turned_off() {
    let app = common::spawn_app_with(|s| s.api.cache = false).await;
    for _ in 0..3 {
        assert_eq!(app.rates(DAY, DAY, "CNGGZ", "EETLL").await[0]["count"], 3);
    }
    assert_eq!(hits(&app).await, 0);
    app.stop().await;
}
