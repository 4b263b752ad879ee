//! `rates-api`: the binary. Reads the configuration, sets up logging, serves until SIGTERM or
//! SIGINT, drains in-flight requests and exits 0.

use std::path::PathBuf;

use clap::Parser;
use rates_api::{Application, Settings};

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
    let settings =
        match service::binary::settings("rates-api", Settings::load(cli.config.as_deref())) {
            Ok(settings) => settings,
            Err(code) => return code,
        };
    if cli.print_config {
        return service::binary::print_config(&settings);
    }
    let (log, threads) = (settings.log.clone(), settings.worker_threads);
    service::binary::run("rates-api", &log, threads, |stop| async move {
        Application::build(settings)
            .await?
            .run_until_stopped(stop)
            .await?;
        Ok(())
    })
}
