//! `approvals`: the binary. Reads the configuration, sets up logging, serves until SIGTERM
//! or SIGINT, drains requests in flight and exits 0.

use std::path::PathBuf;

use approvals::{Application, Settings};
use clap::Parser;

const CONFIG_HELP: &str = "\
Configuration, each layer overriding the one before:
  1. built-in defaults, which work against the local stack (`make up`);
  2. the TOML file given with --config (or APPROVALS_CONFIG);
  3. environment variables APPROVALS_<SECTION>__<KEY>, e.g.
       APPROVALS_LISTEN=0.0.0.0:8080   APPROVALS_PUBLIC_URL=https://approvals.example.com
       APPROVALS_CONTROL__HOST=db.internal   APPROVALS_TARGET__HOST=db.internal
       APPROVALS_OIDC__ISSUER=https://sso.example.com   APPROVALS_OIDC__APPROVERS_GROUP=data-security
       APPROVALS_SCHEDULER__INTERVAL_MS=15000   APPROVALS_WEBHOOK__SECRET=dbgw/approvals-webhook
       APPROVALS_LOG__LEVEL=info

The catalogue of what can be requested ([[catalogue]] entries: database, level, role,
max_duration_secs, approvals) is best kept in the file. Secrets are never configured here:
the database login (control.secret, target.secret), the OpenID client secret
(oidc.secret) and the webhook URL (webhook.secret) are read from the secret store
([secrets]). Keys such as `client_secret` are
refused.

`approvals --print-config` shows the effective configuration. See docs/approvals.md.";

/// The approvals web app: people request database access, data-security approvers decide,
/// and people's database roles are made and removed automatically.
#[derive(Parser)]
#[command(version, about, after_long_help = CONFIG_HELP, after_help = CONFIG_HELP)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "APPROVALS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The event history's hash chain (docs/approvals.md, "The event schema").
    Events {
        #[command(subcommand)]
        action: Events,
    },
}

#[derive(clap::Subcommand)]
enum Events {
    /// Print the chain's head, `ID:HASH`, to keep where the database's users cannot write.
    Head,
    /// Recompute the whole chain; exit 1 at the first event changed, removed or slipped in,
    /// or when the exported head given is no longer in it.
    Verify {
        /// A head printed before by `approvals events head`.
        #[arg(long, value_name = "ID:HASH")]
        head: Option<approvals::history::Head>,
    },
    /// Write every event, oldest first, as JSON lines (with each event's data as the
    /// database's canonical text and its hashes) to stdout: an auditor verifies the export
    /// without the database (`proxy audit evidence --approvals-events FILE`).
    Export,
}

/// `approvals events ...`: prints one JSON line; exit 0 (sound), 1 (does not verify, or
/// could not be read to the end), 2 (no connection).
fn events(settings: &Settings, action: Events) -> std::process::ExitCode {
    use approvals::history;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("approvals: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let db = match history::connect(settings).await {
            Ok(db) => db,
            Err(e) => {
                eprintln!("approvals: {e:#}");
                return std::process::ExitCode::from(2);
            }
        };
        match action {
            Events::Head => match history::head(&db).await {
                Ok(head) => {
                    let head = head.map(|h| h.to_string());
                    println!("{}", serde_json::json!({ "head": head }));
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("approvals: {e:#}");
                    std::process::ExitCode::from(2)
                }
            },
            Events::Export => match history::export(&db, &mut std::io::stdout().lock()).await {
                Ok(_) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("approvals: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            },
            Events::Verify { head } => match history::verify(&db, head.as_ref()).await {
                Ok(v) => {
                    let head = v.head.map(|h| h.to_string());
                    println!(
                        "{}",
                        serde_json::json!({ "ok": true, "events": v.events, "head": head })
                    );
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    println!(
                        "{}",
                        serde_json::json!({ "ok": false, "error": format!("{e:#}") })
                    );
                    eprintln!("approvals: the event history does not verify: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            },
        }
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings =
        match service::binary::settings("approvals", Settings::load(cli.config.as_deref())) {
            Ok(settings) => settings,
            Err(code) => return code,
        };
    if cli.print_config {
        return service::binary::print_config(&settings);
    }
    if let Some(Command::Events { action }) = cli.command {
        return events(&settings, action);
    }
    let log = settings.log.clone();
    service::binary::run("approvals", &log, 0, |stop| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(stop)
            .await
    })
}
