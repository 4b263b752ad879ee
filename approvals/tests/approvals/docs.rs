//! The documentation keeps up with the code: every configuration key, metric and metric
//! label of the approvals app is in docs/approvals.md.

use approvals::Settings;
use testkit::{assert_deployed_keys, assert_documented, config_keys, metric_names};

use crate::common::Stack;

const DOC: &str = "docs/approvals.md";

#[test]
fn every_configuration_key_is_documented() {
    let keys = config_keys(&Settings::default(), &[]);
    assert!(keys.contains(&"control.tls".to_string()), "{keys:?}");
    assert_documented(DOC, "configuration keys", &keys);
}

#[test]
fn the_deployment_sets_only_configuration_keys() {
    let keys = config_keys(&Settings::default(), &[]);
    assert_deployed_keys("APPROVALS_", &keys, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_is_documented() {
    let stack = Stack::start().await;
    let answer = stack.browser().get("/metrics").await;
    assert_eq!(answer.status, 200);
    let (names, labels) = metric_names(&answer.body);
    assert!(
        names.contains(&"dbgw_approvals_decisions_total".to_string()),
        "{names:?}"
    );
    assert_documented(DOC, "metrics", &names);
    assert_documented(DOC, "metric labels", &labels);
    stack.stop().await;
}
