//! `proxy-bench`: what the audit proxy costs, next to the alternatives, in one run.
//!
//! Two pgbench workloads, both with the prepared protocol (Bind/Execute/Sync per statement):
//! `-S` (select-only, one statement per transaction) and `-N` (TPC-B-like without the
//! branch and teller updates: BEGIN, UPDATE, SELECT, INSERT, END, five statements with
//! writes). Each runs against, in turn:
//! - PostgreSQL directly;
//! - socat, a zero-work TCP relay: the floor for any proxy on this machine;
//! - pgbouncer in session mode;
//! - the dbgw proxy with the audit log on, buffered and fsync durability (and buffered with
//!   one session thread, as pgbouncer has one process);
//! - the proxy and pgbouncer with TLS towards the database, as in production (`-S` only).
//!
//! Each contender runs at 8 clients and at 1 client, several rounds in rotating order; the
//! tables show medians, with the 99th percentile of latency from pgbench's transaction log
//! (one transaction in ten logged, every row alike). Then, when valgrind is installed,
//! pgbouncer and the proxy (one session thread) run again under callgrind for the
//! instructions each executes per transaction: a count that does not depend on what else
//! the machine is doing, with the proxy's instructions grouped by what they do and its
//! allocations per transaction. Run it with `make bench-proxy` (it builds the release proxy
//! first).
//!
//! - `--instructions`: only the callgrind part, with the functions that cost most (exclusive
//!   and inclusive) for the proxy and pgbouncer. With `BENCH_CALLGRIND_KEEP=DIR` the
//!   callgrind files are kept there for `callgrind_annotate`.
//! - `--syscalls`: system calls per transaction (`strace -c -f`, the difference between two
//!   runs so the login cancels out) and context switches per transaction (without strace),
//!   for pgbouncer and the proxy, at 1 and 8 clients.
//! - `--no-instructions`: only the wall-clock tables.
//! - `--only fsync,pgbouncer`: the wall-clock rows of those intermediaries only (for one
//!   change at a time); PostgreSQL direct and socat always run, the tables compare to them.
//! - `--clients 32,8`: the wall-clock tables at other client counts (group commit's groups
//!   grow with the sessions waiting).
//! - `--flamegraph FILE.svg`: `perf record` of the proxy and of pgbouncer under load, drawn
//!   as flame graphs with inferno, and their CPU time per transaction, kernel (by system
//!   call) and user space (by what the code does).

#[path = "proxy-bench/callgrind.rs"]
mod callgrind;
#[path = "proxy-bench/latency.rs"]
mod latency;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dbgw_db::Cluster;
use secret_store::{DbCredentials, FileStore, SecretStore};

const BENCH_PASSWORD_SECRET: &str = "dbgw/bench";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Wall-clock tables, then instructions per transaction (when valgrind is installed).
    Full,
    WallClock,
    Instructions,
    Syscalls,
    /// `perf record` of the proxy under load, folded into a flame graph (SVG) in this file.
    Flamegraph(&'static str),
}

struct Args {
    seconds: u64,
    rounds: usize,
    scale: u32,
    mode: Mode,
    /// Which workloads (`S`, `N`).
    workloads: Vec<Workload>,
    /// Only the intermediaries whose name contains one of these (direct and socat always run).
    only: Vec<String>,
    /// The wall-clock tables' client counts.
    clients: Vec<u32>,
}

/// A pgbench workload, prepared protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Workload {
    /// pgbench's flag.
    flag: &'static str,
    name: &'static str,
    /// Statements per transaction (each a Bind/Execute/Sync and an audit record pair).
    statements: u64,
    /// Transactions of the short and the long callgrind run.
    short: u64,
    long: u64,
}

const SELECT_ONLY: Workload = Workload {
    flag: "-S",
    name: "select-only",
    statements: 1,
    short: 500,
    long: 2500,
};

const WRITES: Workload = Workload {
    flag: "-N",
    name: "TPC-B-like, no branch or teller updates: BEGIN, UPDATE, SELECT, INSERT, END",
    statements: 5,
    short: 100,
    long: 600,
};

/// Where callgrind writes, when intermediaries run under it.
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
        seconds: 4,
        rounds: 3,
        scale: 10,
        mode: Mode::Full,
        workloads: vec![SELECT_ONLY, WRITES],
        only: Vec::new(),
        clients: vec![8, 1],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("flag needs a value");
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--scale" => a.scale = value()?.parse()?,
            "--instructions" => a.mode = Mode::Instructions,
            "--syscalls" => a.mode = Mode::Syscalls,
            "--no-instructions" => a.mode = Mode::WallClock,
            "--flamegraph" => a.mode = Mode::Flamegraph(value()?.leak()),
            "--only" => a.only = value()?.split(',').map(str::to_string).collect(),
            "--clients" => {
                a.clients = value()?
                    .split(',')
                    .map(|n| match n.parse() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(anyhow::anyhow!("--clients: {n} is not a client count")),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            "--workloads" => {
                a.workloads = value()?
                    .split(',')
                    .map(|w| match w.trim_start_matches('-') {
                        "S" => Ok(SELECT_ONLY),
                        "N" => Ok(WRITES),
                        other => bail!("unknown workload {other} (S or N)"),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            "--help" | "-h" => {
                println!(
                    "proxy-bench [--seconds N (4)] [--rounds N (3)] [--scale N (10)] [--workloads S,N]\n\
                     \x20           [--clients 8,1] [--no-instructions | --instructions | --syscalls]\n\n\
                     pgbench -S and -N (prepared protocol) at 8 and 1 clients against PostgreSQL,\n\
                     socat, pgbouncer (session mode) and the dbgw proxy, then pgbouncer and the\n\
                     proxy under callgrind (instructions per transaction, if valgrind is\n\
                     installed); prints markdown tables.\n\
                     --no-instructions: the wall-clock tables only.\n\
                     --instructions: the callgrind part only, with the costliest functions.\n\
                     --syscalls: system calls (strace -c -f) and context switches per transaction.\n\
                     --only fsync,pgbouncer: the wall-clock rows of the intermediaries whose name\n\
                     \x20 contains one of these (PostgreSQL direct and socat always run).\n\
                     --clients 32,8: the wall-clock tables at these client counts (8,1).\n\
                     --flamegraph FILE.svg: perf record of the proxy (1 session thread) and of\n\
                     \x20 pgbouncer under pgbench at 8 clients (first workload), drawn with inferno\n\
                     \x20 into FILE.svg and FILE-pgbouncer.svg, and their CPU time per transaction."
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
    /// The proxy's admin port: its metrics (audit syncs per statement).
    admin: Option<u16>,
    /// Also runs the write workload (`-N`); the TLS rows run `-S` only.
    writes: bool,
    /// The process whose CPU time is charged to it (none for direct).
    process: Option<Child>,
}

#[derive(Default, Clone)]
struct Sample {
    tps: f64,
    latency_ms: f64,
    /// The 99th percentile of transaction latency, from pgbench's sampled log.
    p99_ms: Option<f64>,
    cpu_us_per_tx: Option<f64>,
    /// Where that CPU went: user space, the kernel, and the audit writer thread (both).
    split_us_per_tx: Option<Split>,
    /// The proxy's audit `fdatasync`s per transaction (fsync durability).
    syncs_per_tx: Option<f64>,
    /// How long one of those took, and how long a statement waited for its own (means).
    sync_us: Option<f64>,
    wait_us: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let tools = ["pgbench", "socat", "pgbouncer"];
    for tool in tools {
        if which(tool).is_none() && dbgw_db::cluster::pg_bin(tool).is_err() {
            bail!("{tool} is not installed: apt-get install -y postgresql-contrib socat pgbouncer");
        }
    }
    if args.mode == Mode::Instructions && which("valgrind").is_none() {
        bail!("valgrind is not installed: apt-get install -y valgrind");
    }
    if args.mode == Mode::Syscalls && which("strace").is_none() {
        bail!("strace is not installed: apt-get install -y strace");
    }
    let proxy_bin = sibling("proxy")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = Cluster::start()?;
    let work = tempfile::tempdir()?;
    make_traversable(work.path())?;

    // A bench role and database, initialised by pgbench itself.
    let password = secret_store::generate_password();
    runtime.block_on(async {
        let admin = cluster.connect("postgres").await?;
        admin.batch_execute("CREATE ROLE bench LOGIN").await?;
        admin
            .batch_execute("CREATE DATABASE bench OWNER bench")
            .await?;
        pg_connect::set_password(&admin, "bench", &password).await?;
        anyhow::Ok(())
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

    match args.mode {
        Mode::Instructions => {
            return instructions(&cluster, &proxy_bin, work.path(), &password, &args, true)
        }
        Mode::Syscalls => return syscalls(&cluster, &proxy_bin, work.path(), &password, &args),
        Mode::Flamegraph(svg) => {
            return flamegraph(&cluster, &proxy_bin, work.path(), &password, &args, svg)
        }
        Mode::Full | Mode::WallClock => {}
    }
    wall_clock(&cluster, &proxy_bin, work.path(), &password, &args)?;
    if args.mode == Mode::Full {
        if which("valgrind").is_some() {
            instructions(&cluster, &proxy_bin, work.path(), &password, &args, false)?;
        } else {
            println!("(valgrind is not installed: no instructions per transaction)");
        }
    }
    Ok(())
}

/// The wall-clock tables: every contender at each client count (8 and 1 unless
/// `--clients`), each workload.
fn wall_clock(
    cluster: &Cluster,
    proxy_bin: &Path,
    work: &Path,
    password: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let mut contenders = vec![Contender {
        name: "PostgreSQL direct",
        port: cluster.port(),
        admin: None,
        writes: true,
        process: None,
    }];
    contenders.push(socat(cluster.port())?);
    let wanted =
        |name: &str| args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()));
    for tls in [false, true] {
        if wanted(pgbouncer_name(tls)) {
            contenders.push(pgbouncer(cluster, work, password, tls)?);
        }
    }
    // Default session threads (one per core), and once with one thread, as pgbouncer has
    // one process: its CPU per statement is the like-for-like comparison.
    for (name, durability, tls, threads) in [
        ("dbgw proxy, audit buffered", "buffered", false, 0),
        ("dbgw proxy, audit buffered, 1 thread", "buffered", false, 1),
        ("dbgw proxy, audit fsync", "fsync", false, 0),
        ("dbgw proxy, audit buffered, TLS to db", "buffered", true, 0),
    ] {
        if wanted(name) {
            contenders.push(proxy(
                proxy_bin, cluster, work, name, durability, tls, threads,
            )?);
        }
    }
    for c in &contenders {
        wait_for_port(c.port)?;
    }

    let clients = &args.clients[..];
    for workload in &args.workloads {
        let runs: Vec<usize> = (0..contenders.len())
            .filter(|&i| *workload == SELECT_ONLY || contenders[i].writes)
            .collect();
        // samples[contender][clients] = one Sample per round.
        let mut samples = vec![vec![Vec::<Sample>::new(); clients.len()]; contenders.len()];
        for round in 0..args.rounds {
            for (ci, &c) in clients.iter().enumerate() {
                for k in 0..runs.len() {
                    let i = runs[(k + round) % runs.len()];
                    let s = measure(&contenders[i], workload, password, c, args.seconds, work)?;
                    eprintln!(
                        "{} round {} clients {c} {:<40} {:>8.0} tps {:>7.3} ms",
                        workload.flag,
                        round + 1,
                        contenders[i].name,
                        s.tps,
                        s.latency_ms
                    );
                    samples[i][ci].push(s);
                }
            }
        }
        print_table(&contenders, &runs, workload, clients, &samples, args);
    }
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
    runs: &[usize],
    workload: &Workload,
    clients: &[u32],
    samples: &[Vec<Vec<Sample>>],
    args: &Args,
) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "pgbench {} -M prepared ({}, {} statement{} per transaction), scale {}, {} s x {} rounds (median), {} CPUs\n",
        workload.flag,
        workload.name,
        workload.statements,
        if workload.statements == 1 { "" } else { "s" },
        args.scale,
        args.seconds,
        args.rounds,
        cpus
    );
    println!("| target | clients | TPS | vs direct | vs socat | mean latency | added latency | p99 latency | CPU per transaction | CPU per statement |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (ci, &c) in clients.iter().enumerate() {
        let med = |i: usize| median(&samples[i][ci]);
        let direct = med(0);
        let socat = med(1);
        for &i in runs {
            let s = med(i);
            let cpu = |per: f64| {
                s.cpu_us_per_tx
                    .map(|v| format!("{:.1} µs", v / per))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "| {} | {c} | {:.0} | {:.2} | {:.2} | {:.1} µs | {:+.1} µs | {} | {} | {} |",
                contenders[i].name,
                s.tps,
                s.tps / direct.tps,
                s.tps / socat.tps,
                s.latency_ms * 1000.0,
                (s.latency_ms - direct.latency_ms) * 1000.0,
                s.p99_ms
                    .map(|v| format!("{:.0} µs", v * 1000.0))
                    .unwrap_or_else(|| "-".into()),
                cpu(1.0),
                cpu(workload.statements as f64),
            );
        }
    }
    println!();
    println!(
        "Where the CPU per statement goes (from /proc: clock ticks of {} ms, so rough in a short run):\n",
        1000 / unsafe { libc_sysconf_clk_tck() }.max(1)
    );
    println!("| target | clients | user space | kernel | of which the audit writer thread |");
    println!("|---|---:|---:|---:|---:|");
    for (ci, &c) in clients.iter().enumerate() {
        for &i in runs {
            if let Some(split) = median(&samples[i][ci]).split_us_per_tx {
                let per = workload.statements as f64;
                println!(
                    "| {} | {c} | {:.1} µs | {:.1} µs | {} |",
                    contenders[i].name,
                    split.user / per,
                    split.system / per,
                    if contenders[i].admin.is_some() {
                        format!("{:.1} µs", split.writer / per)
                    } else {
                        "-".into()
                    },
                );
            }
        }
    }
    println!();
    // Group commit: how many statements one audit fdatasync covered.
    for (ci, &c) in clients.iter().enumerate() {
        for &i in runs {
            let m = median(&samples[i][ci]);
            if let Some(syncs) = m.syncs_per_tx {
                println!(
                    "- {}, {c} client{}: {:.2} statements per audit `fdatasync`; \
                     an `fdatasync` took {:.0} µs, a statement waited {:.0} µs for its own (means)",
                    contenders[i].name,
                    if c == 1 { "" } else { "s" },
                    workload.statements as f64 / syncs,
                    m.sync_us.unwrap_or(f64::NAN),
                    m.wait_us.unwrap_or(f64::NAN),
                );
            }
        }
    }
    println!();
}

/// A process's CPU time per transaction, split (from /proc's clock ticks).
#[derive(Default, Clone, Copy)]
struct Split {
    user: f64,
    system: f64,
    writer: f64,
}

fn median(v: &[Sample]) -> Sample {
    let mid = |x: &mut Vec<f64>| {
        x.sort_by(f64::total_cmp);
        x.get(x.len() / 2).copied()
    };
    // The median of a field the samples may lack.
    let of = |f: fn(&Sample) -> Option<f64>| mid(&mut v.iter().filter_map(f).collect());
    let splits: Vec<Split> = v.iter().filter_map(|s| s.split_us_per_tx).collect();
    let part = |f: fn(&Split) -> f64| mid(&mut splits.iter().map(f).collect());
    let split_us_per_tx = part(|s| s.user).map(|user| Split {
        user,
        system: part(|s| s.system).unwrap_or(0.0),
        writer: part(|s| s.writer).unwrap_or(0.0),
    });
    Sample {
        tps: of(|s| Some(s.tps)).unwrap_or(0.0),
        latency_ms: of(|s| Some(s.latency_ms)).unwrap_or(0.0),
        p99_ms: of(|s| s.p99_ms),
        cpu_us_per_tx: of(|s| s.cpu_us_per_tx),
        split_us_per_tx,
        syncs_per_tx: of(|s| s.syncs_per_tx),
        sync_us: of(|s| s.sync_us),
        wait_us: of(|s| s.wait_us),
    }
}

fn measure(
    c: &Contender,
    workload: &Workload,
    password: &str,
    clients: u32,
    seconds: u64,
    work: &Path,
) -> anyhow::Result<Sample> {
    let cpu_before = c.process.as_ref().map(|p| cpu_ticks(p.id())).transpose()?;
    let syncs_before = c.admin.map(audit_syncs).transpose()?;
    let log_prefix = work.join("pgbench-tx");
    let out = pgbench_cmd(c.port, password)
        .args(["-n", workload.flag, "-M", "prepared"])
        .args(["-l", "--sampling-rate", latency::SAMPLING_RATE])
        .arg(format!("--log-prefix={}", log_prefix.display()))
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
    let p99_ms = latency::percentile(&mut latency::take_logged(work, "pgbench-tx")?, 0.99)
        .map(|us| us as f64 / 1000.0);
    let (cpu_us_per_tx, split_us_per_tx) = match (cpu_before, c.process.as_ref()) {
        (Some(before), Some(p)) => {
            // socat's per-connection children are counted once reaped.
            std::thread::sleep(Duration::from_millis(300));
            let after = cpu_ticks(p.id())?;
            let us = unsafe { 1e6 / libc_sysconf_clk_tck() as f64 } / transactions;
            let split = Split {
                user: (after.user - before.user) as f64 * us,
                system: (after.system - before.system) as f64 * us,
                writer: after.writer.saturating_sub(before.writer) as f64 * us,
            };
            (Some(split.user + split.system), Some(split))
        }
        _ => (None, None),
    };
    let (syncs_per_tx, sync_us, wait_us) = match (syncs_before, c.admin) {
        (Some(before), Some(admin)) => {
            let d = audit_syncs(admin)?.since(&before);
            let per = |sum: f64, n: f64| (n > 0.0).then(|| sum * 1e6 / n);
            (
                Some(d.syncs / transactions).filter(|&s| s > 0.0),
                per(d.sync_seconds, d.syncs),
                per(d.wait_seconds, d.waits),
            )
        }
        _ => (None, None, None),
    };
    Ok(Sample {
        tps,
        latency_ms,
        p99_ms,
        cpu_us_per_tx,
        split_us_per_tx,
        syncs_per_tx,
        sync_us,
        wait_us,
    })
}

/// The proxy's group-commit counters (fsync durability), from its metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Syncs {
    /// `fdatasync`s, and the seconds they took.
    syncs: f64,
    sync_seconds: f64,
    /// Statements that waited for their sync, and the seconds they waited.
    waits: f64,
    wait_seconds: f64,
}

impl Syncs {
    fn parse(metrics: &str) -> anyhow::Result<Syncs> {
        let value = |name: &str| -> anyhow::Result<f64> {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("no {name} in the proxy's metrics"))?
                .trim()
                .parse()
                .with_context(|| name.to_string())
        };
        Ok(Syncs {
            syncs: value("dbgw_proxy_audit_syncs_total")?,
            sync_seconds: value("dbgw_proxy_audit_sync_seconds_sum")?,
            waits: value("dbgw_proxy_audit_durable_wait_seconds_count")?,
            wait_seconds: value("dbgw_proxy_audit_durable_wait_seconds_sum")?,
        })
    }

    fn since(&self, before: &Syncs) -> Syncs {
        Syncs {
            syncs: self.syncs - before.syncs,
            sync_seconds: self.sync_seconds - before.sync_seconds,
            waits: self.waits - before.waits,
            wait_seconds: self.wait_seconds - before.wait_seconds,
        }
    }
}

/// The proxy's group-commit counters, read from its admin port.
fn audit_syncs(admin: u16) -> anyhow::Result<Syncs> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Syncs::parse(&text)
}

/// CPU clock ticks so far of a process.
struct Ticks {
    /// User space, the process's and its reaped children's (socat forks per client).
    user: u64,
    /// The kernel on their behalf.
    system: u64,
    /// Both, of the proxy's `audit-writer` thread.
    writer: u64,
}

fn cpu_ticks(pid: u32) -> anyhow::Result<Ticks> {
    let f = stat_fields(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)?;
    let mut writer = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        let is_writer = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|name| name.trim() == "audit-writer");
        if let (true, Ok(stat)) = (is_writer, std::fs::read_to_string(dir.join("stat"))) {
            let t = stat_fields(&stat)?;
            writer += t[0] + t[1];
        }
    }
    Ok(Ticks {
        user: f[0] + f[2],
        system: f[1] + f[3],
        writer,
    })
}

/// utime, stime, cutime, cstime of a `/proc/.../stat` line (fields 14-17, 1-based).
fn stat_fields(stat: &str) -> anyhow::Result<[u64; 4]> {
    let after_name = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("bad stat")
    };
    Ok([field(11)?, field(12)?, field(13)?, field(14)?])
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
        admin: None,
        writes: true,
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
        name: pgbouncer_name(tls),
        port,
        admin: None,
        writes: !tls,
        process: Some(cmd.spawn().context("starting pgbouncer")?),
    })
}

fn pgbouncer_name(tls: bool) -> &'static str {
    if tls {
        "pgbouncer session, TLS to db"
    } else {
        "pgbouncer session mode"
    }
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
    let admin = dbgw_db::cluster::free_port()?;
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
            admin,
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
        admin: Some(admin),
        writes: !tls,
        process: Some(child),
    })
}

/// Instructions per transaction of pgbouncer and of the proxy (one session thread, buffered
/// audit), each under callgrind: two runs of 1-client pgbench (`short` and `long`
/// transactions, each after the same warm-up) in fresh processes, and the difference
/// divided by the extra transactions, so start-up and shutdown cancel out. The proxy's
/// instructions are grouped by what they do; `detailed` adds the costliest functions.
fn instructions(
    cluster: &Cluster,
    proxy_bin: &Path,
    work: &Path,
    password: &str,
    args: &Args,
    detailed: bool,
) -> anyhow::Result<()> {
    let dir = work.join("callgrind");
    std::fs::create_dir_all(&dir)?;
    // pgbouncer runs as postgres and writes its dumps here too.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    let _ = CALLGRIND.set(dir.clone());
    struct Row {
        workload: Workload,
        name: &'static str,
        per_tx: f64,
        sha256: f64,
        allocations: f64,
        frees: f64,
        audit_bytes: Option<f64>,
        functions: Vec<callgrind::PerTx>,
    }
    let mut rows = Vec::new();
    for workload in &args.workloads {
        let (short, long) = (workload.short, workload.long);
        for target in ["pgbouncer", "proxy"] {
            let mut profiles = Vec::new();
            let mut audit = Vec::new();
            let mut name = "";
            for transactions in [short, long] {
                let c = match target {
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
                eprintln!(
                    "callgrind: {} {} {transactions} transactions",
                    workload.flag, c.name
                );
                let mut process = c.process.context("a process")?;
                let pid = process.id();
                if let Err(e) = wait_for_port_within(c.port, Duration::from_secs(120)) {
                    let log = work.join(format!("proxy-{}", c.port)).join("proxy.log");
                    bail!("{e}: {}", std::fs::read_to_string(log).unwrap_or_default());
                }
                for t in [20, transactions] {
                    pgbench_transactions(c.port, password, workload, 1, t)?;
                }
                // A clean exit makes callgrind write its counts.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                process.wait()?;
                let dump = dir.join(format!("callgrind.{pid}"));
                profiles.push(callgrind::Profile::read(&dump)?);
                if let Ok(keep) = std::env::var("BENCH_CALLGRIND_KEEP") {
                    std::fs::create_dir_all(&keep)?;
                    std::fs::copy(
                        &dump,
                        Path::new(&keep).join(format!("{target}{}.{transactions}", workload.flag)),
                    )?;
                }
                let _ = std::fs::remove_file(&dump);
                if target == "proxy" {
                    audit.push(dir_bytes(
                        &work.join(format!("proxy-{}", c.port)).join("audit"),
                    )?);
                }
                name = c.name;
            }
            let n = (long - short) as f64;
            let diff = |f: &dyn Fn(&callgrind::Profile) -> u64| {
                (f(&profiles[1]) as f64 - f(&profiles[0]) as f64) / n
            };
            rows.push(Row {
                workload: *workload,
                name,
                per_tx: diff(&|p| p.total),
                sha256: diff(&|p| p.in_category(callgrind::SHA256)),
                allocations: diff(&|p| p.allocations().0),
                frees: diff(&|p| p.allocations().1),
                audit_bytes: (audit.len() == 2).then(|| (audit[1] as f64 - audit[0] as f64) / n),
                functions: callgrind::per_transaction(&profiles[0], &profiles[1], long - short),
            });
        }
    }

    println!(
        "Instructions per transaction under callgrind: user space, whole process (the proxy's \
         audit writer thread included), 1 client, prepared protocol; (instructions at the long \
         run - at the short run) / the extra transactions, so start-up cancels out. Not \
         affected by the machine's load.\n"
    );
    println!("| workload | target | instructions per transaction | per statement | vs pgbouncer | without SHA-256 | vs pgbouncer | allocations per transaction | frees per transaction | audit bytes per transaction |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let base = rows
            .iter()
            .find(|b| b.workload == r.workload && b.name.starts_with("pgbouncer"))
            .map_or(f64::NAN, |b| b.per_tx);
        println!(
            "| {} ({}-{} tx) | {} | {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {} |",
            r.workload.flag,
            r.workload.long,
            r.workload.short,
            r.name,
            thousands(r.per_tx),
            thousands(r.per_tx / r.workload.statements as f64),
            r.per_tx / base,
            thousands(r.per_tx - r.sha256),
            (r.per_tx - r.sha256) / base,
            r.allocations,
            r.frees,
            r.audit_bytes.map_or("-".into(), thousands),
        );
    }
    println!();
    for r in rows.iter().filter(|r| r.name.starts_with("dbgw")) {
        println!(
            "Where the proxy's instructions go under callgrind, pgbench {} (exclusive \
             instructions per transaction, grouped by function name; code inlined into a \
             function counts as that function's; SHA-256 in software, see below):\n",
            r.workload.flag
        );
        println!("| what | instructions per transaction | share |");
        println!("|---|---:|---:|");
        for (what, ir) in callgrind::by_category(&r.functions) {
            if ir.abs() < 0.5 {
                continue;
            }
            println!(
                "| {what} | {} | {:.1} % |",
                thousands(ir),
                100.0 * ir / r.per_tx
            );
        }
        println!();
    }
    println!(
        "Under valgrind SHA-256 runs in software (~3,200 instructions per 64-byte block): \
         valgrind hides the CPU's SHA extensions, which the sha2 crate uses natively when the \
         CPU has them (`sha_ni` in /proc/cpuinfo; ~165 instructions per block). Natively the \
         proxy's count is about the `without SHA-256` column plus ~170 instructions per \
         64 audit bytes.\n"
    );
    if detailed {
        for r in &rows {
            let top = |key: &dyn Fn(&callgrind::PerTx) -> f64, label: &str, count: usize| {
                let mut f: Vec<&callgrind::PerTx> = r.functions.iter().collect();
                f.sort_by(|a, b| key(b).total_cmp(&key(a)));
                println!(
                    "{}, pgbench {}: the {count} functions with the most {label} instructions per transaction\n",
                    r.name, r.workload.flag
                );
                println!("| function | exclusive | inclusive | calls per transaction |");
                println!("|---|---:|---:|---:|");
                for f in f.iter().take(count) {
                    let mut name = f.name.clone();
                    if name.len() > 120 {
                        let mut cut = 117;
                        while !name.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        name.truncate(cut);
                        name.push_str("...");
                    }
                    println!(
                        "| `{}` | {} | {} | {:.2} |",
                        name.replace('|', "\\|"),
                        thousands(f.exclusive),
                        thousands(f.inclusive),
                        f.calls
                    );
                }
                println!();
            };
            let count = if r.name.starts_with("dbgw") { 40 } else { 15 };
            top(&|f| f.exclusive, "exclusive", count);
            top(&|f| f.inclusive, "inclusive", count);
        }
    }
    Ok(())
}

/// One pgbench run of `transactions` per client, without timing.
fn pgbench_transactions(
    port: u16,
    password: &str,
    workload: &Workload,
    clients: u32,
    transactions: u64,
) -> anyhow::Result<()> {
    let out = pgbench_cmd(port, password)
        .args(["-n", workload.flag, "-M", "prepared"])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(["-t", &transactions.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "pgbench on port {port}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `--syscalls`: system calls per transaction (strace -c -f attached to the running
/// process, two runs, the difference per extra transaction) and context switches per
/// transaction (the same difference, without strace), at 1 and 8 clients.
fn syscalls(
    cluster: &Cluster,
    proxy_bin: &Path,
    work: &Path,
    password: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let columns = ["recvfrom", "sendto", "epoll_wait", "futex", "write"];
    println!(
        "System calls per transaction: `strace -c -f` attached to the process (all threads) \
         over two pgbench runs, (calls in the long run - in the short) / the extra \
         transactions, so the login cancels out. Context switches (voluntary + involuntary, all \
         threads, from /proc) the same way without strace. Prepared protocol.\n"
    );
    println!(
        "| workload | target | clients | system calls per transaction | {} | other | context switches per transaction |",
        columns.join(" | ")
    );
    println!(
        "|---|---|---:|---:|{}---|---:|",
        "---:|".repeat(columns.len())
    );
    for workload in &args.workloads {
        for clients in [1u32, 8] {
            let (short, long) = (100u64, 600u64);
            let extra = (long - short) as f64 * clients as f64;
            for which in ["pgbouncer", "proxy 1", "proxy"] {
                let mut c = match which {
                    "pgbouncer" => pgbouncer(cluster, work, password, false)?,
                    "proxy 1" => proxy(
                        proxy_bin,
                        cluster,
                        work,
                        "dbgw proxy, audit buffered, 1 thread",
                        "buffered",
                        false,
                        1,
                    )?,
                    _ => proxy(
                        proxy_bin,
                        cluster,
                        work,
                        "dbgw proxy, audit buffered",
                        "buffered",
                        false,
                        0,
                    )?,
                };
                wait_for_port(c.port)?;
                let pid = c.process.as_ref().context("a process")?.id();
                pgbench_transactions(c.port, password, workload, clients, 20)?;
                let mut switches = Vec::new();
                switches.push(context_switches(pid)?);
                for t in [short, long] {
                    pgbench_transactions(c.port, password, workload, clients, t)?;
                    switches.push(context_switches(pid)?);
                }
                let switches_per_tx = ((switches[2] - switches[1]) as f64
                    - (switches[1] - switches[0]) as f64)
                    / extra;
                let mut counts = Vec::new();
                for t in [short, long] {
                    counts.push(strace_counts(work, pid, || {
                        pgbench_transactions(c.port, password, workload, clients, t)
                    })?);
                }
                let per = |name: &str| {
                    (counts[1].get(name).copied().unwrap_or(0) as f64
                        - counts[0].get(name).copied().unwrap_or(0) as f64)
                        / extra
                };
                let mut names: Vec<&String> = counts[1].keys().collect();
                names.sort();
                let total: f64 = names.iter().map(|n| per(n)).sum();
                let other: Vec<String> = names
                    .iter()
                    .filter(|n| !columns.contains(&n.as_str()))
                    .filter(|n| per(n).abs() >= 0.005)
                    .map(|n| format!("{n} {:.2}", per(n)))
                    .collect();
                println!(
                    "| {} | {} | {clients} | {:.2} | {} | {} | {:.2} |",
                    workload.flag,
                    c.name,
                    total,
                    columns
                        .iter()
                        .map(|n| format!("{:.2}", per(n)))
                        .collect::<Vec<_>>()
                        .join(" | "),
                    if other.is_empty() {
                        "-".to_string()
                    } else {
                        other.join(", ")
                    },
                    switches_per_tx
                );
                if let Some(p) = c.process.as_mut() {
                    let _ = p.kill();
                    let _ = p.wait();
                }
            }
        }
    }
    Ok(())
}

/// `--flamegraph FILE.svg`: `perf record --call-graph dwarf` of the proxy (one session
/// thread, buffered audit) while pgbench runs at 8 clients, then `perf script`, folded and
/// drawn with inferno (`cargo install inferno`); the same for pgbouncer into
/// `FILE-pgbouncer.svg`. Prints where each one's CPU time went per transaction: kernel
/// (by the system call that entered it) and user space (by what the code does).
fn flamegraph(
    cluster: &Cluster,
    proxy_bin: &Path,
    work: &Path,
    password: &str,
    args: &Args,
    svg: &str,
) -> anyhow::Result<()> {
    for tool in ["perf", "inferno-collapse-perf", "inferno-flamegraph"] {
        if which(tool).is_none() {
            bail!("{tool} not found (apt-get install linux-perf; cargo install inferno)");
        }
    }
    let kernel: std::collections::HashSet<String> = std::fs::read_to_string("/proc/kallsyms")?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let workload = args.workloads.first().context("a workload")?;
    let mut summaries = Vec::new();
    for target in ["proxy", "pgbouncer"] {
        let mut c = match target {
            "proxy" => proxy(
                proxy_bin,
                cluster,
                work,
                "dbgw proxy, audit buffered, 1 thread",
                "buffered",
                false,
                1,
            )?,
            _ => pgbouncer(cluster, work, password, false)?,
        };
        wait_for_port(c.port)?;
        let pid = c.process.as_ref().context("a process")?.id();
        pgbench_transactions(c.port, password, workload, 8, 100)?;
        let data = work.join("perf.data");
        let mut perf = Command::new("perf")
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf")?;
        std::thread::sleep(Duration::from_millis(500));
        let out = pgbench_cmd(c.port, password)
            .args(["-n", workload.flag, "-M", "prepared", "-c", "8", "-j", "2"])
            .args(["-T", &args.seconds.to_string()])
            .output()?;
        unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
        perf.wait()?;
        if let Some(p) = c.process.as_mut() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("pgbench: {text}{}", String::from_utf8_lossy(&out.stderr));
        }
        let transactions: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no transaction count from pgbench")?;
        let script = Command::new("perf")
            .args(["script", "-i"])
            .arg(&data)
            .stderr(Stdio::null())
            .output()
            .context("perf script")?;
        let _ = std::fs::remove_file(&data);
        let folded = pipe("inferno-collapse-perf", &[], &script.stdout)?;
        let title = format!(
            "{}, pgbench {} -M prepared, 8 clients (perf, cpu-clock)",
            c.name, workload.flag
        );
        let drawn = pipe("inferno-flamegraph", &["--title", &title], &folded)?;
        let file = match target {
            "proxy" => svg.to_string(),
            _ => svg.replace(".svg", "-pgbouncer.svg"),
        };
        std::fs::write(&file, drawn)?;
        eprintln!("flame graph: {file}");
        summaries.push((
            c.name,
            transactions,
            fold_summary(&String::from_utf8_lossy(&folded), &kernel),
        ));
    }
    println!(
        "CPU time per transaction by perf samples (cpu-clock, 499 Hz, pgbench {} at 8 clients; \
         wall-clock, so it depends on the machine's load):\n",
        workload.flag
    );
    println!("| target | where | µs per transaction | share |");
    println!("|---|---|---:|---:|");
    for (name, transactions, summary) in &summaries {
        let total: f64 = summary.iter().map(|(_, ns)| ns).sum();
        for (what, ns) in summary {
            if *ns / total < 0.005 {
                continue;
            }
            println!(
                "| {name} | {what} | {:.2} | {:.1} % |",
                ns / 1000.0 / transactions,
                100.0 * ns / total
            );
        }
    }
    Ok(())
}

/// Sample time (ns) of folded stacks, grouped: kernel time by the user-space function that
/// entered the kernel (the system call), user time by [`callgrind::category`].
fn fold_summary(folded: &str, kernel: &std::collections::HashSet<String>) -> Vec<(String, f64)> {
    let is_kernel =
        |f: &str| kernel.contains(f) || kernel.contains(f.split('.').next().unwrap_or(f));
    let mut sums: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    for line in folded.lines() {
        let Some((stack, n)) = line.rsplit_once(' ') else {
            continue;
        };
        let n: f64 = n.parse().unwrap_or(0.0);
        let frames: Vec<&str> = stack.split(';').collect();
        let leaf = frames.last().copied().unwrap_or("");
        let what = if is_kernel(leaf) {
            let entry = frames
                .iter()
                .rev()
                .find(|f| !is_kernel(f))
                .copied()
                .unwrap_or("?");
            let call = entry
                .trim_start_matches("__GI_")
                .trim_start_matches("__libc_")
                .trim_start_matches('_');
            format!("kernel, entered by {call}")
        } else {
            format!("user: {}", callgrind::category(leaf))
        };
        *sums.entry(what).or_default() += n;
    }
    let mut v: Vec<(String, f64)> = sums.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// Runs `cmd` with `input` on its standard input and returns its standard output.
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    if !out.status.success() {
        bail!("{cmd} failed");
    }
    Ok(out.stdout)
}

/// Context switches of all of a process's threads so far.
fn context_switches(pid: u32) -> anyhow::Result<i64> {
    let mut sum = 0i64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                sum += v.trim().parse::<i64>().unwrap_or(0);
            }
        }
    }
    Ok(sum)
}

/// System calls of process `pid` (all threads) while `run` runs, by name.
fn strace_counts(
    work: &Path,
    pid: u32,
    run: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let out = work.join(format!("strace-{pid}.txt"));
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-q", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting strace")?;
    // strace attaches to every thread before the run starts.
    std::thread::sleep(Duration::from_millis(700));
    let ran = run();
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait()?;
    ran?;
    let text = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_file(&out);
    let mut counts = std::collections::HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].starts_with('%') || fields[0].starts_with('-') {
            continue;
        }
        let name = fields[fields.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = fields[3].parse::<u64>() {
            counts.insert(name.to_string(), calls);
        }
    }
    Ok(counts)
}

/// Bytes of the files in `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut sum = 0;
    for entry in std::fs::read_dir(dir)? {
        sum += entry?.metadata()?.len();
    }
    Ok(sum)
}

/// `1234567.8` as `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < -0.5 {
        out.insert(0, '-');
    }
    out
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

#[cfg(test)]
mod tests {
    use super::Syncs;

    /// The proxy's exposition as prometheus-client writes it: buckets, `_sum`, `_count`.
    const METRICS: &str = "\
# HELP dbgw_proxy_audit_syncs fdatasync calls that made audit batches durable
# TYPE dbgw_proxy_audit_syncs counter
dbgw_proxy_audit_syncs_total 4
# HELP dbgw_proxy_audit_sync_seconds Time each of those fdatasync calls took
# TYPE dbgw_proxy_audit_sync_seconds histogram
dbgw_proxy_audit_sync_seconds_sum 0.0008
dbgw_proxy_audit_sync_seconds_count 4
dbgw_proxy_audit_sync_seconds_bucket{le=\"0.000025\"} 0
dbgw_proxy_audit_sync_seconds_bucket{le=\"+Inf\"} 4
# TYPE dbgw_proxy_audit_durable_wait_seconds histogram
dbgw_proxy_audit_durable_wait_seconds_sum 0.003
dbgw_proxy_audit_durable_wait_seconds_count 10
dbgw_proxy_audit_durable_wait_seconds_bucket{le=\"+Inf\"} 10
";

    #[test]
    fn group_commit_counters_are_read_by_their_own_names() {
        let s = Syncs::parse(METRICS).unwrap();
        assert_eq!(
            s,
            Syncs {
                syncs: 4.0,
                sync_seconds: 0.0008,
                waits: 10.0,
                wait_seconds: 0.003,
            }
        );
        let later = Syncs {
            syncs: 6.0,
            sync_seconds: 0.0012,
            waits: 15.0,
            wait_seconds: 0.0045,
        };
        let d = later.since(&s);
        assert_eq!((d.syncs, d.waits), (2.0, 5.0));
        assert!((d.sync_seconds - 0.0004).abs() < 1e-12);
        assert!((d.wait_seconds - 0.0015).abs() < 1e-12);
    }

    #[test]
    fn a_proxy_without_the_counters_is_an_error() {
        let without = METRICS.replace("dbgw_proxy_audit_durable_wait_seconds_sum", "other_sum");
        let e = Syncs::parse(&without).unwrap_err();
        assert!(e.to_string().contains("durable_wait_seconds_sum"), "{e}");
    }
}
