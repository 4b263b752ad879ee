//! `bootstrap`: the rotation function. Without arguments it is the AWS Lambda handler that
//! Secrets Manager calls for each step; `rotate` and `schedule` run rotations locally.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rotation::settings::Config;
use rotation::steps::Event;
use rotation::Rotator;

/// Rotates database passwords kept in AWS Secrets Manager (or moto server locally).
///
/// Run without a command, it is the Lambda handler Secrets Manager calls with each of the
/// four steps (createSecret, setSecret, testSecret, finishSecret). `rotate` rotates one
/// secret now, playing Secrets Manager's part; `schedule` repeats that on an interval (the
/// local stack's schedule, made short for demonstrations).
///
/// Configuration: defaults, then --config (or ROTATION_CONFIG), then environment variables
/// ROTATION_<SECTION>__<KEY>, e.g. ROTATION_DATABASE__CA_FILE=/var/task/rds-ca/global-bundle.pem
/// ROTATION_SECRETS__ENDPOINT_URL=http://127.0.0.1:5000. AWS credentials and region come
/// from the SDK's usual chain. See docs/rotation.md.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, env = "ROTATION_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Be the Lambda handler (the default).
    Lambda,
    /// Rotate a secret now (resuming a rotation left halfway).
    Rotate { secret_id: String },
    /// Rotate secrets every interval, until stopped: the ones named, or else every secret
    /// with rotation on (as Secrets Manager does).
    Schedule {
        /// Interval in seconds (30 days is 2592000).
        #[arg(long, default_value_t = 2_592_000)]
        every_secs: u64,
        /// Turn rotation on for this secret first (repeatable), naming --function-arn, as
        /// Terraform does in AWS. It is then rotated like every other secret with rotation on.
        #[arg(long, value_name = "SECRET_ID", requires = "function_arn")]
        enable: Vec<String>,
        /// The function --enable names (the local stack: moto calls no function, any ARN does).
        #[arg(long)]
        function_arn: Option<String>,
        secret_ids: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: Config = match startup::config::load(cli.config.as_deref(), "ROTATION_") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (settings, policy) = config.split();
    startup::telemetry::init(&settings.log);
    tls_config::install_provider();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        let sm = secret_store::aws::client(&settings.secrets).await;
        let rotator = Rotator::with_policy(sm, settings, policy);
        match cli.command.unwrap_or(Command::Lambda) {
            Command::Lambda => lambda(rotator).await,
            Command::Rotate { secret_id } => {
                let version = rotation::local::rotate(&rotator, &secret_id).await?;
                println!("{secret_id}: version {version} is current");
                Ok(())
            }
            Command::Schedule {
                every_secs,
                enable,
                function_arn,
                secret_ids,
            } => {
                let store = rotator.store();
                for id in &enable {
                    store
                        .enable_rotation(id, function_arn.as_deref().unwrap_or_default(), 30)
                        .await?;
                }
                tokio::select! {
                    _ = rotation::local::schedule(&rotator, &secret_ids, Duration::from_secs(every_secs)) => {}
                    _ = startup::shutdown::signal() => {}
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "rotation failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn lambda(rotator: Rotator) -> anyhow::Result<()> {
    let rotator = &rotator;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Event>| async move {
            let e = event.payload;
            rotator
                .handle(&e.secret_id, &e.token, e.step)
                .await
                .map_err(|err| {
                    tracing::error!(secret = %e.secret_id, step = ?e.step, error = %err, "step failed");
                    lambda_runtime::Error::from(err.to_string())
                })
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}
