//! `rates-api-bench`: one run measures the rates API over HTTP and the same SQL sent
//! directly to PostgreSQL, on a throwaway cluster, and prints a markdown table.
//!
//! 1. Starts a throwaway cluster (TLS, SCRAM, the rates data) and gives `rates_api` a
//!    password in a temporary file secret store.
//! 2. Starts the release `rates-api` binary against it (logs at `info` to a file, so the
//!    per-request log line is part of the cost), warms up, and runs
//!    `wrk -t2 -c64 -d10s --latency` on a month of CNGGZ -> EETLL.
//! 3. Stops the service, then runs the service's own SQL (`rates_api::db::RATES_SQL`) with
//!    the same parameters through `pgbench -n -c 64 -j 2 -T 10 -M prepared` over TLS as the
//!    same role, and takes p50/p99 from pgbench's per-transaction log.
//!
//! Run with `cargo run --release -p dbgw-bench --bin rates-api-bench`. Options:
//! `--seconds N` (10), `--connections N` (64), `--threads N` (2), `--pool-size N` and
//! `--workers N` (the service's `database.pool_size` and `worker_threads`; its defaults when
//! not given), `--warmup N` seconds (3), `--no-cache` (turn the service's answer cache off,
//! so every request runs the query), `--through-proxy` (also run rates-api with its pool
//! connected through the release dbgw proxy, audit on, buffered: the end-to-end cost of the
//! audit; use it with `--no-cache`, or the answer cache hides the database).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dbgw_db::Cluster;
use secret_store::{FileStore, SecretStore};

const SECRET_ID: &str = "dbgw/rates-api";
const FROM: &str = "2021-01-01";
const TO: &str = "2021-01-31";
const ORIG: &str = "CNGGZ";
const DEST: &str = "EETLL";

struct Args {
    seconds: u32,
    connections: u32,
    threads: u32,
    pool_size: Option<u32>,
    workers: Option<u32>,
    warmup: u32,
    cache: bool,
    through_proxy: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 10,
        connections: 64,
        threads: 2,
        pool_size: None,
        workers: None,
        warmup: 3,
        cache: true,
        through_proxy: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<u32> {
            it.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = value()?,
            "--connections" => a.connections = value()?,
            "--threads" => a.threads = value()?,
            "--pool-size" => a.pool_size = Some(value()?),
            "--workers" => a.workers = Some(value()?),
            "--warmup" => a.warmup = value()?,
            "--no-cache" => a.cache = false,
            "--through-proxy" => a.through_proxy = true,
            "-h" | "--help" => {
                println!(
                    "rates-api-bench [--seconds N] [--connections N] [--threads N] \
                     [--pool-size N] [--workers N] [--warmup N] [--no-cache] [--through-proxy]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (see --help)"),
        }
    }
    Ok(a)
}

/// One row of the result table.
struct Row {
    name: String,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    /// CPU time per request in rates-api and in this cluster's PostgreSQL processes, µs.
    app_cpu_us: Option<f64>,
    db_cpu_us: f64,
    /// ... and in the dbgw proxy, when the service goes through it.
    proxy_cpu_us: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    require_wrk()?;
    let server_bin = rates_api_binary()?;
    let work = tempfile::tempdir()?;

    eprintln!("starting a throwaway cluster...");
    let cluster = Cluster::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let creds = runtime.block_on(async {
        let creds = cluster.login_for("rates_api").await?;
        let store = SecretStore::File(FileStore::new(work.path().join("secrets")));
        store.put_db_credentials(SECRET_ID, &creds).await?;
        anyhow::Ok(creds)
    })?;

    let port = dbgw_db::cluster::free_port()?;
    let log_path = work.path().join("rates-api.log");
    let database = (cluster.host().to_string(), cluster.port(), true);
    let mut server = rates_api_command(
        &server_bin,
        &args,
        work.path(),
        port,
        &database,
        &cluster.ca_cert(),
        &log_path,
    )?;
    let server = Server(server.spawn().context("starting rates-api")?);
    wait_ready(port)?;

    let url = format!(
        "http://127.0.0.1:{port}/rates?date_from={FROM}&date_to={TO}&orig_code={ORIG}&dest_code={DEST}"
    );
    check_answer(port, &url)?;
    eprintln!("warming up rates-api ({} s)...", args.warmup);
    wrk(&url, &args, args.warmup)?;
    eprintln!("wrk against rates-api ({} s)...", args.seconds);
    let postmaster = postmaster_pid(&cluster)?;
    let (app_before, db_before) = (cpu_ticks(server.0.id())?, cluster_cpu_ticks(postmaster)?);
    let mut http = wrk(&url, &args, args.seconds)?;
    let (app_after, db_after) = (cpu_ticks(server.0.id())?, cluster_cpu_ticks(postmaster)?);
    http.app_cpu_us = Some(per_request_us(app_after - app_before, http.requests));
    http.db_cpu_us = per_request_us(db_after.saturating_sub(db_before), http.requests);
    http.name = if args.cache {
        "rates-api via HTTP (answer cache on)".into()
    } else {
        "rates-api via HTTP (cache off)".into()
    };
    let pool_size = pool_size_of(port).unwrap_or_default();
    server.stop()?;
    let mut rows = vec![http];
    if args.through_proxy {
        rows.push(through_proxy(
            &server_bin,
            &args,
            work.path(),
            &cluster,
            postmaster,
        )?);
    }

    eprintln!("pgbench, same query ({} s)...", args.seconds);
    let script = work.path().join("rates.sql");
    std::fs::write(&script, pgbench_script())?;
    let mut env = cluster.libpq_env(&creds);
    env.push(("PGDATABASE".into(), "rates".into()));
    pgbench(&script, &env, &args, args.warmup, None)?;
    let logs = work.path().join("pgbench-log");
    std::fs::create_dir_all(&logs)?;
    let db_before = cluster_cpu_ticks(postmaster)?;
    let mut direct = pgbench(&script, &env, &args, args.seconds, Some(&logs))?;
    let db_after = cluster_cpu_ticks(postmaster)?;
    direct.db_cpu_us = per_request_us(db_after.saturating_sub(db_before), direct.requests);

    rows.push(direct);
    print_report(&args, &rows, pool_size, &server_bin)?;
    drop(cluster);
    Ok(())
}

/// The rates-api command: listening on `port`, its pool to `database` (host, port, TLS).
fn rates_api_command(
    server_bin: &Path,
    args: &Args,
    work: &Path,
    port: u16,
    database: &(String, u16, bool),
    ca_file: &Path,
    log_path: &Path,
) -> anyhow::Result<Command> {
    let mut server = Command::new(server_bin);
    server
        .env("RATES_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("RATES_API_DATABASE__HOST", &database.0)
        .env("RATES_API_DATABASE__PORT", database.1.to_string())
        .env(
            "RATES_API_DATABASE__TLS",
            if database.2 { "verify-full" } else { "disable" },
        )
        .env("RATES_API_DATABASE__CA_FILE", ca_file)
        .env("RATES_API_DATABASE__SECRET", SECRET_ID)
        .env("RATES_API_SECRETS__DIR", work.join("secrets"))
        .env("RATES_API_LOG__LEVEL", "info")
        .env("RATES_API_API__CACHE", args.cache.to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log_path)?);
    if let Some(n) = args.pool_size {
        server.env("RATES_API_DATABASE__POOL_SIZE", n.to_string());
    }
    if let Some(n) = args.workers {
        server.env("RATES_API_WORKER_THREADS", n.to_string());
    }
    Ok(server)
}

/// rates-api with its pool through the release dbgw proxy (plaintext on loopback to the
/// proxy, verified TLS from the proxy to the database, audit buffered), under wrk.
fn through_proxy(
    server_bin: &Path,
    args: &Args,
    work: &Path,
    cluster: &Cluster,
    postmaster: u32,
) -> anyhow::Result<Row> {
    let proxy_bin = server_bin.with_file_name("proxy");
    anyhow::ensure!(
        proxy_bin.is_file(),
        "{} not found: build it with `cargo build --release -p proxy`",
        proxy_bin.display()
    );
    let proxy_port = dbgw_db::cluster::free_port()?;
    let dir = work.join("proxy");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "listen = \"127.0.0.1:{proxy_port}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
             [tls]\nplaintext = \"loopback\"\n\
             [upstream]\nhost = \"{}\"\nport = {}\ntls = \"verify-full\"\nca_file = \"{}\"\n\
             [services]\nrates_api = \"{SECRET_ID}\"\n\
             [secrets]\ndir = \"{}\"\n\
             [audit]\ndir = \"{}\"\n\
             [log]\nlevel = \"warn\"\n",
            dbgw_db::cluster::free_port()?,
            cluster.host(),
            cluster.port(),
            cluster.ca_cert().display(),
            work.join("secrets").display(),
            dir.join("audit").display(),
        ),
    )?;
    let proxy = Server(
        Command::new(&proxy_bin)
            .arg("--config")
            .arg(dir.join("proxy.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("proxy.log"))?)
            .spawn()
            .context("starting the proxy")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = dbgw_db::cluster::free_port()?;
    let database = ("127.0.0.1".to_string(), proxy_port, false);
    let server = Server(
        rates_api_command(
            server_bin,
            args,
            work,
            port,
            &database,
            &cluster.ca_cert(),
            &work.join("rates-api-proxied.log"),
        )?
        .spawn()
        .context("starting rates-api")?,
    );
    wait_ready(port)?;
    let url = format!(
        "http://127.0.0.1:{port}/rates?date_from={FROM}&date_to={TO}&orig_code={ORIG}&dest_code={DEST}"
    );
    check_answer(port, &url)?;
    eprintln!(
        "warming up rates-api through the proxy ({} s)...",
        args.warmup
    );
    wrk(&url, args, args.warmup)?;
    eprintln!(
        "wrk against rates-api through the proxy ({} s)...",
        args.seconds
    );
    let before = (
        cpu_ticks(server.0.id())?,
        cpu_ticks(proxy.0.id())?,
        cluster_cpu_ticks(postmaster)?,
    );
    let mut row = wrk(&url, args, args.seconds)?;
    let after = (
        cpu_ticks(server.0.id())?,
        cpu_ticks(proxy.0.id())?,
        cluster_cpu_ticks(postmaster)?,
    );
    row.app_cpu_us = Some(per_request_us(after.0 - before.0, row.requests));
    row.proxy_cpu_us = Some(per_request_us(after.1 - before.1, row.requests));
    row.db_cpu_us = per_request_us(after.2.saturating_sub(before.2), row.requests);
    row.name = format!(
        "rates-api via HTTP through the dbgw proxy (audit buffered, {})",
        if args.cache {
            "answer cache on"
        } else {
            "cache off"
        }
    );
    server.stop()?;
    proxy.stop()?;
    Ok(row)
}

/// The release binary beside this one, rebuilt first when run through cargo.
fn rates_api_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("rates-api");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let profile_dir = path.parent().and_then(Path::file_name);
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "rates-api", "--bin", "rates-api"]);
        if profile_dir.is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().context("building rates-api")?;
        anyhow::ensure!(status.success(), "building rates-api failed");
    }
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p rates-api`",
            path.display()
        );
    }
    Ok(path)
}

/// SIGTERM on drop, so the server never outlives the benchmark.
struct Server(Child);

impl Server {
    fn stop(mut self) -> anyhow::Result<()> {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let status = self.0.wait()?;
        anyhow::ensure!(status.success(), "exited with {status}");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wrk(url: &str, args: &Args, seconds: u32) -> anyhow::Result<Row> {
    let out = Command::new("wrk")
        .args(["-t", &args.threads.to_string()])
        .args(["-c", &args.connections.to_string()])
        .args(["-d", &format!("{seconds}s")])
        .arg("--latency")
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text)
}

/// Requests/s and latency percentiles from `wrk --latency` output. Errors and non-2xx
/// answers fail the run: a fast error is not a result.
fn parse_wrk(text: &str) -> anyhow::Result<Row> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("wrk saw failures ({}):\n{text}", line.trim());
    }
    let percentile = |p: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(p))
            .with_context(|| format!("no {p} line in wrk output:\n{text}"))?;
        parse_wrk_duration(line.split_whitespace().nth(1).unwrap_or(""))
    };
    let per_second: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?
        .trim()
        .parse()?;
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(Row {
        name: "rates-api via HTTP".into(),
        per_second,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        requests,
        app_cpu_us: None,
        db_cpu_us: 0.0,
        proxy_cpu_us: None,
    })
}

/// `812.00us`, `1.23ms`, `2.01s`, `1.5m` in milliseconds.
fn parse_wrk_duration(s: &str) -> anyhow::Result<f64> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in `{s}`"))?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .with_context(|| format!("bad number `{s}`"))?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unknown unit in `{s}`"),
    })
}

/// The service's statement with pgbench variables for its parameters; with `-M prepared`
/// pgbench turns them back into `$n` parameters of one prepared statement.
fn pgbench_script() -> String {
    let sql = rates_api::db::RATES_SQL
        .replace("$1", ":date_from")
        .replace("$2", ":date_to")
        .replace("$3", ":orig_code")
        .replace("$4", ":dest_code");
    format!("{sql};\n")
}

fn pgbench(
    script: &Path,
    env: &[(String, String)],
    args: &Args,
    seconds: u32,
    log_dir: Option<&Path>,
) -> anyhow::Result<Row> {
    let mut cmd =
        Command::new(dbgw_db::cluster::pg_bin("pgbench").unwrap_or_else(|_| "pgbench".into()));
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .args(["-n", "-M", "prepared"])
        .args(["-c", &args.connections.to_string()])
        .args(["-j", &args.threads.to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-f")
        .arg(script);
    for (name, value) in [
        ("date_from", FROM),
        ("date_to", TO),
        ("orig_code", ORIG),
        ("dest_code", DEST),
    ] {
        cmd.args(["-D", &format!("{name}={value}")]);
    }
    if let Some(dir) = log_dir {
        cmd.arg("-l")
            .arg(format!("--log-prefix={}", dir.join("pgbench").display()));
    }
    let out = cmd.output().context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        failed == 0,
        "pgbench saw {failed} failed transactions:\n{text}"
    );
    let tps: f64 = text
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps in pgbench output:\n{text}"))?;
    let (p50_ms, p99_ms, requests) = match log_dir {
        Some(dir) => latency_from_logs(dir)?,
        None => (0.0, 0.0, 0),
    };
    Ok(Row {
        name: "direct SELECT (pgbench)".into(),
        per_second: tps,
        p50_ms,
        p99_ms,
        requests,
        app_cpu_us: None,
        db_cpu_us: 0.0,
        proxy_cpu_us: None,
    })
}

/// Percentiles of the per-transaction latencies (third field, microseconds) of every
/// pgbench log file in `dir`.
fn latency_from_logs(dir: &Path) -> anyhow::Result<(f64, f64, u64)> {
    let mut micros: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            let field = line
                .split_whitespace()
                .nth(2)
                .with_context(|| format!("bad pgbench log line `{line}`"))?;
            micros.push(field.parse()?);
        }
    }
    anyhow::ensure!(!micros.is_empty(), "pgbench wrote no transaction log");
    micros.sort_unstable();
    let at = |q: f64| {
        // Nearest-rank percentile.
        let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
        micros[rank - 1] as f64 / 1000.0
    };
    Ok((at(0.50), at(0.99), micros.len() as u64))
}

fn print_report(
    args: &Args,
    rows: &[Row],
    pool_size: u64,
    server_bin: &Path,
) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let pg = Command::new(dbgw_db::cluster::pg_bin("postgres")?)
        .arg("--version")
        .output()?;
    println!(
        "{} x {cpu_model}, {}; rates-api {} (pool {pool_size}); \
         {} s per run after {} s warm-up, {} connections, {} threads\n",
        cpus,
        String::from_utf8_lossy(&pg.stdout).trim(),
        server_bin.display(),
        args.seconds,
        args.warmup,
        args.connections,
        args.threads,
    );
    println!(
        "| {ORIG} -> {DEST}, {FROM} .. {TO} | req/s | p50 ms | p99 ms | requests \
         | CPU/req rates-api µs | CPU/req proxy µs | CPU/req PostgreSQL µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let us = |v: Option<f64>| v.map_or("-".to_string(), |us| format!("{us:.0}"));
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {:.0} |",
            r.name,
            r.per_second,
            r.p50_ms,
            r.p99_ms,
            r.requests,
            us(r.app_cpu_us),
            us(r.proxy_cpu_us),
            r.db_cpu_us
        );
    }
    Ok(())
}

/// The answer is the expected one before it is measured: 31 days, the worked example in it.
fn check_answer(port: u16, url: &str) -> anyhow::Result<()> {
    let path = url
        .split_once(&format!(":{port}"))
        .map(|(_, p)| p)
        .unwrap_or("/");
    let (status, body) = http_get(port, path)?;
    anyhow::ensure!(status == 200, "rates answered {status}: {body}");
    anyhow::ensure!(
        body.matches("\"day\"").count() == 31
            && body.contains(r#"{"count":3,"day":"2021-01-05","price":1154.0}"#),
        "unexpected rates answer: {body}"
    );
    Ok(())
}

fn pool_size_of(port: u16) -> Option<u64> {
    let (_, body) = http_get(port, "/metrics").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("dbgw_rates_api_db_pool_connections "))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_ready(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http_get(port, "/health/ready") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("rates-api not ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 GET (the service closes the connection after `Connection: close`).
fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn require_wrk() -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("wrk").is_file()));
    if !found {
        bail!("`wrk` not found: install it with `sudo apt-get install -y wrk`");
    }
    Ok(())
}

/// User + system CPU of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields = stat_fields(&stat)?;
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// The fields after `pid (comm)`: index 0 is the state, 1 the parent pid, 11 and 12 the
/// user and system time, 13 and 14 those of reaped children.
fn stat_fields(stat: &str) -> anyhow::Result<Vec<&str>> {
    let rest = &stat[stat.rfind(')').context("bad /proc stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    anyhow::ensure!(fields.len() > 14, "short /proc stat");
    Ok(fields)
}

fn postmaster_pid(cluster: &Cluster) -> anyhow::Result<u32> {
    let pidfile = cluster.root().join("data/postmaster.pid");
    let text = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("reading {}", pidfile.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().parse()?)
}

/// CPU of this cluster's postmaster and its children (backends, background workers), so
/// other clusters on the machine do not count.
fn cluster_cpu_ticks(postmaster: u32) -> anyhow::Result<u64> {
    // Exited backends (pgbench's, at its end) are counted in the postmaster's reaped-children
    // time (cutime, cstime).
    let stat = std::fs::read_to_string(format!("/proc/{postmaster}/stat"))?;
    let own = stat_fields(&stat)?;
    let mut total: u64 = own[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Ok(fields) = stat_fields(&stat) {
            if fields[1].parse::<u32>().ok() == Some(postmaster) {
                total +=
                    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

fn per_request_us(ticks: u64, requests: u64) -> f64 {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz * 1e6 / requests.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:3000/rates
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    1.20ms  30.00ms   80.00%
  Latency Distribution
     50%  812.00us
     75%    2.10ms
     90%    3.50ms
     99%    1.02s
  123456 requests in 10.00s, 50.00MB read
Requests/sec:  12345.67
Transfer/sec:      5.00MB
";
        let row = parse_wrk(text).unwrap();
        assert_eq!(row.per_second, 12345.67);
        assert!((row.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(row.p99_ms, 1020.0);
        assert_eq!(row.requests, 123456);
        let failing = format!("{text}  Non-2xx or 3xx responses: 5\n");
        assert!(parse_wrk(&failing).is_err());
    }

    #[test]
    fn the_pgbench_script_is_the_service_query_with_variables() {
        let script = pgbench_script();
        assert!(!script.contains('$'), "{script}");
        assert!(script.contains(":orig_code::text") && script.contains(":date_to::date"));
        assert!(script.trim_end().ends_with(';'));
    }
}
