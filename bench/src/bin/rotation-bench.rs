//! `rotation-bench`: what reading credentials from Secrets Manager costs at steady state.
//!
//! Starts a cluster, moto server (the Secrets Manager emulator) and the proxy in-process with
//! the `aws` secret store, then keeps `--connections` clients (default 200) churning: each
//! reads the service's login from its own cached store (as rates-api does), logs in through
//! the proxy over verified TLS (SCRAM), runs `SELECT 1` and disconnects, again and again for
//! `--seconds`. Prints the login time through the proxy with a cached secret and the
//! Secrets Manager API calls per minute made by the proxy and the clients. Run with
//! `make bench-rotation`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbgw_db::Cluster;
use proxy::server::Server;
use proxy::settings::Settings;
use secrecy::ExposeSecret;
use secret_store::{SecretStore, Stage};
use testkit::Moto;

fn arg(name: &str, default: u64) -> anyhow::Result<u64> {
    Ok(std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(default))
}

fn calls(store: &SecretStore) -> u64 {
    match store {
        SecretStore::Aws(a) => a.api_calls(),
        SecretStore::File(_) => 0,
    }
}

fn main() -> anyhow::Result<()> {
    let seconds = arg("--seconds", 60)?;
    let connections = arg("--connections", 200)? as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(seconds, connections))
}

async fn run(seconds: u64, connections: usize) -> anyhow::Result<()> {
    tls_config::install_provider();
    let cluster = tokio::task::spawn_blocking(Cluster::start).await??;
    let work = tempfile::tempdir()?;
    let moto = Moto::start().await;
    // Default cache settings, as deployed.
    let defaults = secret_store::SecretsSettings::default();
    let proxy_store = moto.store(defaults.cache_ttl_ms);
    let app = cluster.login_for("rates_api").await?;
    proxy_store
        .put_db_credentials("dbgw/rates-api", &app)
        .await?;

    let (cert, key) = cluster.issue_cert(&["127.0.0.1"], work.path(), "proxy")?;
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    settings.tls.cert_file = Some(cert);
    settings.tls.key_file = Some(key);
    settings.upstream.port = cluster.port();
    settings.upstream.ca_file = Some(cluster.ca_cert());
    let client = cluster.client_cert();
    settings.upstream.client_cert_file = Some(client.cert_file);
    settings.upstream.client_key_file = Some(client.key_file);
    settings.audit.dir = work.path().join("audit");
    settings.limits.max_handshakes_per_address = connections * 2;
    let server = Server::bind_with_secrets(settings, proxy_store.clone()).await?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    // The clients' store: one per application process, with its cache.
    let app_store = moto.store(defaults.cache_ttl_ms);
    let tls = tls_config::postgres_connector(Some(&cluster.ca_cert()))?;
    let calls_before = calls(&proxy_store) + calls(&app_store);
    let logins = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (store, tls, logins, failed) = (
            app_store.clone(),
            tls.clone(),
            logins.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let result = async {
                    let (_, creds) = store
                        .db_credentials_at("dbgw/rates-api", Stage::Current)
                        .await?;
                    let mut config = tokio_postgres::Config::new();
                    config
                        .host("127.0.0.1")
                        .port(addr.port())
                        .dbname("rates")
                        .user(&creds.username)
                        .password(creds.password.expose_secret())
                        .ssl_mode(tokio_postgres::config::SslMode::Require);
                    let (client, conn) = config.connect(tls.clone()).await?;
                    let login = t.elapsed();
                    tokio::spawn(conn);
                    client.simple_query("SELECT 1").await?;
                    anyhow::Ok(login)
                }
                .await;
                match result {
                    Ok(login) => {
                        times.push(login);
                        logins.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            times
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await?);
    }
    let elapsed = started.elapsed();
    let api_calls = calls(&proxy_store) + calls(&app_store) - calls_before;
    times.sort();
    anyhow::ensure!(!times.is_empty(), "no login succeeded");
    let pct = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let minutes = elapsed.as_secs_f64() / 60.0;
    println!(
        "{connections} clients churning for {:.0} s (TLS + SCRAM through the proxy, SELECT 1, disconnect); secrets cache {} s",
        elapsed.as_secs_f64(),
        defaults.cache_ttl_ms / 1000
    );
    println!();
    println!("| logins | logins/s | login p50 | login p99 | failed | Secrets Manager calls | calls/minute |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.0} | {:.1} ms | {:.1} ms | {} | {} | {:.1} |",
        logins.load(Ordering::Relaxed),
        logins.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        failed.load(Ordering::Relaxed),
        api_calls,
        api_calls as f64 / minutes
    );
    let _ = stop.send(());
    let _ = served.await;
    Ok(())
}
