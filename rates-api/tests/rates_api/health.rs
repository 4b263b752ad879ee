//! Health checks, the root route, unknown paths and metrics.

use std::time::{Duration, Instant};
use testkit::eventually;

use crate::common::spawn_app;

#[tokio::test]
async fn readiness_follows_the_database_and_liveness_does_not() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/ready").await.0, 200);
    assert_eq!(app.get("/health/live").await.0, 200);
    // Put a connection in the pool, so the outage also has to evict it.
    app.rates("2021-01-05", "2021-01-05", "CNGGZ", "EETLL")
        .await;

    let cluster = app.db.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "readiness must answer quickly"
    );
    assert_eq!(app.get("/health/live").await.0, 200);
    let (status, body) = app
        .get("/rates?date_from=2021-01-05&date_to=2021-01-05&orig_code=CNGGZ&dest_code=EETLL")
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");

    let cluster = app.db.cluster.clone();
    tokio::task::spawn_blocking(move || cluster.restart())
        .await
        .unwrap()
        .unwrap();
    eventually(
        "ready again after the restart",
        Duration::from_secs(10),
        async || match app.get("/health/ready").await.0 {
            200 => Ok(()),
            status => Err(status),
        },
    )
    .await;
    let got = app
        .rates("2021-01-05", "2021-01-05", "CNGGZ", "EETLL")
        .await;
    assert_eq!(got[0]["count"], 3);
    app.stop().await;
}

#[tokio::test]
async fn root_unknown_paths_and_metrics() {
    let app = spawn_app().await;
    let (status, body) = app.get("/").await;
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"message": "Hello world!"}))
    );
    let (status, body) = app.get("/no/such/path").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string(), "{body}");

    app.rates("2021-01-05", "2021-01-05", "CNGGZ", "EETLL")
        .await;
    app.rates("2021-01-06", "2021-01-06", "CNGGZ", "EETLL")
        .await;
    assert_eq!(app.get("/rates?date_from=x").await.0, 400);

    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
            .to_string()
    };
    assert!(line(
        r#"dbgw_rates_api_http_requests_total{method="GET",route="/rates",status="200"}"#
    )
    .ends_with(" 2"));
    assert!(line(
        r#"dbgw_rates_api_http_requests_total{method="GET",route="/rates",status="400"}"#
    )
    .ends_with(" 1"));
    // Unknown paths are one series, whatever the path.
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(!text.contains("/no/such/path"));
    assert!(
        line(r#"dbgw_rates_api_http_request_duration_seconds_count{route="/rates"}"#)
            .ends_with(" 3")
    );
    assert!(
        text.contains("dbgw_rates_api_db_pool_connections "),
        "{text}"
    );
    app.stop().await;
}
