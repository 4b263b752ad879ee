//! The documentation keeps up with the code: every configuration key, metric, metric label
//! and label value the proxy has is in docs/proxy.md.

use proxy::metrics::{CancelRoute, Closed, ConnectionResult, ErrorKind, Metrics};
use proxy::settings::Settings;
use testkit::{assert_deployed_keys, assert_documented, config_keys, metric_names};

const DOC: &str = "docs/proxy.md";

#[test]
fn every_configuration_key_is_documented() {
    let keys = config_keys(&Settings::default(), &["services"]);
    assert!(keys.contains(&"upstream.tls".to_string()), "{keys:?}");
    assert_documented(DOC, "configuration keys", &keys);
}

#[test]
fn the_deployment_sets_only_configuration_keys() {
    let keys = config_keys(&Settings::default(), &["services"]);
    assert_deployed_keys("PROXY_", &keys, &["services"]);
}

#[test]
fn every_metric_and_label_is_documented() {
    let metrics = Metrics::new();
    for result in ConnectionResult::ALL {
        metrics.connection(result);
    }
    for kind in ErrorKind::ALL {
        metrics.error(kind);
    }
    for route in CancelRoute::ALL {
        metrics.cancel(route);
    }
    for reason in Closed::ALL {
        metrics.closed(reason);
    }
    let (names, labels) = metric_names(&metrics.render());
    assert!(
        names.contains(&"dbgw_proxy_connections_total".to_string()),
        "{names:?}"
    );
    assert_documented(DOC, "metrics", &names);
    assert_documented(DOC, "metric labels", &labels);
    let values: Vec<String> = ConnectionResult::ALL
        .iter()
        .map(|r| r.label())
        .chain(ErrorKind::ALL.iter().map(|k| k.label()))
        .chain(CancelRoute::ALL.iter().map(|r| r.label()))
        .chain(Closed::ALL.iter().map(|r| r.label()))
        .map(String::from)
        .collect();
    assert_documented(DOC, "metric label values", &values);
}
