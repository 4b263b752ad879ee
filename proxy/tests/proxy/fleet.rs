//! The proxy as a fleet: three replicas behind HAProxy (round robin).
//! - a CancelRequest that the balancer gives to another replica cancels the query anyway
//!   (forwarded over the authenticated peer channel); forged, stale and replayed keys or
//!   peer messages cancel nothing;
//! - a revocation closes sessions on every replica in under a second (pushed by NOTIFY),
//!   and polling closes them when notifications are cut;
//! - each replica keeps its own chain; `proxy audit verify` checks them together,
//!   `proxy audit merge` reads them as one stream, and `proxy audit crosscheck` finds
//!   them in agreement with the database's pgaudit log.
//!
//! `make bench-revocation` runs the revocation test and prints its latency table.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use testkit::eventually;

use crate::common::balancer::Balancer;
use crate::common::{audit_cli, Options, RawClient, Replica, Stack};
use dev_idp::DevIdp;
use proxy::fleet::FleetSettings;
use proxy::settings::Settings;
use serde_json::Value;

const REPLICAS: usize = 3;

/// The stack's proxy (replica 0) and two more, each knowing the others' peer ports, behind
/// a balancer. `configure` applies to every replica.
struct Fleet {
    stack: Stack,
    others: Vec<Replica>,
    balancer: Balancer,
}

impl Fleet {
    async fn start(oidc: Option<&DevIdp>, pgaudit: bool, configure: fn(&mut Settings)) -> Fleet {
        // Peer ports are known before anything binds them: each replica lists the others.
        let ports: Vec<u16> = (0..REPLICAS)
            .map(|_| dbgw_db::cluster::free_port().unwrap())
            .collect();
        let first = ports.clone();
        let stack = Stack::with(Options {
            oidc_issuer: oidc.map(|i| i.issuer().to_string()),
            pgaudit,
            configure: Box::new(move |s| {
                member(s, 0, &first);
                configure(s);
            }),
            ..Options::default()
        })
        .await;
        let mut others = Vec::new();
        for i in 1..REPLICAS {
            others.push(
                stack
                    .replica(|s| {
                        member(s, i, &ports);
                        configure(s);
                    })
                    .await,
            );
        }
        let mut backends = vec![stack.addr];
        backends.extend(others.iter().map(|r| r.addr));
        let balancer = Balancer::start(&backends);
        Fleet {
            stack,
            others,
            balancer,
        }
    }

    fn admins(&self) -> Vec<SocketAddr> {
        let mut out = vec![self.stack.admin];
        out.extend(self.others.iter().map(|r| r.admin));
        out
    }

    fn audit_dirs(&self) -> Vec<std::path::PathBuf> {
        let mut out = vec![self.stack.audit_dir()];
        out.extend(self.others.iter().map(|r| r.audit_dir()));
        out
    }

    /// Waits until no replica has a session (each writes its last record as it goes),
    /// then writes every buffered record.
    async fn flush(&self) {
        let open = || {
            self.stack.ctx.sessions.count()
                + self
                    .others
                    .iter()
                    .map(|r| r.ctx.sessions.count())
                    .sum::<usize>()
        };
        eventually(
            "every session ends",
            Duration::from_secs(10),
            async || match open() {
                0 => Ok(()),
                n => Err(format!("{n} open")),
            },
        )
        .await;
        self.stack.flush();
        for r in &self.others {
            r.ctx.audit.flush().unwrap();
        }
    }

    /// `dbgw_proxy_<name>{<label>}` on each replica (0 when absent).
    async fn metric(&self, name: &str, label: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for admin in self.admins() {
            let text = reqwest::get(format!("http://{admin}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let value = text
                .lines()
                .find(|l| l.starts_with(&format!("dbgw_proxy_{name}")) && l.contains(label))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<f64>().unwrap() as u64)
                .unwrap_or(0);
            out.push(value);
        }
        out
    }

    /// Waits (15 s at most) until `dbgw_proxy_grants_listening` is `value` on every replica.
    async fn wait_listening(&self, value: u64, why: &str) {
        eventually(why, Duration::from_secs(15), async || {
            let seen = self.metric("grants_listening", "").await;
            if seen == vec![value; REPLICAS] {
                Ok(())
            } else {
                Err(seen)
            }
        })
        .await;
    }

    async fn stop(self) {
        drop(self.balancer);
        for r in self.others {
            r.stop().await;
        }
        self.stack.stop().await;
    }
}

/// Makes `s` replica `i` of the fleet whose peer ports are `ports`.
fn member(s: &mut Settings, i: usize, ports: &[u16]) {
    s.fleet = FleetSettings {
        replica: format!("proxy-{i}"),
        index: Some(i as u8),
        listen: format!("127.0.0.1:{}", ports[i]),
        peers: ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect(),
        ..s.fleet.clone()
    };
}

fn loopback(s: &mut Settings) {
    s.tls.plaintext = proxy::settings::Plaintext::Loopback;
}

/// A CancelRequest for (`pid`, `secret`) on a new connection to `addr`.
async fn send_cancel(addr: SocketAddr, pid: i32, secret: [u8; 4]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut msg = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    msg.extend_from_slice(&pid.to_be_bytes());
    msg.extend_from_slice(&secret);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&msg).await.unwrap();
    // The proxy closes without answering, as PostgreSQL does.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
}

/// Starts `SELECT pg_sleep(secs)` on `c`; waits until the database runs it.
async fn start_sleep(stack: &Stack, c: &mut RawClient, secs: u32) {
    let sql = format!("SELECT pg_sleep({secs}) -- {}", rand::random::<u32>());
    c.send(&crate::common::query_msg(&sql)).await.unwrap();
    let admin = stack.cluster.connect("postgres").await.unwrap();
    eventually("the query starts", Duration::from_secs(10), async || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&sql],
            )
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
}

/// How the running query on `c` ended: its SQLSTATE, or "ok".
async fn query_result(c: &mut RawClient) -> String {
    let mut result = "ok".to_string();
    while let Some((t, body)) = c.recv().await {
        match t {
            b'E' => result = crate::common::sqlstate(&body),
            b'Z' => return result,
            _ => {}
        }
    }
    panic!("the session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_balancer_gives_to_another_replica_cancels_the_query() {
    let fleet = Fleet::start(None, false, loopback).await;
    let stack = &fleet.stack;

    // psql-like: a session through the balancer, then its cancel on a new connection,
    // which round robin gives to the next replica.
    let mut c = RawClient::login(fleet.balancer.addr, &stack.app, "fleet-cancel").await;
    let (pid, secret) = c.key.expect("a cancel key");
    let owner = proxy::cancel::keys::owner(pid) as usize;
    assert!(owner < REPLICAS);
    start_sleep(stack, &mut c, 60).await;
    let sent = Instant::now();
    send_cancel(fleet.balancer.addr, pid, secret).await;
    assert_eq!(
        query_result(&mut c).await,
        "57014",
        "the query was not cancelled"
    );
    assert!(sent.elapsed() < Duration::from_secs(10));
    // It went through another replica: one forwarded it, the owner took it from a peer.
    let forwarded = fleet.metric("cancel_requests", "route=\"forwarded\"").await;
    let from_peer = fleet.metric("cancel_requests", "route=\"from_peer\"").await;
    assert_eq!(forwarded.iter().sum::<u64>(), 1, "{forwarded:?}");
    assert_eq!(forwarded[owner], 0, "{forwarded:?}");
    assert_eq!(from_peer[owner], 1, "{from_peer:?}");

    // Forged keys (the owner's pid with other secrets, a pid of no session) and a stale key
    // (of a session that ended), each sent through every replica, cancel nothing.
    let mut gone = RawClient::login(fleet.balancer.addr, &stack.app, "fleet-gone").await;
    let stale = gone.key.unwrap();
    gone.send(&[b'X', 0, 0, 0, 4]).await.unwrap();
    assert!(gone.recv().await.is_none());
    start_sleep(stack, &mut c, 3).await;
    for _ in 0..REPLICAS {
        let mut forged = secret;
        forged[0] ^= 0x5a;
        send_cancel(fleet.balancer.addr, pid, forged).await;
        send_cancel(fleet.balancer.addr, pid ^ 0x00ff_0000, secret).await;
        send_cancel(fleet.balancer.addr, stale.0, stale.1).await;
    }
    assert_eq!(
        query_result(&mut c).await,
        "ok",
        "a forged or stale key cancelled"
    );
    let unknown = fleet.metric("cancel_requests", "route=\"unknown\"").await;
    // One each: the replica that received it, after no peer had it.
    assert_eq!(
        unknown.iter().sum::<u64>(),
        3 * REPLICAS as u64,
        "{unknown:?}"
    );

    // The peer channel itself: garbage and a wrong signature are refused, a valid message
    // is acted on once and refused when replayed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let peer = |i: usize| fleet_peer_addr(&fleet, i);
    let ask = |addr: SocketAddr, msg: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&msg).await.unwrap();
        let mut a = [0u8; 1];
        s.read_exact(&mut a).await.map(|_| a[0]).unwrap_or(0)
    };
    let key = stack.ctx.secrets.get("dbgw/proxy-fleet").await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        ask(peer(owner), vec![0x42; proxy::fleet::MESSAGE_LEN]).await,
        b'R'
    );
    let wrong = secrecy::SecretString::from("not the fleet's key at all".to_string());
    let forged = proxy::fleet::encode(&wrong, pid, secret, now);
    assert_eq!(ask(peer(owner), forged.to_vec()).await, b'R');
    let old = proxy::fleet::encode(&key, pid, secret, now - 60_000);
    assert_eq!(ask(peer(owner), old.to_vec()).await, b'R');
    start_sleep(stack, &mut c, 60).await;
    let valid = proxy::fleet::encode(&key, pid, secret, now);
    assert_eq!(
        ask(peer((owner + 1) % REPLICAS), valid.to_vec()).await,
        b'N'
    );
    assert_eq!(ask(peer(owner), valid.to_vec()).await, b'S');
    assert_eq!(query_result(&mut c).await, "57014");
    assert_eq!(
        ask(peer(owner), valid.to_vec()).await,
        b'R',
        "a replay was accepted"
    );
    let refused = fleet
        .metric("cancel_requests", "route=\"peer_refused\"")
        .await;
    assert_eq!(refused[owner], 4, "{refused:?}");

    fleet.stop().await;
}

fn fleet_peer_addr(fleet: &Fleet, i: usize) -> SocketAddr {
    let settings = if i == 0 {
        &fleet.stack.ctx.settings
    } else {
        &fleet.others[i - 1].ctx.settings
    };
    settings.fleet.listen.parse().unwrap()
}

fn fleet_grants(s: &mut Settings) {
    // Only a notification can close a session within seconds: the safety poll is a
    // minute away. With notifications down, polling runs every half second.
    s.grants.notified_poll_interval_ms = 60_000;
    s.grants.poll_interval_ms = 500;
}

/// Opens a person's session through the balancer per email; returns, per session, a
/// receiver of the moment the proxy closed it.
async fn person_sessions(
    fleet: &Fleet,
    idp: &DevIdp,
    emails: &[String],
) -> Vec<tokio::sync::oneshot::Receiver<Instant>> {
    let mut closed = Vec::new();
    for email in emails {
        let token = idp.token(email).unwrap();
        let mut c = RawClient::login_person_at(
            fleet.balancer.addr,
            &fleet.stack.ca,
            email,
            &token,
            "fleet",
        )
        .await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // Idle until the proxy sends its FATAL and closes.
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 1024];
            while matches!(c.stream.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = tx.send(Instant::now());
        });
        closed.push(rx);
    }
    closed
}

/// Revokes each grant in turn; the time from the revocation to its session's end.
async fn revoke_each(
    stack: &Stack,
    grants: &[grants::Grant],
    closed: Vec<tokio::sync::oneshot::Receiver<Instant>>,
) -> Vec<Duration> {
    let control = stack.cluster.connect("dbgw").await.unwrap();
    let target = stack.cluster.connect("postgres").await.unwrap();
    let mut out = Vec::new();
    for (grant, closed) in grants.iter().zip(closed) {
        let revoked = Instant::now();
        grants::revoke(
            &control,
            &target,
            grant.id,
            "dana@example.com",
            "fleet test",
        )
        .await
        .unwrap();
        let at = tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .unwrap_or_else(|_| panic!("grant {}: the session outlived it by 10 s", grant.id))
            .unwrap();
        out.push(at.saturating_duration_since(revoked));
    }
    out
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_replica_pushed_and_by_polling_when_notifications_are_cut() {
    const SESSIONS: usize = 24;
    let emails: Vec<String> = (0..SESSIONS + 6)
        .map(|i| format!("fleet{i}@example.com"))
        .collect();
    // The development provider with one account per session.
    let users = tempfile::NamedTempFile::new().unwrap();
    let accounts: Vec<Value> = emails
        .iter()
        .enumerate()
        .map(|(i, email)| {
            serde_json::json!({
                "sub": format!("fleet-{i}"), "email": email, "email_verified": true,
                "name": email, "groups": []
            })
        })
        .collect();
    std::fs::write(
        users.path(),
        serde_json::json!({ "password": "dev", "users": accounts }).to_string(),
    )
    .unwrap();
    let idp = DevIdp::start_with(&[("IDP_USERS_FILE", users.path().to_str().unwrap())]).unwrap();
    let fleet = Fleet::start(Some(&idp), false, fleet_grants).await;
    let stack = &fleet.stack;
    let listening = fleet.metric("grants_listening", "").await;
    assert_eq!(
        listening,
        vec![1; REPLICAS],
        "notifications are not received"
    );

    let mut grants = Vec::new();
    for email in &emails {
        grants.push(stack.grant(email, "rates_reader").await);
    }
    let closed = person_sessions(&fleet, &idp, &emails[..SESSIONS]).await;
    let per_replica = fleet.metric("active_sessions", "").await;
    assert_eq!(per_replica, vec![(SESSIONS / REPLICAS) as u64; REPLICAS]);

    let mut pushed = revoke_each(stack, &grants[..SESSIONS], closed).await;
    pushed.sort();
    println!(
        "\nrevocation to session closed, {SESSIONS} sessions over {REPLICAS} replicas behind HAProxy \
         (notifications; safety poll 60 s)\n\
         | sessions | p50 | p99 | max |\n|---|---|---|---|\n| {SESSIONS} | {:.0} ms | {:.0} ms | {:.0} ms |",
        percentile(&pushed, 0.5).as_secs_f64() * 1e3,
        percentile(&pushed, 0.99).as_secs_f64() * 1e3,
        pushed.last().unwrap().as_secs_f64() * 1e3,
    );
    // Polling alone could not have closed them within seconds: the notifications did.
    assert!(
        *pushed.last().unwrap() < Duration::from_secs(5),
        "{pushed:?}"
    );

    // Cut the notifications: the listeners are ended and cannot reconnect (the control
    // login may hold only the connections it has); replicas fall back to polling.
    let admin = stack.cluster.connect("postgres").await.unwrap();
    let others: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'dbgw_proxy' \
             AND application_name <> $1",
            &[&proxy::access::LISTENER_APPLICATION],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(others, REPLICAS as i64, "one grants connection per replica");
    admin
        .batch_execute(&format!("ALTER ROLE dbgw_proxy CONNECTION LIMIT {others}"))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&proxy::access::LISTENER_APPLICATION],
        )
        .await
        .unwrap();
    fleet
        .wait_listening(0, "the listeners did not notice")
        .await;
    let closed = person_sessions(&fleet, &idp, &emails[SESSIONS..]).await;
    let polled = revoke_each(stack, &grants[SESSIONS..], closed).await;
    assert_eq!(
        fleet.metric("grants_listening", "").await,
        vec![0; REPLICAS],
        "a listener came back: the fallback was not what closed the sessions"
    );
    assert!(
        polled.iter().all(|d| *d < Duration::from_secs(3)),
        "{polled:?}"
    );
    // Notifications come back when the control plane lets the listeners in again.
    admin
        .batch_execute("ALTER ROLE dbgw_proxy CONNECTION LIMIT -1")
        .await
        .unwrap();
    fleet
        .wait_listening(1, "the listeners did not come back")
        .await;

    // Each replica kept its own chain; verify checks all three and reports each head.
    fleet.flush().await;
    let dirs = fleet.audit_dirs();
    let out = audit_cli(&["verify"], &dirs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for i in 0..REPLICAS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("[proxy-{i}] OK: ")) && l.contains("head ")),
            "{stdout}"
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_keep_their_own_chains_verified_together_and_merged_in_time_order() {
    let fleet = Fleet::start(None, true, |s| {
        loopback(s);
        // Small files, so chains rotate and every file's first record is checked.
        s.audit.max_file_bytes = 16 * 1024;
    })
    .await;
    let stack = &fleet.stack;
    for i in 0..30 {
        let mut c = RawClient::login(fleet.balancer.addr, &stack.app, "fleet-chains").await;
        c.send(&crate::common::query_msg(&format!(
            "SELECT {i}, repeat('x', 500)"
        )))
        .await
        .unwrap();
        assert_eq!(query_result(&mut c).await, "ok");
    }
    fleet.flush().await;
    let dirs = fleet.audit_dirs();

    // Every file starts by naming its replica.
    let mut total = 0;
    for (i, dir) in dirs.iter().enumerate() {
        let files = proxy::audit::source::audit_files(dir).unwrap();
        assert!(files.len() > 1, "{} did not rotate", dir.display());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            total += text.lines().count();
            let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert!(
                matches!(first["type"].as_str(), Some("log_opened" | "file_opened")),
                "{first}"
            );
            assert_eq!(first["replica"], format!("proxy-{i}"), "{}", f.display());
        }
    }

    // Merged: every record once, each with its replica, each chain in order, and time
    // order wherever the stream switches chains.
    let out = audit_cli(&["merge"], &dirs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(merged.len(), total);
    let mut last_seq = std::collections::HashMap::new();
    for pair in merged.windows(2) {
        if pair[0]["replica"] != pair[1]["replica"] {
            assert!(
                pair[0]["ts"].as_str() <= pair[1]["ts"].as_str(),
                "{} then {}",
                pair[0],
                pair[1]
            );
        }
    }
    for r in &merged {
        let seq = r["seq"].as_u64().unwrap();
        let prev = last_seq.insert(r["replica"].as_str().unwrap().to_string(), seq);
        assert_eq!(prev.map_or(seq, |p| p + 1), seq, "{r}");
    }
    assert_eq!(last_seq.len(), REPLICAS);

    // The database's own log agrees with all three chains.
    let out = audit_cli(
        &[
            "crosscheck",
            "--pgaudit",
            stack.pgaudit_dir().to_str().unwrap(),
        ],
        &dirs,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One altered record in one chain: that chain is reported, the others verify.
    let (victim, text) = proxy::audit::source::audit_files(&dirs[1])
        .unwrap()
        .into_iter()
        .map(|f| (f.clone(), std::fs::read_to_string(&f).unwrap()))
        .find(|(_, text)| text.contains("fleet-chains"))
        .unwrap();
    std::fs::write(&victim, text.replacen("fleet-chains", "fleet-chainz", 1)).unwrap();
    let out = audit_cli(&["verify"], &dirs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[proxy-1] TAMPERED"), "{stdout}");
    assert!(
        stdout.contains("[proxy-0] OK") && stdout.contains("[proxy-2] OK"),
        "{stdout}"
    );
    // A head anchors one chain only.
    let out = audit_cli(
        &["verify", "--head", &format!("1:{}", "0".repeat(64))],
        &dirs,
    );
    assert_eq!(out.status.code(), Some(2));
    fleet.stop().await;
}
