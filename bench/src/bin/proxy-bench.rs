//! `proxy-bench`: what the audit proxy costs, next to the alternatives, in one run.
//!
//! pgbench (select-only, prepared protocol) against, in turn:
//! - PostgreSQL directly;
//! - socat, a zero-work TCP relay: the floor for any proxy on this machine;
//! - pgbouncer in session mode;
//! - the dbgw proxy with the audit log on, buffered and fsync durability (and buffered with
//!   one session thread, as pgbouncer has one process);
//! - the proxy and pgbouncer with TLS towards the database, as in production.
//!
//! Each contender runs at 8 clients and at 1 client, several rounds in rotating order; the
//! table shows medians. Run it with `make bench-proxy` (it builds the release proxy first).
//!
//! `--instructions` runs pgbouncer and the proxy (one session thread) under valgrind's
//! callgrind instead, and prints the instructions each executes per transaction: a count
//! that does not depend on what else the machine is doing, for comparing builds. With
//! `BENCH_CALLGRIND_KEEP=DIR` the callgrind files are kept there for `callgrind_annotate`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dbgw_db::Cluster;
use secret_store::{DbCredentials, FileStore, SecretStore};

const BENCH_PASSWORD_SECRET: &str = "dbgw/bench";

struct Args {
    seconds: u64,
    rounds: usize,
    scale: u32,
    instructions: bool,
}

/// Where callgrind writes, when intermediaries run under it (`--instructions`).
static CALLGRIND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A command for an intermediary: the binary itself, or under callgrind.
fn launch(bin: &Path) -> Command {
    match CALLGRIND.get() {
        None => Command::new(bin),
        Some(dir) => {
            let mut cmd = Command::new("valgrind");
            cmd.arg("--tool=callgrind")
                .arg(format!(
                    "--callgrind-out-file={}/callgrind.%p",
                    dir.display()
                ))
                .arg(bin);
            cmd
        }
    }
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seconds: 5,
        rounds: 3,
        scale: 10,
        instructions: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("flag needs a value");
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--scale" => a.scale = value()?.parse()?,
            "--instructions" => a.instructions = true,
            "--help" | "-h" => {
                println!(
                    "proxy-bench [--seconds N (5)] [--rounds N (3)] [--scale N (10)] [--instructions]\n\n\
                     pgbench -S -M prepared at 8 and 1 clients against PostgreSQL, socat,\n\
                     pgbouncer (session mode) and the dbgw proxy; prints a markdown table.\n\
                     --instructions: pgbouncer and the proxy under callgrind, instructions per\n\
                     transaction (needs valgrind)."
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// Something pgbench can connect to.
struct Contender {
    name: &'static str,
    port: u16,
    /// The process whose CPU time is charged to it (none for direct).
    process: Option<Child>,
}

#[derive(Default, Clone)]
struct Sample {
    tps: f64,
    latency_ms: f64,
    cpu_us_per_tx: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let tools = ["pgbench", "socat", "pgbouncer"];
    for tool in tools {
        if which(tool).is_none() && dbgw_db::cluster::pg_bin(tool).is_err() {
            bail!("{tool} is not installed: apt-get install -y postgresql-contrib socat pgbouncer");
        }
    }
    let proxy_bin = sibling("proxy")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = Cluster::start()?;
    let work = tempfile::tempdir()?;
    make_traversable(work.path())?;
    if args.instructions {
        let dir = work.path().join("callgrind");
        std::fs::create_dir_all(&dir)?;
        // pgbouncer runs as postgres and writes its dumps here too.
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&dir)?.permissions(),
            0o1777,
        );
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
        let _ = CALLGRIND.set(dir);
    }

    // A bench role and database, initialised by pgbench itself.
    let password = secret_store::generate_password();
    runtime.block_on(async {
        let admin = cluster.connect("postgres").await?;
        admin.batch_execute("CREATE ROLE bench LOGIN").await?;
        admin
            .batch_execute("CREATE DATABASE bench OWNER bench")
            .await?;
        dbgw_db::schema::set_password(&admin, "bench", &password).await
    })?;
    let creds = DbCredentials::new("bench", password.clone());
    let store = SecretStore::File(FileStore::new(work.path().join("secrets")));
    runtime.block_on(store.put_db_credentials(BENCH_PASSWORD_SECRET, &creds))?;
    let init = pgbench_cmd(cluster.port(), &password)
        .args(["-i", "-q", "-s", &args.scale.to_string()])
        .output()?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }

    if args.instructions {
        return instructions(&cluster, &proxy_bin, work.path(), &password);
    }
    let mut contenders = vec![Contender {
        name: "PostgreSQL direct",
        port: cluster.port(),
        process: None,
    }];
    contenders.push(socat(cluster.port())?);
    contenders.push(pgbouncer(&cluster, work.path(), &password, false)?);
    contenders.push(pgbouncer(&cluster, work.path(), &password, true)?);
    // Default session threads (one per core), and once with one thread, as pgbouncer has
    // one process: its CPU per statement is the like-for-like comparison.
    for (name, durability, tls, threads) in [
        ("dbgw proxy, audit buffered", "buffered", false, 0),
        ("dbgw proxy, audit buffered, 1 thread", "buffered", false, 1),
        ("dbgw proxy, audit fsync", "fsync", false, 0),
        ("dbgw proxy, audit buffered, TLS to db", "buffered", true, 0),
    ] {
        contenders.push(proxy(
            &proxy_bin,
            &cluster,
            work.path(),
            name,
            durability,
            tls,
            threads,
        )?);
    }
    for c in &contenders {
        wait_for_port(c.port)?;
    }

    let clients = [8u32, 1];
    // samples[contender][clients] = one Sample per round.
    let mut samples = vec![vec![Vec::<Sample>::new(); clients.len()]; contenders.len()];
    for round in 0..args.rounds {
        for (ci, &c) in clients.iter().enumerate() {
            for k in 0..contenders.len() {
                let i = (k + round) % contenders.len();
                let s = measure(&contenders[i], &password, c, args.seconds)?;
                eprintln!(
                    "round {} clients {c} {:<40} {:>8.0} tps {:>7.3} ms",
                    round + 1,
                    contenders[i].name,
                    s.tps,
                    s.latency_ms
                );
                samples[i][ci].push(s);
            }
        }
    }

    print_table(&contenders, &clients, &samples, &args);
    for c in &mut contenders {
        if let Some(p) = c.process.as_mut() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
    Ok(())
}

fn print_table(
    contenders: &[Contender],
    clients: &[u32],
    samples: &[Vec<Vec<Sample>>],
    args: &Args,
) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "pgbench -S -M prepared, scale {}, {} s x {} rounds (median), {} CPUs\n",
        args.scale, args.seconds, args.rounds, cpus
    );
    println!("| target | clients | TPS | vs direct | vs socat | mean latency | added latency | CPU per statement |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (ci, &c) in clients.iter().enumerate() {
        let med = |i: usize| median(&samples[i][ci]);
        let direct = med(0);
        let socat = med(1);
        for (i, contender) in contenders.iter().enumerate() {
            let s = med(i);
            let cpu = s
                .cpu_us_per_tx
                .map(|v| format!("{v:.1} µs"))
                .unwrap_or_else(|| "-".into());
            println!(
                "| {} | {c} | {:.0} | {:.2} | {:.2} | {:.1} µs | {:+.1} µs | {cpu} |",
                contender.name,
                s.tps,
                s.tps / direct.tps,
                s.tps / socat.tps,
                s.latency_ms * 1000.0,
                (s.latency_ms - direct.latency_ms) * 1000.0,
            );
        }
    }
}

fn median(v: &[Sample]) -> Sample {
    let mut tps: Vec<f64> = v.iter().map(|s| s.tps).collect();
    let mut lat: Vec<f64> = v.iter().map(|s| s.latency_ms).collect();
    let mut cpu: Vec<f64> = v.iter().filter_map(|s| s.cpu_us_per_tx).collect();
    let mid = |x: &mut Vec<f64>| {
        x.sort_by(f64::total_cmp);
        x.get(x.len() / 2).copied()
    };
    Sample {
        tps: mid(&mut tps).unwrap_or(0.0),
        latency_ms: mid(&mut lat).unwrap_or(0.0),
        cpu_us_per_tx: mid(&mut cpu),
    }
}

fn measure(c: &Contender, password: &str, clients: u32, seconds: u64) -> anyhow::Result<Sample> {
    let cpu_before = c.process.as_ref().map(|p| cpu_ticks(p.id())).transpose()?;
    let out = pgbench_cmd(c.port, password)
        .args(["-n", "-S", "-M", "prepared"])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(["-T", &seconds.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench against {} failed: {}{}",
            c.name,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |prefix: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no `{prefix}` in pgbench output"))?;
        let number = line[prefix.len()..]
            .split_whitespace()
            .next()
            .context("no number")?;
        Ok(number.parse()?)
    };
    let tps = field("tps = ")?;
    let latency_ms = field("latency average = ")?;
    let transactions = field("number of transactions actually processed: ")?;
    let cpu_us_per_tx = match (cpu_before, c.process.as_ref()) {
        (Some(before), Some(p)) => {
            // socat's per-connection children are counted once reaped.
            std::thread::sleep(Duration::from_millis(300));
            let after = cpu_ticks(p.id())?;
            let ticks_per_sec = unsafe { libc_sysconf_clk_tck() } as f64;
            Some((after - before) as f64 / ticks_per_sec * 1e6 / transactions)
        }
        _ => None,
    };
    Ok(Sample {
        tps,
        latency_ms,
        cpu_us_per_tx,
    })
}

/// User + system CPU ticks of a process and its reaped children (socat forks per client).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14-17 (1-based, counting pid and comm): utime stime cutime cstime.
    let sum: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(sum)
}

unsafe fn libc_sysconf_clk_tck() -> i64 {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    const SC_CLK_TCK: i32 = 2;
    sysconf(SC_CLK_TCK)
}

fn pgbench_cmd(port: u16, password: &str) -> Command {
    let mut cmd =
        Command::new(dbgw_db::cluster::pg_bin("pgbench").unwrap_or_else(|_| "pgbench".into()));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "bench")
        .env("PGPASSWORD", password)
        .env("PGDATABASE", "bench")
        // The client leg is plaintext for every contender, as with socat.
        .env("PGSSLMODE", "disable");
    cmd
}

fn socat(upstream: u16) -> anyhow::Result<Contender> {
    let port = dbgw_db::cluster::free_port()?;
    let child = Command::new("socat")
        .arg(format!("TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1"))
        .arg(format!("TCP:127.0.0.1:{upstream}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting socat")?;
    Ok(Contender {
        name: "socat (zero-work relay)",
        port,
        process: Some(child),
    })
}

fn pgbouncer(
    cluster: &Cluster,
    work: &Path,
    password: &str,
    tls: bool,
) -> anyhow::Result<Contender> {
    let port = dbgw_db::cluster::free_port()?;
    let dir = work.join(format!("pgbouncer-{port}"));
    std::fs::create_dir_all(&dir)?;
    let server_tls = if tls {
        format!(
            "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\n",
            cluster.ca_cert().display()
        )
    } else {
        "server_tls_sslmode = disable\n".to_string()
    };
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\nbench = host=127.0.0.1 port={} dbname=bench\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {}/users.txt\npool_mode = session\n\
             max_client_conn = 200\ndefault_pool_size = 50\nlogfile = {}/pgbouncer.log\n{server_tls}",
            cluster.port(),
            dir.display(),
            dir.display()
        ),
    )?;
    std::fs::write(dir.join("users.txt"), format!("\"bench\" \"{password}\"\n"))?;
    chown_postgres(&dir)?;
    let mut cmd = launch(&which("pgbouncer").context("pgbouncer not installed")?);
    cmd.arg(dir.join("pgbouncer.ini"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // pgbouncer refuses to run as root.
    if let Some((uid, gid)) = postgres_ids() {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    Ok(Contender {
        name: if tls {
            "pgbouncer session, TLS to db"
        } else {
            "pgbouncer session mode"
        },
        port,
        process: Some(cmd.spawn().context("starting pgbouncer")?),
    })
}

fn proxy(
    bin: &Path,
    cluster: &Cluster,
    work: &Path,
    name: &'static str,
    durability: &str,
    tls: bool,
    threads: usize,
) -> anyhow::Result<Contender> {
    let port = dbgw_db::cluster::free_port()?;
    let dir = work.join(format!("proxy-{port}"));
    std::fs::create_dir_all(&dir)?;
    let upstream_tls = if tls { "verify-full" } else { "disable" };
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{}\"\n\
             worker_threads = {threads}\n\
             [tls]\nplaintext = \"loopback\"\n\
             [upstream]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{upstream_tls}\"\nca_file = \"{}\"\n\
             [services]\nbench = \"{BENCH_PASSWORD_SECRET}\"\n\
             [secrets]\ndir = \"{}\"\n\
             [audit]\ndir = \"{}\"\ndurability = \"{durability}\"\n\
             [log]\nlevel = \"warn\"\n",
            dbgw_db::cluster::free_port()?,
            cluster.port(),
            cluster.ca_cert().display(),
            work.join("secrets").display(),
            dir.join("audit").display(),
        ),
    )?;
    let child = launch(bin)
        .arg("--config")
        .arg(dir.join("proxy.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("proxy.log"))?)
        .spawn()
        .context("starting the proxy")?;
    Ok(Contender {
        name,
        port,
        process: Some(child),
    })
}

/// `--instructions`: instructions per transaction of pgbouncer and of the proxy (one
/// session thread, buffered audit), each under callgrind: two runs of 1-client pgbench
/// (`-t 500` and `-t 2500`, each after the same warm-up) in fresh processes, and the
/// difference divided by the 2000 extra transactions, so start-up and shutdown cancel out.
fn instructions(
    cluster: &Cluster,
    proxy_bin: &Path,
    work: &Path,
    password: &str,
) -> anyhow::Result<()> {
    let (short, long) = (500u64, 2500u64);
    let mut rows = Vec::new();
    for which in ["pgbouncer", "proxy"] {
        let mut totals = Vec::new();
        let mut name = "";
        for transactions in [short, long] {
            let c = match which {
                "pgbouncer" => pgbouncer(cluster, work, password, false)?,
                _ => proxy(
                    proxy_bin,
                    cluster,
                    work,
                    "dbgw proxy, audit buffered, 1 thread",
                    "buffered",
                    false,
                    1,
                )?,
            };
            let mut process = c.process.context("a process")?;
            let pid = process.id();
            if let Err(e) = wait_for_port_within(c.port, Duration::from_secs(120)) {
                let log = work.join(format!("proxy-{}", c.port)).join("proxy.log");
                bail!("{e}: {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            for t in [20, transactions] {
                let out = pgbench_cmd(c.port, password)
                    .args([
                        "-n",
                        "-S",
                        "-M",
                        "prepared",
                        "-c",
                        "1",
                        "-t",
                        &t.to_string(),
                    ])
                    .output()?;
                if !out.status.success() {
                    bail!(
                        "pgbench against {}: {}",
                        c.name,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            // A clean exit makes callgrind write its counts.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            process.wait()?;
            totals.push(callgrind_total(CALLGRIND.get().expect("set"), pid)?);
            if let Ok(keep) = std::env::var("BENCH_CALLGRIND_KEEP") {
                let from = CALLGRIND
                    .get()
                    .expect("set")
                    .join(format!("callgrind.{pid}"));
                std::fs::copy(
                    from,
                    Path::new(&keep).join(format!("{which}.{transactions}")),
                )?;
            }
            name = c.name;
        }
        rows.push((name, totals[1].saturating_sub(totals[0]) / (long - short)));
    }
    println!(
        "pgbench -S -M prepared, 1 client, under callgrind: (instructions at {long} - at {short} \
         transactions) / {}\n",
        long - short
    );
    println!("| target | instructions per transaction |");
    println!("|---|---:|");
    for (name, per) in rows {
        println!("| {name} | {per} |");
    }
    Ok(())
}

/// The instructions callgrind counted in process `pid` (its dump's `summary:` line).
fn callgrind_total(dir: &Path, pid: u32) -> anyhow::Result<u64> {
    let path = dir.join(format!("callgrind.{pid}"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .or_else(|| text.lines().find_map(|l| l.strip_prefix("totals: ")))
        .context("no summary in the callgrind dump")?;
    Ok(summary
        .split_whitespace()
        .next()
        .context("empty summary")?
        .parse()?)
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    wait_for_port_within(port, Duration::from_secs(10))
}

fn wait_for_port_within(port: u16, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A binary built next to this one (`target/release/proxy`).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p {name}`",
            path.display()
        );
    }
    Ok(path)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .chain([Path::new("/usr/sbin").join(name)])
        .find(|p| p.is_file())
}

fn postgres_ids() -> Option<(u32, u32)> {
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    // Only switch users when we are root.
    let me = Command::new("id").arg("-u").output().ok()?;
    (String::from_utf8_lossy(&me.stdout).trim() == "0").then_some((uid, gid))
}

fn chown_postgres(dir: &Path) -> anyhow::Result<()> {
    if let Some((uid, gid)) = postgres_ids() {
        Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(dir)
            .status()?;
    }
    Ok(())
}

fn make_traversable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
