//! Shared setup of the integration tests: a throwaway cluster with the rates data (TLS and
//! SCRAM, see `dbgw_db::Cluster`), the `rates_api` login stored in a temporary file secret
//! store, and the real application on port 0, configured exactly as in production apart from
//! addresses.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dbgw_db::Cluster;
use rates_api::settings::TlsMode;
use rates_api::{Application, Settings};
use secret_store::{DbCredentials, SecretStore};
use serde_json::Value;
use testkit::{Served, TestDb};

pub const SECRET_ID: &str = "dbgw/rates-api";

/// A cluster, the secret store pointing at it, and an admin connection for independent SQL.
pub struct Db {
    pub cluster: Arc<Cluster>,
    pub secrets: tempfile::TempDir,
    pub store: SecretStore,
    pub creds: DbCredentials,
    pub admin: tokio_postgres::Client,
    /// Fails the test if it hangs (from [`TestDb`]).
    _watchdog: testkit::Watchdog,
}

impl Db {
    pub async fn start() -> Db {
        let db = TestDb::start().await;
        let creds = db.login("rates_api", SECRET_ID).await;
        let admin = db.cluster.connect("rates").await.unwrap();
        Db {
            cluster: db.cluster,
            secrets: db.dir,
            store: db.store,
            creds,
            admin,
            _watchdog: db.watchdog,
        }
    }

    /// Settings for an app on a free port talking to this cluster.
    pub fn settings(&self) -> Settings {
        let mut s = Settings {
            listen: "127.0.0.1:0".into(),
            ..Settings::default()
        };
        s.database.host = self.cluster.host().into();
        s.database.port = self.cluster.port();
        s.database.tls = TlsMode::VerifyFull;
        s.database.ca_file = self.cluster.ca_cert();
        s.database.secret = SECRET_ID.into();
        s.database.pool_size = 4;
        s.database.connect_timeout_secs = 2;
        s.secrets.dir = self.secrets.path().join("secrets");
        s
    }

    /// The same settings as `RATES_API_*` environment variables, for the binary.
    pub fn env(&self, listen: &str) -> Vec<(String, String)> {
        let s = self.settings();
        vec![
            ("RATES_API_LISTEN".into(), listen.into()),
            ("RATES_API_DATABASE__HOST".into(), s.database.host),
            (
                "RATES_API_DATABASE__PORT".into(),
                s.database.port.to_string(),
            ),
            ("RATES_API_DATABASE__TLS".into(), "verify-full".into()),
            (
                "RATES_API_DATABASE__CA_FILE".into(),
                path(&s.database.ca_file),
            ),
            ("RATES_API_DATABASE__SECRET".into(), SECRET_ID.into()),
            ("RATES_API_SECRETS__DIR".into(), path(&s.secrets.dir)),
        ]
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The application running in this test's runtime.
pub struct TestApp {
    pub db: Db,
    pub base: String,
    pub http: reqwest::Client,
    served: Served<std::io::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = Db::start().await;
    let mut settings = db.settings();
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("build the app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let served = Served::spawn(|stop| app.run_until_stopped(stop));
    TestApp {
        db,
        base,
        http: http_client(),
        served,
    }
}

pub fn http_client() -> reqwest::Client {
    tls_config::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl TestApp {
    /// GET `path_and_query`: status and JSON body.
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{}", self.base, path_and_query))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let body = if content_type.starts_with("application/json") {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
        } else {
            Value::String(text)
        };
        (status, body)
    }

    pub async fn rates(&self, from: &str, to: &str, orig: &str, dest: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!(
                "/rates?date_from={from}&date_to={to}&orig_code={orig}&dest_code={dest}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["rates"].as_array().expect("a rates array").clone()
    }

    pub async fn stop(self) {
        self.served.stop().await.unwrap();
    }
}

/// Per-day count and sum for the given origin and destination port sets, every day of the
/// range newest first, computed directly in SQL (not with the service's query).
pub async fn expected_totals(
    admin: &tokio_postgres::Client,
    from: &str,
    to: &str,
    origs: &[String],
    dests: &[String],
) -> Vec<(String, i64, Option<i64>)> {
    admin
        .query(
            "SELECT g::date::text, count(p.price), sum(p.price)
             FROM generate_series($1::text::date, $2::text::date, interval '1 day') g
             LEFT JOIN prices p ON p.day = g::date
                 AND p.orig_code = ANY($3) AND p.dest_code = ANY($4)
             GROUP BY g ORDER BY g DESC",
            &[&from, &to, &origs, &dests],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Checks one answered day against the independent totals, the price exactly: it must be
/// the double nearest to sum/count, checked in exact `numeric` arithmetic by PostgreSQL.
pub async fn assert_day(
    admin: &tokio_postgres::Client,
    got: &Value,
    expected: &(String, i64, Option<i64>),
) {
    let (day, count, sum) = expected;
    assert_eq!(got["day"], day.as_str(), "{got}");
    if *count == 0 {
        assert!(got["count"].is_null(), "no prices means count null: {got}");
    } else {
        assert_eq!(got["count"].as_i64(), Some(*count), "{got}");
    }
    if *count < 3 {
        assert!(
            got["price"].is_null(),
            "fewer than 3 prices means price null: {got}"
        );
        return;
    }
    let price = got["price"]
        .as_f64()
        .unwrap_or_else(|| panic!("a price: {got}"));
    assert_nearest_double(admin, price, *count, sum.unwrap()).await;
}

/// `price` is the double nearest to `sum / count`: no neighbouring double is closer. Compared
/// as |x*count - sum| in `numeric`, where every double has an exact decimal form.
pub async fn assert_nearest_double(
    admin: &tokio_postgres::Client,
    price: f64,
    count: i64,
    sum: i64,
) {
    let exact = |x: f64| format!("{x:.1100}");
    let row = admin
        .query_one(
            "WITH v(x, up, down, n, total) AS (
                 SELECT $1::text::numeric, $2::text::numeric, $3::text::numeric,
                        $4::bigint, $5::bigint
             )
             SELECT abs(x * n - total) <= abs(up * n - total)
                AND abs(x * n - total) <= abs(down * n - total)
             FROM v",
            &[
                &exact(price),
                &exact(price.next_up()),
                &exact(price.next_down()),
                &count,
                &sum,
            ],
        )
        .await
        .unwrap();
    let nearest: bool = row.get(0);
    assert!(
        nearest,
        "{price} is not the double nearest to {sum}/{count}"
    );
}

/// The ports a region slug stands for, found by walking up from every port to its
/// ancestors (the service walks down from the region).
pub async fn ports_under(admin: &tokio_postgres::Client, slug: &str) -> Vec<String> {
    admin
        .query(
            "WITH RECURSIVE ancestry(code, slug) AS (
                 SELECT code, parent_slug FROM ports
                 UNION
                 SELECT a.code, r.parent_slug FROM ancestry a
                 JOIN regions r ON r.slug = a.slug
                 WHERE r.parent_slug IS NOT NULL
             )
             SELECT DISTINCT code FROM ancestry WHERE slug = $1 ORDER BY code",
            &[&slug],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
