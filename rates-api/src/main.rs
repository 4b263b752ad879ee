//! `rates-api`: the binary. Reads the configuration, sets up logging, serves until SIGTERM or
//! SIGINT, drains in-flight requests and exits 0.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rates_api::{Application, Settings};

/// Longest wait for in-flight requests after a shutdown signal. Requests are bounded by the
/// pool wait and statement timeouts well below this; it guards against stuck clients.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

const CONFIG_HELP: &str = "\
Configuration, each layer overriding the one before:
  1. built-in defaults, which work against the local stack (`make up`);
  2. the TOML file given with --config (or RATES_API_CONFIG);
  3. environment variables RATES_API_<SECTION>__<KEY>, e.g.
       RATES_API_LISTEN=0.0.0.0:3000
       RATES_API_DATABASE__HOST=db.internal   RATES_API_DATABASE__PORT=5432
       RATES_API_DATABASE__TLS=verify-full    RATES_API_DATABASE__CA_FILE=/etc/rds-ca.pem
       RATES_API_DATABASE__SECRET=dbgw/rates-api
       RATES_API_SECRETS__DIR=/run/secrets    RATES_API_API__MAX_RANGE_DAYS=1096
       RATES_API_LOG__LEVEL=info              RATES_API_LOG__FORMAT=json

The database password is never configured here: it is read from the secret store
(`[secrets]`), from the secret named by database.secret, and re-read for new connections,
so a rotated password is picked up without a restart. Keys such as `password` are refused.

`rates-api --print-config` shows the effective configuration. See docs/rates-api.md.";

/// The rates service: average daily prices between ports or regions, over HTTP.
#[derive(Parser)]
#[command(version, about, after_long_help = CONFIG_HELP, after_help = CONFIG_HELP)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "RATES_API_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file and environment merged) as JSON and
    /// exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("rates-api: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.print_config {
        // Holds no secret: the configuration cannot contain one.
        println!(
            "{}",
            serde_json::to_string_pretty(&settings).expect("settings serialize")
        );
        return std::process::ExitCode::SUCCESS;
    }
    startup::telemetry::init(&settings.log);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if settings.worker_threads > 0 {
        runtime.worker_threads(settings.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        // Installed before anything slow, so a SIGTERM during start-up is a clean stop too.
        let stop = startup::shutdown::signal();
        run(settings, stop).await
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "rates-api failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(
    settings: Settings,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        stop.await;
        let _ = stopping_tx.send(());
    };
    let drain_limit = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(DRAIN_LIMIT).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = app.run_until_stopped(shutdown) => served?,
        () = drain_limit => tracing::warn!(
            limit = ?DRAIN_LIMIT,
            "requests still in flight after the drain limit; exiting anyway"
        ),
    }
    Ok(())
}
