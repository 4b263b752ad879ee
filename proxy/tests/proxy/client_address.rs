//! Behind a load balancer that does not preserve client addresses (an NLB with IP targets),
//! the proxy learns each client's address from a PROXY protocol v2 header: HAProxy sends it
//! here, from 127.0.0.2, and clients come from other loopback addresses. The audit names the
//! client, the start-up limit counts per client, and nobody else can claim an address.

use std::time::Duration;
use testkit::eventually;

use crate::common::balancer::Balancer;
use crate::common::wire::exchange;
use crate::common::{self, query_msg, read_records, RawClient, Stack};
use proxy::settings::Plaintext;
use tokio::io::AsyncWriteExt;

const BALANCER: &str = "127.0.0.2";

fn clients_of(records: &[serde_json::Value], application: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["type"] == "connect" && r["startup"]["application_name"] == application)
        .map(|r| r["client"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_proxy_protocol_balancer_keep_their_own_address() {
    let stack = Stack::with(common::Options {
        plaintext: Plaintext::Loopback,
        ..Default::default()
    })
    .await;
    let replica = stack
        .replica(|s| {
            s.proxy_protocol.from = vec![format!("{BALANCER}/32").parse().unwrap()];
            s.limits.max_handshakes_per_address = 2;
        })
        .await;
    let balancer = Balancer::start_proxy_v2(&[replica.addr], BALANCER);

    // A session through the balancer is audited with the client's address.
    let c = RawClient::connect_from(balancer.addr, "127.0.0.3").await;
    let mut c = RawClient::login_on(c, &stack.app, "behind-balancer").await;
    exchange(&mut c, &[query_msg("SELECT 1")], 1, &[], &["SELECT 1"]).await;

    // Start-ups are limited per client, not per balancer: two idle connections from
    // 127.0.0.4 fill its slots; 127.0.0.5 still logs in.
    let _idle: Vec<RawClient> = vec![
        RawClient::connect_from(balancer.addr, "127.0.0.4").await,
        RawClient::connect_from(balancer.addr, "127.0.0.4").await,
    ];
    // The balancer connects to the proxy and sends their headers on its own time: wait
    // until the proxy holds both slots, then a third start-up from there is refused.
    let idle_address = "127.0.0.4".parse().unwrap();
    eventually(
        "the balancer brings both idle connections to the proxy",
        Duration::from_secs(20),
        async || match replica.ctx.handshakes.starting(idle_address) {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} starting")),
        },
    )
    .await;
    let mut third = RawClient::connect_from(balancer.addr, "127.0.0.4").await;
    match third.recv().await {
        Some((b'E', body)) => assert_eq!(common::sqlstate(&body), "53300"),
        other => panic!("127.0.0.4 was not limited: {other:?}"),
    }
    let other = RawClient::connect_from(balancer.addr, "127.0.0.5").await;
    let mut other = RawClient::login_on(other, &stack.app, "another-client").await;
    exchange(&mut other, &[query_msg("SELECT 2")], 1, &[], &["SELECT 1"]).await;

    // Straight to the proxy from elsewhere, a header claiming another address is refused.
    let mut forged = RawClient::connect(replica.addr).await;
    let mut header = ppp::v2::PROTOCOL_PREFIX.to_vec();
    header.extend([
        0x21, 0x11, 0, 12, 10, 9, 9, 9, 127, 0, 0, 1, 0x30, 0x39, 0x19, 0x01,
    ]);
    forged.stream.write_all(&header).await.unwrap();
    assert!(
        forged.recv().await.is_none(),
        "the forged header was accepted"
    );
    // From the balancer's address, a connection without a header is refused too.
    let mut bare = RawClient::connect_from(replica.addr, BALANCER).await;
    let mut startup = bytes::BytesMut::new();
    proxy::protocol::startup::startup_message(
        &mut startup,
        &[("user", stack.app.username.as_str()), ("database", "rates")],
    );
    bare.stream.write_all(&startup).await.unwrap();
    assert!(bare.recv().await.is_none(), "a header was not required");

    drop((c, other));
    replica.ctx.audit.flush().unwrap();
    let records = read_records(&replica.audit_dir());
    let behind = clients_of(&records, "behind-balancer");
    assert_eq!(behind.len(), 1, "{records:#?}");
    assert!(behind[0].starts_with("127.0.0.3:"), "{behind:?}");
    assert!(clients_of(&records, "another-client")[0].starts_with("127.0.0.5:"));
    assert!(
        records.iter().all(|r| !r.to_string().contains("10.9.9.9")),
        "a forged address reached the audit"
    );
    replica.stop().await;
    stack.stop().await;
}
