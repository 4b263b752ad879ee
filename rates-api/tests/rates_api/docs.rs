//! The documentation keeps up with the code: every configuration key, metric and metric
//! label of rates-api is in docs/rates-api.md.

use rates_api::Settings;
use testkit::{assert_deployed_keys, assert_documented, config_keys, metric_names};

use crate::common::spawn_app;

const DOC: &str = "docs/rates-api.md";

#[test]
fn every_configuration_key_is_documented() {
    let keys = config_keys(&Settings::default(), &[]);
    assert!(keys.contains(&"database.tls".to_string()), "{keys:?}");
    assert_documented(DOC, "configuration keys", &keys);
}

#[test]
fn the_deployment_sets_only_configuration_keys() {
    let keys = config_keys(&Settings::default(), &[]);
    assert_deployed_keys("RATES_API_", &keys, &[]);
}

#[tokio::test]
async fn every_metric_and_label_is_documented() {
    let app = spawn_app().await;
    app.rates("2016-01-01", "2016-01-02", "CNSGH", "NOOSL")
        .await;
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, 200);
    let (names, labels) = metric_names(body.as_str().unwrap());
    assert!(
        names.contains(&"dbgw_rates_api_http_requests_total".to_string()),
        "{names:?}"
    );
    assert_documented(DOC, "metrics", &names);
    assert_documented(DOC, "metric labels", &labels);
    app.stop().await;
}
