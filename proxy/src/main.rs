//! `proxy`: the dbgw audit proxy and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proxy::audit::{crosscheck, verify};
use proxy::server::Server;
use proxy::settings::Settings;

/// dbgw's PostgreSQL audit proxy.
///
/// Clients connect to it as to PostgreSQL. It authenticates them (service accounts by
/// SCRAM-SHA-256 against credentials in the secret store), logs in to the database over
/// verified TLS, and writes every statement to a hash-chained audit log before forwarding it.
///
/// Configuration: built-in defaults (the local stack), then the TOML file given with
/// --config (or PROXY_CONFIG), then environment variables PROXY_<SECTION>__<KEY>, e.g.
/// PROXY_UPSTREAM__HOST=db.internal PROXY_AUDIT__DURABILITY=fsync. Secrets never go in
/// either: they come from the secret store. See docs/proxy.md for every key.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, env = "PROXY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage people's access grants (operators; the approvals app does this too).
    Grant {
        /// Secret with an admin login to the database server (creates people's roles).
        #[arg(long, default_value = "dbgw/postgres-admin")]
        admin_secret: String,
        #[command(subcommand)]
        command: proxy::admin::GrantCommand,
    },
    /// Print the effective configuration (defaults + file + environment) as JSON.
    Config,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chains of audit files (or directories of them, or the shipped copy in
    /// S3: `s3://bucket/prefix`, see docs/proxy.md, "Reading the audit in S3"). Files are grouped
    /// into one chain per replica (named in each file's first record) and each chain is
    /// checked in the order given. Exits 1 and names, per chain, the first altered,
    /// removed, inserted or reordered record, or a cut tail: a last file that names a
    /// missing next file, or a chain that stops before its anchored head. Prints each
    /// chain's head.
    Verify {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The head to anchor to, as SEQ:HASH (from a copy kept elsewhere).
        #[arg(long, conflicts_with = "head_file")]
        head: Option<String>,
        /// A published head file (`head.json`), e.g. the copy in write-once storage
        /// (`s3://bucket/prefix/task/head.json`).
        #[arg(long)]
        head_file: Option<PathBuf>,
    },
    /// Print the records of several replicas' audit files (or directories) as one stream
    /// in time order, each with its replica's name first (`{"replica":..,"seq":..}`).
    /// Reading aid only: verify the chains first.
    Merge {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Compare audit files (or directories, several replicas' included) with the database
    /// server's pgaudit log (its JSON log files, or their directory). Prints one line per
    /// difference and a summary; exits 1 on any difference: a statement the server ran that
    /// the proxy did not record (or the reverse), an error only one side has, a session the
    /// server log does not have, or a statement by a proxy database user that bypassed the
    /// proxy. See docs/proxy.md, "Crosscheck with pgaudit".
    Crosscheck {
        /// The proxy's audit files or directories (or `s3://bucket/prefix`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The server's JSON log files with pgaudit's entries, or their directory.
        #[arg(long, required = true)]
        pgaudit: Vec<PathBuf>,
        /// Allowed difference between the proxy's clock and the server's, in seconds.
        #[arg(long, default_value_t = 5)]
        max_clock_skew_secs: i64,
        #[command(flatten)]
        rotation: crosscheck::RotationWitness,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one session as a transcript, in order: connect (client, TLS), login (person or
    /// service, issuer and subject, grant, request, approvers), every statement with its
    /// parameters and outcomes (rows, errors, durations, refusals), and the disconnect with
    /// its reason. Reads the chains with verify's logic: exits 1 with TAMPERED and where
    /// when a record of the session is at or after a break in its chain, or past the
    /// anchored head; 2 when the session is not found. Works across file rotations and
    /// replicas. See docs/proxy.md, "Reading a session".
    Session(proxy::audit::transcript::SessionArgs),
    /// List sessions, one line each (start .. end, id, replica, who, database, client,
    /// statements, how it ended), filtered. Streams: memory holds only the sessions open at
    /// each point of the log. Sessions with a record the chain does not vouch for are
    /// marked TAMPERED (exit 1). See docs/proxy.md, "Reading a session".
    Sessions(proxy::audit::sessions::SessionsArgs),
    /// Write a period's evidence bundle to a directory: index.html (readable in a browser)
    /// and machine-readable files (every replica's chain verified, the crosscheck with
    /// pgaudit, the approvals history verified, each access used with its sessions'
    /// transcripts, secret rotation dates, the control table) with a MANIFEST of SHA-256
    /// hashes. The same inputs give the same bundle. `--verify DIR` checks a bundle's
    /// manifest. Exits 1 when a check in the bundle failed. See docs/proxy.md, "The
    /// evidence bundle".
    Evidence(Box<proxy::audit::evidence::EvidenceArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Audit {
            command:
                AuditCommand::Verify {
                    paths,
                    head,
                    head_file,
                },
        } => {
            let anchor = match (head, head_file) {
                (Some(text), _) => proxy::audit::head::Head::parse_anchor(&text).map(Some),
                (None, Some(path)) => proxy::audit::head::Head::read(&path).and_then(|h| {
                    h.map(Some)
                        .ok_or_else(|| anyhow::anyhow!("{} does not exist", path.display()))
                }),
                (None, None) => Ok(None),
            };
            match anchor {
                Ok(anchor) => verify_command(&paths, anchor.as_ref()),
                Err(e) => fail(e),
            }
        }
        Command::Audit {
            command: AuditCommand::Merge { paths },
        } => {
            let merged = verify::chains(&paths).and_then(|chains| {
                proxy::audit::merge::merge(chains, &mut std::io::stdout().lock())
            });
            match merged {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Audit {
            command:
                AuditCommand::Crosscheck {
                    paths,
                    pgaudit,
                    max_clock_skew_secs,
                    rotation,
                    json,
                },
        } => crosscheck_command(
            &paths,
            &pgaudit,
            &crosscheck::Options {
                max_clock_skew_secs,
            },
            &rotation,
            json,
        ),
        Command::Audit {
            command: AuditCommand::Session(args),
        } => proxy::audit::transcript::run(&args),
        Command::Audit {
            command: AuditCommand::Sessions(args),
        } => proxy::audit::sessions::run(&args),
        Command::Audit {
            command: AuditCommand::Evidence(args),
        } => {
            // Secrets Manager is read only when asked, with the configuration's [secrets].
            let settings = match args.secrets_prefix.is_some() {
                true => match load(&cli.config) {
                    Ok(s) => Some(s.secrets),
                    Err(e) => return fail(e),
                },
                false => None,
            };
            tls_config::install_provider();
            proxy::audit::evidence::run(&args, settings.as_ref())
        }
        Command::Grant {
            admin_secret,
            command,
        } => {
            let run = || -> anyhow::Result<()> {
                let settings = load(&cli.config)?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(proxy::admin::grant(&settings, &admin_secret, command))
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Config => match load(&cli.config) {
            Ok(s) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).expect("settings serialize")
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Serve => match load(&cli.config).and_then(serve) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
    }
}

fn load(file: &Option<PathBuf>) -> anyhow::Result<Settings> {
    startup::config::load(file.as_deref(), "PROXY_")
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("proxy: {e:#}");
    ExitCode::from(2)
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    startup::telemetry::init(&settings.log);
    // A full disk must surface as a write error we handle, not as a signal that kills us.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // This runtime accepts connections and serves the admin endpoint; sessions run on the
    // server's own session threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = startup::shutdown::signal();
        let server = Server::bind(settings).await?;
        server.run(stop).await
    })
}

fn verify_command(paths: &[PathBuf], anchor: Option<&proxy::audit::head::Head>) -> ExitCode {
    let chains = match verify::chains(paths) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if anchor.is_some() && chains.len() > 1 {
        return fail(anyhow::anyhow!(
            "a head anchors one chain, and these files hold {} (replicas {}): verify one \
             replica's files with its head",
            chains.len(),
            chains
                .iter()
                .map(|c| c.replica.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut code = ExitCode::SUCCESS;
    for chain in chains {
        if !chain.replica.is_empty() {
            print!("[{}] ", chain.replica);
        }
        let verified = verify_chain(&chain.files, anchor);
        if verified != ExitCode::SUCCESS {
            code = verified;
        }
    }
    code
}

fn verify_chain(
    files: &[proxy::audit::source::AuditFile],
    anchor: Option<&proxy::audit::head::Head>,
) -> ExitCode {
    match verify::verify(files, anchor) {
        Ok(Ok(report)) => {
            println!(
                "OK: {} records, seq {}..{} in {} file(s){}; head {}:{}{}",
                report.records,
                report.first_seq,
                report.last_seq,
                files.len(),
                if report.from_genesis {
                    " from the start of the chain"
                } else {
                    " (chain continues from earlier files)"
                },
                report.last_seq,
                report.head,
                match (anchor, report.anchored) {
                    (Some(a), true) => format!("; reaches the anchored head at seq {}", a.seq),
                    (Some(a), false) => format!(
                        "; the anchored head (seq {}) lies before these files: not checked",
                        a.seq
                    ),
                    (None, _) => String::new(),
                }
            );
            ExitCode::SUCCESS
        }
        Ok(Err(broken)) if broken.truncated => {
            println!("TRUNCATED: {broken}");
            ExitCode::from(1)
        }
        Ok(Err(broken)) => {
            println!("TAMPERED: {broken}");
            ExitCode::from(1)
        }
        Err(e) => fail(e),
    }
}

fn crosscheck_command(
    paths: &[PathBuf],
    pgaudit: &[PathBuf],
    options: &crosscheck::Options,
    rotation: &crosscheck::RotationWitness,
    json: bool,
) -> ExitCode {
    let run = || -> anyhow::Result<crosscheck::Report> {
        let proxy_files = proxy::audit::source::collect(paths)?;
        let server_files = crosscheck::collect_pgaudit(pgaudit)?;
        crosscheck::crosscheck(&proxy_files, &server_files, options, rotation)
    };
    let report = match run() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        for d in &report.differences {
            println!("{d}");
        }
        for r in &report.rotation_logins {
            println!("{r}");
        }
        let s = &report.summary;
        println!(
            "{}: {} difference(s); proxy: {} session(s) in {} file(s), {} linked to a server \
             process, {} execution(s) that reached the server; pgaudit: {} server process(es) \
             in {} file(s), {} statement(s), {} paired with a proxy execution, {} by users the \
             proxy does not log in as, {} rotation test login(s), {} failed name lookup(s) \
             of Describe or Close, {} run while binding",
            if report.clean() { "OK" } else { "DIFFERENCES" },
            report.differences.len(),
            s.proxy_sessions,
            s.proxy_files,
            s.linked_sessions,
            s.proxy_executions,
            s.server_processes,
            s.pgaudit_files,
            s.pgaudit_statements,
            s.matched_statements,
            s.other_users_statements,
            s.rotation_test_logins,
            s.lookup_errors,
            s.bind_time_statements,
        );
    }
    if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
