//! The stack every proxy test runs against: a throwaway PostgreSQL cluster (TLS, SCRAM), the
//! proxy in-process on free ports with its own TLS certificate, secret store and audit
//! directory, and helpers to read what the audit log says.

pub mod balancer;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use dbgw_db::Cluster;
use dev_idp::DevIdp;
use proxy::audit::Durability;
use proxy::context::Context;
use proxy::server::Server;
use proxy::settings::{Plaintext, Settings};
use secrecy::ExposeSecret;
use secret_store::{DbCredentials, SecretStore};
use serde_json::Value;
use testkit::{Served, TestDb};

pub struct Stack {
    pub cluster: Arc<Cluster>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub ctx: Arc<Context>,
    pub ca: PathBuf,
    /// The application account (read-only) and a writer account, both known to the proxy.
    pub app: DbCredentials,
    pub writer: DbCredentials,
    served: Served<anyhow::Result<()>>,
    /// Fails the test if it hangs (from [`TestDb`]).
    _watchdog: testkit::Watchdog,
}

pub struct Options {
    pub durability: Durability,
    pub plaintext: Plaintext,
    pub param_cap: usize,
    pub max_message_bytes: usize,
    /// Where the audit files go; defaults to a folder of the stack's temporary directory.
    pub audit_dir: Option<PathBuf>,
    /// Turns person logins on with this identity provider.
    pub oidc_issuer: Option<String>,
    /// Disk space the audit writer keeps reserved ahead.
    pub reserve_bytes: u64,
    pub max_handshakes_per_address: usize,
    /// Another secret store than a directory of files (the rotation tests: moto server).
    pub secrets: Option<SecretStore>,
    /// Last changes to the proxy's settings (e.g. `[fleet]`, `[grants]`).
    pub configure: Box<dyn FnOnce(&mut Settings) + Send>,
    /// The cluster runs pgaudit (its log: [`Stack::pgaudit_dir`]).
    pub pgaudit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Buffered,
            plaintext: Plaintext::Never,
            param_cap: 2048,
            max_message_bytes: 64 * 1024 * 1024,
            audit_dir: None,
            oidc_issuer: None,
            reserve_bytes: 1024 * 1024,
            max_handshakes_per_address: 50,
            secrets: None,
            configure: Box::new(|_| {}),
            pgaudit: false,
        }
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Self::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Stack {
        let mut db = TestDb::start_with(dbgw_db::cluster::Options {
            pgaudit: opts.pgaudit,
        })
        .await;
        if let Some(store) = opts.secrets.clone() {
            db.store = store;
        }
        let app = db.login("rates_api", "dbgw/rates-api").await;
        let cluster = db.cluster.clone();

        // A writer account and a table it may change.
        let admin = cluster.connect("rates").await.unwrap();
        admin
            .batch_execute(
                "CREATE ROLE app_writer LOGIN IN ROLE rates_writer;
                 SET ROLE rates_owner;
                 CREATE TABLE notes (id serial PRIMARY KEY, body text, data bytea, n int);
                 GRANT USAGE ON SEQUENCE notes_id_seq TO rates_writer;
                 RESET ROLE;",
            )
            .await
            .unwrap();
        let writer = db.login("app_writer", "dbgw/app-writer").await;

        let (cert, key) = cluster
            .issue_cert(&["localhost", "127.0.0.1"], db.dir.path(), "proxy")
            .unwrap();
        let mut settings = Settings {
            listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            shutdown_grace_secs: 5,
            ..Settings::default()
        };
        settings.tls.cert_file = Some(cert);
        settings.tls.key_file = Some(key);
        settings.tls.plaintext = opts.plaintext;
        settings.upstream.port = cluster.port();
        settings.upstream.ca_file = Some(cluster.ca_cert());
        // The proxy's client certificate: the cluster admits people's roles only with it.
        let client = cluster.client_cert();
        settings.upstream.client_cert_file = Some(client.cert_file);
        settings.upstream.client_key_file = Some(client.key_file);
        settings
            .services
            .insert("app_writer".into(), "dbgw/app-writer".into());
        settings.secrets.dir = db.secrets_dir();
        settings.audit.dir = opts
            .audit_dir
            .unwrap_or_else(|| db.dir.path().join("audit"));
        settings.audit.durability = opts.durability;
        settings.audit.param_cap_bytes = opts.param_cap;
        settings.audit.reserve_bytes = opts.reserve_bytes;
        settings.limits.max_message_bytes = opts.max_message_bytes;
        settings.limits.max_handshakes_per_address = opts.max_handshakes_per_address;
        if let Some(issuer) = opts.oidc_issuer {
            settings.oidc.issuer = issuer;
            settings.oidc.unknown_key_refetch_secs = 1;
            settings.grants.poll_interval_ms = 500;
            db.login("dbgw_proxy", "dbgw/proxy-control").await;
        }
        (opts.configure)(&mut settings);
        if !settings.fleet.peers.is_empty() || !settings.fleet.listen.is_empty() {
            // The key that authenticates the replicas to each other.
            let key = secrecy::SecretString::from(secret_store::generate_password());
            db.store.put(&settings.fleet.secret, &key).await.unwrap();
        }

        let server = Server::bind_with_secrets(settings, db.store.clone())
            .await
            .expect("proxy binds");
        let (addr, admin_addr, ctx) = (server.local_addr(), server.admin_addr(), server.context());
        let served = Served::spawn(|stop| server.run(stop));
        Stack {
            ca: cluster.ca_cert(),
            cluster,
            dir: db.dir,
            addr,
            admin: admin_addr,
            ctx,
            app,
            writer,
            served,
            _watchdog: db.watchdog,
        }
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.ctx.settings.audit.dir.clone()
    }

    /// Another proxy on this stack's database and secret store: the stack's settings with
    /// their own ports and audit directory (`audit-<replica>`), then `configure`.
    pub async fn replica(&self, configure: impl FnOnce(&mut Settings)) -> Replica {
        let mut settings = self.ctx.settings.clone();
        settings.listen = "127.0.0.1:0".into();
        settings.admin_listen = "127.0.0.1:0".into();
        configure(&mut settings);
        settings.audit.dir = self
            .dir
            .path()
            .join(format!("audit-{}", settings.fleet.replica_name()));
        let server = Server::bind_with_secrets(settings, self.ctx.secrets.clone())
            .await
            .expect("replica binds");
        let (addr, admin, ctx) = (server.local_addr(), server.admin_addr(), server.context());
        let served = Served::spawn(|stop| server.run(stop));
        Replica {
            addr,
            admin,
            ctx,
            served,
        }
    }

    /// The cluster's pgaudit log directory (a stack started with `Options::pgaudit`).
    pub fn pgaudit_dir(&self) -> PathBuf {
        self.cluster
            .pgaudit_log_dir()
            .expect("the stack was started with pgaudit")
    }

    /// tokio-postgres settings for `creds` through the proxy, TLS verified.
    pub fn pg_config(&self, creds: &DbCredentials) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.addr.port())
            .user(&creds.username)
            .password(creds.password.expose_secret())
            .dbname("rates")
            .application_name("proxy-test")
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        c
    }

    pub async fn connect(&self, creds: &DbCredentials) -> tokio_postgres::Client {
        let tls = tls_config::postgres_connector(Some(&self.ca)).unwrap();
        let (client, conn) = self
            .pg_config(creds)
            .connect(tls)
            .await
            .expect("connect through proxy");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Environment for libpq tools (psql, pgbench) through the proxy.
    pub fn libpq_env(&self, creds: &DbCredentials) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), self.addr.port().to_string()),
            ("PGUSER".into(), creds.username.clone()),
            (
                "PGPASSWORD".into(),
                creds.password.expose_secret().to_string(),
            ),
            ("PGDATABASE".into(), "rates".into()),
            ("PGSSLMODE".into(), "verify-full".into()),
            ("PGSSLROOTCERT".into(), self.ca.display().to_string()),
            ("PGAPPNAME".into(), "proxy-test".into()),
        ]
    }

    /// A command for PostgreSQL client program `name` aimed at the proxy as `creds`.
    pub fn libpq_command(&self, name: &str, creds: &DbCredentials) -> Command {
        let mut cmd = Command::new(dbgw_db::cluster::pg_bin(name).unwrap());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.envs(self.libpq_env(creds));
        cmd
    }

    /// Writes buffered audit records now.
    pub fn flush(&self) {
        self.ctx.audit.flush().unwrap();
    }

    /// Waits until no session is open (each writes its last record before it goes).
    pub async fn sessions_ended(&self) {
        testkit::eventually(
            "every session ends",
            std::time::Duration::from_secs(10),
            async || match self.ctx.sessions.count() {
                0 => Ok(()),
                n => Err(format!("{n} open")),
            },
        )
        .await;
    }

    /// Every audit record so far, in order.
    pub fn records(&self) -> Vec<Value> {
        self.flush();
        read_records(&self.audit_dir())
    }

    /// Grants `email` the group role `role` on the rates database for an hour.
    pub async fn grant(&self, email: &str, role: &str) -> grants::Grant {
        self.grant_until(email, role, chrono::Utc::now() + chrono::Duration::hours(1))
            .await
    }

    pub async fn grant_until(
        &self,
        email: &str,
        role: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> grants::Grant {
        self.grant_with(email, role, expires_at, Default::default())
            .await
    }

    /// A grant with a session policy (idle and age limits, ...).
    pub async fn grant_with(
        &self,
        email: &str,
        role: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        policy: grants::SessionPolicy,
    ) -> grants::Grant {
        let control = self.cluster.connect("dbgw").await.unwrap();
        let target = self.cluster.connect("postgres").await.unwrap();
        grants::add(
            &control,
            &target,
            &self.ctx.secrets,
            &grants::SecretLayout {
                host: self.cluster.host().into(),
                port: self.cluster.port(),
                master: "dbgw/postgres-admin".into(),
            },
            grants::PeopleLogin::Password,
            grants::NewGrant {
                email: email.into(),
                database: "rates".into(),
                role: role.into(),
                expires_at,
                created_by: "test".into(),
                policy,
            },
        )
        .await
        .unwrap()
    }

    pub async fn stop(self) {
        self.served.stop().await.unwrap();
    }
}

/// A proxy started by [`Stack::replica`].
pub struct Replica {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub ctx: Arc<Context>,
    served: Served<anyhow::Result<()>>,
}

impl Replica {
    pub fn audit_dir(&self) -> PathBuf {
        self.ctx.settings.audit.dir.clone()
    }

    pub async fn stop(self) {
        self.served.stop().await.unwrap();
    }
}

pub fn read_records(dir: &Path) -> Vec<Value> {
    read_json_lines(&proxy::audit::source::audit_files(dir).unwrap())
}

/// Every line of `files`, in order, each a JSON object (audit records, the server's jsonlog).
pub fn read_json_lines(files: &[PathBuf]) -> Vec<Value> {
    files
        .iter()
        .flat_map(|f| {
            let bytes = std::fs::read(f).unwrap();
            // A live file in fsync durability ends in reserved zeros.
            std::str::from_utf8(proxy::audit::source::written(&bytes))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The executions of an application name's sessions, each with its outcome record: a
/// query string's statements one by one (with `statement`, `index` and `of` filled in from
/// the record's parts), and the extended-protocol records that include an Execute.
pub fn executions(records: &[Value], application: &str) -> Vec<(Value, Option<Value>)> {
    let sessions: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "auth" && r["application"] == application)
        .filter_map(|r| r["session"].as_str())
        .collect();
    let outcome = |s: &Value, index: Option<usize>| {
        records
            .iter()
            .find(|o| {
                o["type"] == "outcome"
                    && o["ref"] == s["seq"]
                    && index.is_none_or(|i| o["index"] == i)
            })
            .cloned()
    };
    let mut out = Vec::new();
    for s in records.iter().filter(|r| {
        r["type"] == "statement" && sessions.contains(&r["session"].as_str().unwrap_or(""))
    }) {
        if s["protocol"] == "simple" {
            let parts: Vec<Value> = match s["statements"].as_array() {
                Some(parts) => parts.clone(),
                None => vec![s["statement"].clone()],
            };
            let of = parts.len();
            for (i, text) in parts.into_iter().enumerate() {
                let mut one = s.clone();
                one["statement"] = text;
                one["index"] = i.into();
                one["of"] = of.into();
                out.push((one, outcome(s, Some(i))));
            }
        } else if s["steps"]
            .as_array()
            .is_some_and(|steps| steps.iter().any(|x| x == "execute"))
        {
            out.push((s.clone(), outcome(s, None)));
        }
    }
    out
}

/// Runs `proxy audit verify` (the real binary) on a directory or files.
pub fn verify(paths: &[&Path]) -> std::process::Output {
    audit_cli(&["verify"], paths)
}

/// Runs the real binary: `proxy audit <args> <paths>`.
pub fn audit_cli(args: &[&str], paths: &[impl AsRef<std::ffi::OsStr>]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("audit")
        .args(args)
        .args(paths)
        .output()
        .unwrap()
}

pub fn assert_chain_verifies(dir: &Path) {
    let out = verify(&[dir]);
    assert!(
        out.status.success(),
        "audit chain must verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A byte stream, plain or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A hand-driven protocol client, over plain TCP (stack with `Plaintext::Loopback`) or TLS,
/// for sending what no well-behaved driver would, and for not reading what it is sent.
pub struct RawClient {
    pub stream: Box<dyn Io>,
    buf: bytes::BytesMut,
    /// The cancel key the proxy handed out (BackendKeyData), once seen.
    pub key: Option<(i32, [u8; 4])>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: Box::new(tokio::net::TcpStream::connect(addr).await.unwrap()),
            buf: bytes::BytesMut::new(),
            key: None,
        }
    }

    /// SSLRequest, then TLS verified against `ca`.
    pub async fn connect_tls(addr: SocketAddr, ca: &Path) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[0], b'S', "the proxy offers TLS");
        let config = tls_config::client_config(Some(ca)).unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        RawClient {
            stream: Box::new(tls),
            buf: bytes::BytesMut::new(),
            key: None,
        }
    }

    /// A person's login over TLS: user = email, password = ID token.
    pub async fn login_person(
        stack: &Stack,
        email: &str,
        token: &str,
        application: &str,
    ) -> RawClient {
        Self::login_person_at(stack.addr, &stack.ca, email, token, application).await
    }

    /// [`RawClient::login_person`] to the proxy at `addr` (a replica, a load balancer).
    pub async fn login_person_at(
        addr: SocketAddr,
        ca: &Path,
        email: &str,
        token: &str,
        application: &str,
    ) -> RawClient {
        use proxy::protocol::startup;
        let mut c = RawClient::connect_tls(addr, ca).await;
        let mut out = bytes::BytesMut::new();
        startup::startup_message(
            &mut out,
            &[
                ("user", email),
                ("database", "rates"),
                ("application_name", application),
            ],
        );
        c.send(&out).await.unwrap();
        let (t, _) = c.recv().await.expect("password request");
        assert_eq!(t, b'R');
        out.clear();
        startup::password(&mut out, token);
        c.send(&out).await.unwrap();
        c.until(b'Z').await.expect("ReadyForQuery");
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// The next message, or `None` when the proxy closed the connection.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let msg = self.buf.split_to(len + 1);
                    if msg[0] == b'K' && msg.len() == 13 {
                        let pid = i32::from_be_bytes(msg[5..9].try_into().unwrap());
                        self.key = Some((pid, msg[9..13].try_into().unwrap()));
                    }
                    return Some((msg[0], msg[5..].to_vec()));
                }
            }
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .expect("the proxy neither answered nor closed within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until a message with `tag` (returned) or the end of the connection.
    pub async fn until(&mut self, tag: u8) -> Option<Vec<u8>> {
        while let Some((t, body)) = self.recv().await {
            if t == tag {
                return Some(body);
            }
        }
        None
    }

    /// A start-up the proxy refuses before authentication: the SQLSTATE of its FATAL.
    pub async fn login_refused(addr: SocketAddr, params: &[(&str, &str)]) -> String {
        let mut c = RawClient::connect(addr).await;
        let mut out = bytes::BytesMut::new();
        proxy::protocol::startup::startup_message(&mut out, params);
        c.send(&out).await.unwrap();
        let body = c.until(b'E').await.expect("an ErrorResponse");
        sqlstate(&body)
    }

    /// A connection to `addr` from the loopback address `source` (127.0.0.x: a client on
    /// another host, as a proxy behind a load balancer sees it).
    pub async fn connect_from(addr: SocketAddr, source: &str) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(source.parse().unwrap(), 0))
            .unwrap();
        RawClient {
            stream: Box::new(socket.connect(addr).await.unwrap()),
            buf: bytes::BytesMut::new(),
            key: None,
        }
    }

    /// Start-up and SCRAM login; returns once ReadyForQuery arrived.
    pub async fn login(addr: SocketAddr, creds: &DbCredentials, application: &str) -> RawClient {
        Self::login_on(RawClient::connect(addr).await, creds, application).await
    }

    /// [`RawClient::login`] on a connection already made.
    pub async fn login_on(mut c: RawClient, creds: &DbCredentials, application: &str) -> RawClient {
        use proxy::auth::scram::ClientExchange;
        use proxy::protocol::startup;
        let mut out = bytes::BytesMut::new();
        startup::startup_message(
            &mut out,
            &[
                ("user", &creds.username),
                ("database", "rates"),
                ("application_name", application),
            ],
        );
        c.send(&out).await.unwrap();
        let (t, _) = c.recv().await.expect("SASL request");
        assert_eq!(t, b'R');
        let (exchange, first) = ClientExchange::start();
        out.clear();
        startup::sasl_initial_response(&mut out, "SCRAM-SHA-256", first.as_bytes());
        c.send(&out).await.unwrap();
        let (_, body) = c.recv().await.expect("SASL continue");
        let (fin, msg) = exchange
            .respond(creds.password.expose_secret(), &body[4..])
            .unwrap();
        out.clear();
        startup::sasl_response(&mut out, msg.as_bytes());
        c.send(&out).await.unwrap();
        let (_, body) = c.recv().await.expect("SASL final");
        fin.verify(&body[4..]).unwrap();
        c.until(b'Z').await.expect("ReadyForQuery");
        c
    }
}

/// A Query message.
pub fn query_msg(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend(((sql.len() + 5) as u32).to_be_bytes());
    m.extend(sql.as_bytes());
    m.push(0);
    m
}

/// The SQLSTATE of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> String {
    proxy::protocol::backend::error_fields(body).unwrap().code
}

/// The provider's current signing key (kid, RSA private key in PKCS#1 DER), read from its
/// state directory: tests use it to sign tokens with claims the provider would not.
pub fn signing_key(idp: &DevIdp) -> (String, Vec<u8>) {
    use base64::Engine;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let set: Value =
        serde_json::from_str(&std::fs::read_to_string(idp.state_dir().join("jwks.json")).unwrap())
            .unwrap();
    let key = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k.get("key_ops").is_none())
        .unwrap_or(&set["keys"][0]);
    let n = |f: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key[f].as_str().unwrap())
            .unwrap();
        rsa::BigUint::from_bytes_be(&bytes)
    };
    let private =
        rsa::RsaPrivateKey::from_components(n("n"), n("e"), n("d"), vec![n("p"), n("q")]).unwrap();
    let der = private.to_pkcs1_der().unwrap().as_bytes().to_vec();
    (key["kid"].as_str().unwrap().to_string(), der)
}

/// The provider's current public key, as PEM (for the HS256 key-confusion attack).
pub fn public_pem(idp: &DevIdp) -> String {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let (_, der) = signing_key(idp);
    let private = rsa::RsaPrivateKey::from_pkcs1_der(&der).unwrap();
    private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}
