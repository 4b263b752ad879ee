//! The stack every approvals test runs against, all real: a throwaway PostgreSQL cluster
//! (TLS, SCRAM; `dbgw_db::Cluster`), the development identity provider on a free port with
//! its own copy of the users (so a test can change someone's groups), a temporary file secret
//! store, the app on a free port logging in as its own `dbgw_approvals` role, and, when a
//! test needs it, the audit proxy in-process reading the same secret store and control plane.
//! [`Browser`] is an HTTP client with a cookie jar that signs in through the provider's real
//! login form.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use approvals::{App, Application, Settings};
use dbgw_db::Cluster;
use dev_idp::DevIdp;
use secrecy::SecretString;
use secret_store::{DbCredentials, FileStore, SecretStore};
use serde_json::Value;
use testkit::{Served, TestDb, Watchdog};

pub struct Stack {
    pub cluster: Arc<Cluster>,
    pub idp: DevIdp,
    pub dir: tempfile::TempDir,
    pub store: SecretStore,
    pub users_file: PathBuf,
    /// The app's OpenID client secret (the provider and the app share it).
    pub client_secret: String,
    /// The app's own database login.
    pub app_login: DbCredentials,
    /// The identity provider's SCIM bearer token (the endpoint is on with `Options::scim`).
    pub scim_token: String,
    pub app: App,
    pub base: String,
    served: Served<anyhow::Result<()>>,
    pub proxy: Option<Proxy>,
    /// The test's watchdog (from [`TestDb`]); its browsers record each request in it.
    pub watchdog: Watchdog,
}

pub struct Proxy {
    pub addr: std::net::SocketAddr,
    pub ctx: Arc<proxy::context::Context>,
    served: Served<anyhow::Result<()>>,
}

pub const CLIENT_SECRET_ID: &str = "dbgw/approvals-oidc";
pub const SCIM_SECRET_ID: &str = "dbgw/approvals-scim";

pub struct Options {
    pub proxy: bool,
    pub scheduler_ms: u64,
    pub webhook: String,
    /// Session timeouts (idle, absolute), seconds.
    pub sessions: (u64, u64),
    /// Lifetime of the provider's ID and access tokens, seconds.
    pub token_ttl: u64,
    /// The catalogue; empty: the default one.
    pub catalogue: Vec<approvals::settings::Level>,
    /// The SCIM endpoint on, with [`Stack::scim_token`] in the secret store.
    pub scim: bool,
    /// RDS as far as IAM logins go: the server gets a role `rds_iam` (set up again, as a
    /// deploy does) and the app `people.login = "rds-iam"`.
    pub rds_iam: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxy: false,
            scheduler_ms: 60_000,
            webhook: String::new(),
            sessions: (1800, 8 * 3600),
            token_ttl: 600,
            catalogue: Vec::new(),
            scim: false,
            rds_iam: false,
        }
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Stack {
        let db = TestDb::start().await;
        let app_login = db.login("dbgw_approvals", "dbgw/approvals-db").await;
        let TestDb {
            cluster,
            dir,
            store,
            watchdog,
        } = db;
        let client_secret = secret_store::generate_password();
        store
            .put(
                CLIENT_SECRET_ID,
                &SecretString::from(
                    serde_json::json!({ "client_secret": client_secret }).to_string(),
                ),
            )
            .await
            .unwrap();
        let users_file = dir.path().join("users.json");
        std::fs::copy(dev_idp::idp_dir().join("users.json"), &users_file).unwrap();
        watchdog.step("starting the identity provider");
        let idp = DevIdp::start_with(&[
            ("IDP_APPROVALS_CLIENT_SECRET", &client_secret),
            ("IDP_USERS_FILE", users_file.to_str().unwrap()),
            ("IDP_ID_TOKEN_TTL", &opts.token_ttl.to_string()),
        ])
        .expect("start the development identity provider (npm ci --prefix idp?)");

        let port = dbgw_db::cluster::free_port().unwrap();
        let mut settings = Settings {
            listen: format!("127.0.0.1:{port}"),
            public_url: format!("http://127.0.0.1:{port}"),
            shutdown_grace_secs: 5,
            ..Settings::default()
        };
        for db in [&mut settings.control, &mut settings.target] {
            db.port = cluster.port();
            db.ca_file = cluster.ca_cert();
            db.pool_size = 4;
        }
        settings.oidc.issuer = idp.issuer().to_string();
        settings.secrets.dir = dir.path().join("secrets");
        settings.scheduler.interval_ms = opts.scheduler_ms;
        if !opts.catalogue.is_empty() {
            settings.catalogue = opts.catalogue.clone();
        }
        if !opts.webhook.is_empty() {
            store
                .put(
                    "dbgw/approvals-webhook",
                    &SecretString::from(serde_json::json!({ "url": opts.webhook }).to_string()),
                )
                .await
                .unwrap();
            settings.webhook.secret = "dbgw/approvals-webhook".into();
        }
        let scim_token = format!("scim-{}", secret_store::generate_password());
        store
            .put(
                SCIM_SECRET_ID,
                &SecretString::from(serde_json::json!({ "token": scim_token }).to_string()),
            )
            .await
            .unwrap();
        settings.scim.enabled = opts.scim;
        settings.sessions.idle_timeout_secs = opts.sessions.0;
        settings.sessions.absolute_timeout_secs = opts.sessions.1;
        settings.webhook.backoff_ms = 100;
        settings.webhook.max_attempts = 3;
        if opts.proxy {
            // The app reads what the proxy below writes ("Activity under this access").
            settings.audit.location = Some(dir.path().join("audit"));
        }
        if opts.rds_iam {
            let admin = cluster.connect("postgres").await.unwrap();
            admin
                .batch_execute("CREATE ROLE rds_iam NOLOGIN")
                .await
                .unwrap();
            dbgw_db::schema::setup_control(&cluster.server())
                .await
                .unwrap();
            settings.people.login = grants::PeopleLogin::RdsIam;
        }
        watchdog.step("building the app");
        let application = Application::build(settings).await.expect("build the app");
        let app = application.app();
        let served = Served::spawn(|stop| application.run_until_stopped(stop));
        let proxy = if opts.proxy {
            watchdog.step("starting the proxy");
            Some(Proxy::start(&cluster, dir.path(), idp.issuer()).await)
        } else {
            None
        };
        watchdog.step("running (the stack is up)");
        Stack {
            cluster,
            idp,
            dir,
            store,
            users_file,
            client_secret,
            app_login,
            scim_token,
            app,
            base: format!("http://127.0.0.1:{port}"),
            served,
            proxy,
            watchdog,
        }
    }

    pub fn browser(&self) -> Browser {
        Browser {
            watchdog: Some(self.watchdog.clone()),
            ..Browser::new(&self.base)
        }
    }

    /// Waits for the scheduler's first pass (made at start), so that a test acting on
    /// requests itself does not race it (tests that need this set a long interval).
    pub async fn scheduler_settled(&self) {
        eventually(
            "the scheduler's first pass",
            Duration::from_secs(30),
            async || self.app.metrics.scheduler_runs.get() >= 1,
        )
        .await;
    }

    /// A superuser connection to the control plane (to look, never to act for the app).
    pub async fn control(&self) -> tokio_postgres::Client {
        self.cluster.connect("dbgw").await.unwrap()
    }

    /// A connection as the app's own login.
    pub async fn as_app(&self, db: &str) -> tokio_postgres::Client {
        self.cluster
            .server()
            .connect_as(db, &self.app_login)
            .await
            .unwrap()
    }

    /// Changes someone's groups at the identity provider (it reads the file at each use).
    pub fn set_groups(&self, email: &str, groups: &[&str]) {
        let mut users: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.users_file).unwrap()).unwrap();
        for u in users["users"].as_array_mut().unwrap() {
            if u["email"] == email {
                u["groups"] = serde_json::json!(groups);
            }
        }
        std::fs::write(&self.users_file, users.to_string()).unwrap();
    }

    /// A real ID token for `email` issued to the CLI (`dbgw-cli`): what a person types into
    /// psql as a password.
    pub fn token(&self, email: &str) -> String {
        self.idp.token(email).unwrap()
    }

    /// A real access token for `email` issued to the approvals app (`dbgw-approvals`), with
    /// the scopes the app asks for: the API's bearer token.
    pub fn api_token(&self, email: &str) -> String {
        let out = std::process::Command::new("node")
            .arg(dev_idp::idp_dir().join("token.js"))
            .args(["--issuer", self.idp.issuer(), "--email", email])
            .args(["--client", "dbgw-approvals", "--access-token"])
            .args(["--client-secret", &self.client_secret])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "token.js: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A row count of the control plane, to show that nothing changed.
    pub async fn count(&self, table: &str) -> i64 {
        self.control()
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The events of a request, as `kind` strings.
    pub async fn event_kinds(&self, request: i64) -> Vec<String> {
        self.control()
            .await
            .query(
                "SELECT kind FROM events WHERE request_id = $1 ORDER BY id",
                &[&request],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub async fn status(&self, request: i64) -> String {
        self.control()
            .await
            .query_one(
                "SELECT status FROM access_requests WHERE id = $1",
                &[&request],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Group roles the person's role is a member of.
    /// The group roles the login roles of `email`'s grants hold on the server, sorted (each
    /// grant has a role of its own: an ended one holds none).
    pub async fn memberships(&self, email: &str) -> Vec<String> {
        let target = self.cluster.connect("postgres").await.unwrap();
        let users: Vec<String> = self
            .control()
            .await
            .query("SELECT db_user FROM grants WHERE email = $1", &[&email])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut held = Vec::new();
        for user in users {
            held.extend(grants::memberships(&target, &user).await.unwrap());
        }
        held.sort();
        held.dedup();
        held
    }

    pub async fn stop(mut self) {
        self.watchdog.step("stopping the app and the proxy");
        if let Some(p) = self.proxy.take() {
            p.stop().await;
        }
        self.served.stop().await.unwrap();
    }
}

impl Proxy {
    async fn start(cluster: &Cluster, dir: &std::path::Path, issuer: &str) -> Proxy {
        use proxy::settings::Settings as ProxySettings;
        let store = SecretStore::File(FileStore::new(dir.join("secrets")));
        let control = cluster.login_for("dbgw_proxy").await.unwrap();
        store
            .put_db_credentials("dbgw/proxy-control", &control)
            .await
            .unwrap();
        let (cert, key) = cluster
            .issue_cert(&["localhost", "127.0.0.1"], dir, "proxy")
            .unwrap();
        let mut settings = ProxySettings {
            listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            shutdown_grace_secs: 2,
            ..ProxySettings::default()
        };
        settings.tls.cert_file = Some(cert);
        settings.tls.key_file = Some(key);
        settings.upstream.port = cluster.port();
        settings.upstream.ca_file = Some(cluster.ca_cert());
        // The proxy's client certificate: the cluster admits people's roles only with it.
        let client = cluster.client_cert();
        settings.upstream.client_cert_file = Some(client.cert_file);
        settings.upstream.client_key_file = Some(client.key_file);
        settings.secrets.dir = dir.join("secrets");
        settings.audit.dir = dir.join("audit");
        settings.oidc.issuer = issuer.to_string();
        settings.oidc.unknown_key_refetch_secs = 1;
        settings.grants.poll_interval_ms = 500;
        let server = proxy::server::Server::bind(settings)
            .await
            .expect("proxy binds");
        let (addr, ctx) = (server.local_addr(), server.context());
        let served = Served::spawn(|stop| server.run(stop));
        Proxy { addr, ctx, served }
    }

    /// `psql` through the proxy as `email` with an ID token as the password (environment,
    /// never arguments), TLS verified.
    pub fn psql(&self, ca: &std::path::Path, email: &str, token: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(dbgw_db::cluster::pg_bin("psql").unwrap());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.addr.port().to_string())
            .env("PGUSER", email)
            .env("PGPASSWORD", token)
            .env("PGDATABASE", "rates")
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", ca)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    /// Every audit record so far.
    pub fn records(&self) -> Vec<Value> {
        self.ctx.audit.flush().unwrap();
        let dir = self.ctx.settings.audit.dir.clone();
        proxy::audit::source::audit_files(&dir)
            .unwrap()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub async fn stop(self) {
        let _ = self.served.stop().await;
    }
}

/// A person's browser, minus the rendering: cookies, redirects, forms.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    /// The test's watchdog, told each request (none for a browser made outside a stack).
    watchdog: Option<Watchdog>,
}

/// What a page answered.
pub struct Answer {
    pub status: u16,
    pub url: String,
    pub body: String,
}

impl Answer {
    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no form on {}: {}", self.url, self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        tls_config::install_provider();
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_string(),
            watchdog: None,
        }
    }

    fn step(&self, what: String) {
        if let Some(dog) = &self.watchdog {
            dog.step(what);
        }
    }

    async fn answer(r: reqwest::Response) -> Answer {
        Answer {
            status: r.status().as_u16(),
            url: r.url().to_string(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.step(format!("GET {path}"));
        Self::answer(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.step(format!("POST {path}"));
        Self::answer(
            self.http
                .post(format!("{}{path}", self.base))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Signs in through the provider's login form, as a person would.
    pub async fn sign_in(&self, email: &str) -> Answer {
        let form = self.get("/auth/login").await;
        // Already signed in at the provider: it sends the browser straight back.
        let done = if form.url.starts_with(&self.base) {
            form
        } else {
            assert_eq!(form.status, 200, "{}", form.body);
            assert!(form.body.contains("Sign in to"), "{}", form.body);
            let action = form.url.clone() + "/login";
            self.step(format!("signing in as {email} at the provider"));
            Self::answer(
                self.http
                    .post(action)
                    .form(&[("email", email), ("password", "dev")])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        };
        assert!(
            done.url.starts_with(&self.base),
            "sign-in did not come back to the app: {} {}",
            done.url,
            done.body
        );
        assert_eq!(done.status, 200, "{}", done.body);
        assert!(done.body.contains(email), "{}", done.body);
        done
    }

    /// Asks for `level` access to rates; returns the request id.
    pub async fn request(&self, level: &str, minutes: i64) -> i64 {
        let form = self.get("/requests/new").await;
        let answer = self
            .post(
                "/requests",
                &[
                    ("csrf", &form.csrf()),
                    ("access", &format!("rates/{level}")),
                    ("justification", "quarterly rates review"),
                    ("duration", &minutes.to_string()),
                    ("unit", "minutes"),
                ],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer
            .url
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("not a request page: {}", answer.url))
    }

    /// Approves or denies on the request's page.
    pub async fn decide(&self, id: i64, decision: &str, comment: &str) -> Answer {
        let page = self.get(&format!("/requests/{id}")).await;
        self.post(
            &format!("/requests/{id}/decide"),
            &[
                ("csrf", &page.csrf()),
                ("decision", decision),
                ("comment", comment),
            ],
        )
        .await
    }
}

/// The workspace's one wait on a condition, here for the tests that import it from `common`.
pub use testkit::eventually;
