//! `connect-bench`: how long a new connection takes through the proxy for a person signing
//! in with an ID token, next to a direct SCRAM login to PostgreSQL, in one run.
//!
//! Both go over verified TLS and run `SELECT 1` once per connection (pgbench -C). The proxy
//! path is: TLS to the proxy, token check, grant lookup, the proxy's own TLS + SCRAM login as
//! the person's role. Run with `make bench-connect`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dbgw_db::Cluster;
use dev_idp::DevIdp;
use secret_store::{FileStore, SecretStore};

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let rounds = 3;
    let proxy_bin = std::env::current_exe()?.with_file_name("proxy");
    anyhow::ensure!(
        proxy_bin.is_file(),
        "build the proxy first: cargo build --release -p proxy"
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = Cluster::start()?;
    let work = tempfile::tempdir()?;
    let store = SecretStore::File(FileStore::new(work.path().join("secrets")));
    let idp = DevIdp::start()?;

    // The application login (direct) and the proxy's control-plane login.
    let app = runtime.block_on(cluster.login_for("rates_api"))?;
    let control_login = runtime.block_on(cluster.login_for("dbgw_proxy"))?;
    runtime.block_on(store.put_db_credentials("dbgw/proxy-control", &control_login))?;
    let grant = runtime.block_on(async {
        let control = cluster.connect("dbgw").await?;
        let target = cluster.connect("postgres").await?;
        grants::add(
            &control,
            &target,
            &store,
            &grants::SecretLayout {
                host: cluster.host().into(),
                port: cluster.port(),
                master: "dbgw/postgres-admin".into(),
            },
            grants::PeopleLogin::Password,
            grants::NewGrant {
                email: "alice@example.com".into(),
                database: "rates".into(),
                role: "rates_reader".into(),
                expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
                created_by: "bench".into(),
                policy: Default::default(),
            },
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    let token = idp.token("alice@example.com")?;

    let (cert, key) = cluster.issue_cert(&["localhost", "127.0.0.1"], work.path(), "proxy")?;
    let port = dbgw_db::cluster::free_port()?;
    let config = work.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
             [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [upstream]\nport = {}\nca_file = \"{}\"\n\
             client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n\
             [oidc]\nissuer = \"{}\"\n[secrets]\ndir = \"{}\"\n\
             [audit]\ndir = \"{}\"\n[log]\nlevel = \"warn\"\n",
            dbgw_db::cluster::free_port()?,
            cert.display(),
            key.display(),
            cluster.port(),
            cluster.ca_cert().display(),
            cluster.client_cert().cert_file.display(),
            cluster.client_cert().key_file.display(),
            idp.issuer(),
            work.path().join("secrets").display(),
            work.path().join("audit").display(),
        ),
    )?;
    let log = work.path().join("proxy.log");
    let mut proxy = Command::new(&proxy_bin)
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    wait_for_port(port, &log)?;

    let script = work.path().join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n")?;
    use secrecy::ExposeSecret;
    let direct = Target {
        port: cluster.port(),
        user: app.username.clone(),
        password: app.password.expose_secret().to_string(),
    };
    let via_proxy = Target {
        port,
        user: "alice@example.com".into(),
        password: token,
    };
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let direct_ms = connect_ms(&direct, &cluster.ca_cert(), &script, seconds)?;
        let proxy_ms = connect_ms(&via_proxy, &cluster.ca_cert(), &script, seconds)?;
        eprintln!("direct {direct_ms:.2} ms, proxy {proxy_ms:.2} ms");
        d.push(direct_ms);
        p.push(proxy_ms);
    }
    let (d, p) = (median(d), median(p));
    println!("pgbench -C (new TLS connection per `SELECT 1`), {seconds} s x {rounds} rounds (median), grant {}\n", grant.id);
    println!("| login | connection set-up | vs direct |");
    println!("|---|---:|---:|");
    println!("| PostgreSQL direct, SCRAM-SHA-256 over TLS | {d:.2} ms | 1.00 |");
    println!(
        "| dbgw proxy, OIDC token over TLS (person role upstream) | {p:.2} ms | {:.2} |",
        p / d
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    Ok(())
}

struct Target {
    port: u16,
    user: String,
    password: String,
}

/// pgbench's "average connection time" in ms.
fn connect_ms(t: &Target, ca: &Path, script: &Path, seconds: u64) -> anyhow::Result<f64> {
    let out = Command::new(dbgw_db::cluster::pg_bin("pgbench")?)
        .env_clear()
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", t.port.to_string())
        .env("PGUSER", &t.user)
        .env("PGPASSWORD", &t.password)
        .env("PGDATABASE", "rates")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", ca)
        .args(["-n", "-C", "-c", "1", "-T", &seconds.to_string(), "-f"])
        .arg(script)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("average connection time = "))
        .context("no connection time in pgbench's output")?;
    Ok(line["average connection time = ".len()..]
        .split_whitespace()
        .next()
        .context("no number")?
        .parse()?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn wait_for_port(port: u16, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the proxy did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
