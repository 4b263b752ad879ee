//! The binary, configured from the environment, stops cleanly on SIGTERM: it refuses new
//! connections at once, finishes the request in flight with correct data, and exits 0.

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::{eventually, eventually_blocking};

use crate::common::{assert_day, expected_totals, http_client, Db};
use secrecy::ExposeSecret;

/// Kills the child if the test fails half-way, so no server outlives it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let db = Db::start().await;
    let port = dbgw_db::cluster::free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let logs = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rates-api"))
        .envs(db.env(&format!("127.0.0.1:{port}")))
        // The blocked request must outlast the test's steps, not hit the timeout.
        .env("RATES_API_DATABASE__STATEMENT_TIMEOUT_MS", "60000")
        .env("RATES_API_LOG__LEVEL", "debug")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logs.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let http = http_client();

    // Ready also means a pooled connection with the statement prepared.
    eventually(
        "the binary becomes ready",
        Duration::from_secs(20),
        async || match http.get(format!("{base}/health/ready")).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        },
    )
    .await;

    // Hold a lock that makes the rates query wait.
    let locker = db.cluster.connect("rates").await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE prices IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let url = format!(
        "{base}/rates?date_from=2021-01-01&date_to=2021-01-31&orig_code=CNGGZ&dest_code=EETLL"
    );
    let in_flight = tokio::spawn({
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    });
    eventually(
        "the request waits on the lock",
        Duration::from_secs(10),
        async || {
            let waiting: i64 = db
                .admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'rates-api' AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            waiting == 1
        },
    )
    .await;

    let pid = child.0.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    // New connections are refused while the old request is still running.
    eventually(
        "new connections are refused",
        Duration::from_secs(5),
        async || {
            matches!(
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the request finished before the lock was released"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    locker.batch_execute("COMMIT").await.unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight request completes")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let got = body["rates"].as_array().unwrap();
    let expected = expected_totals(
        &db.admin,
        "2021-01-01",
        "2021-01-31",
        &["CNGGZ".to_string()],
        &["EETLL".to_string()],
    )
    .await;
    assert_eq!(got.len(), 31);
    for (g, e) in got.iter().zip(&expected) {
        assert_day(&db.admin, g, e).await;
    }

    let exit = eventually_blocking(
        "the binary exits after the last request",
        Duration::from_secs(5),
        || child.0.try_wait().unwrap(),
    );
    assert_eq!(exit.code(), Some(0), "{exit:?}");

    // The logs tell what happened and never hold the password, even at debug level.
    let text = std::fs::read_to_string(logs.path()).unwrap();
    assert!(text.contains("SIGTERM"), "{text}");
    // The request line carries its request span (id, method, route).
    let request_line: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["path"] == "/rates")
        .unwrap_or_else(|| panic!("no request line for /rates: {text}"));
    assert_eq!(request_line["span"]["name"], "request", "{request_line}");
    assert_eq!(request_line["span"]["route"], "/rates", "{request_line}");
    assert!(
        request_line["span"]["id"].as_u64().is_some(),
        "{request_line}"
    );
    assert!(
        !text.contains(db.creds.password.expose_secret()),
        "the password is in the logs"
    );
}
