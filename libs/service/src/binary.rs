//! The `main` skeleton of a service. Argument parsing stays in the binary (each has its own
//! commands); everything after it is here, so every service exits with the same codes: 2 for
//! a configuration it cannot use, 1 for a failure while running, 0 after a clean stop.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use serde::Serialize;
use startup::telemetry::LogSettings;

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The loaded settings, or exit code 2 after saying why on stderr (logging is not up yet).
pub fn settings<S>(name: &str, loaded: anyhow::Result<S>) -> Result<S, ExitCode> {
    loaded.map_err(|e| {
        eprintln!("{name}: {e:#}");
        ExitCode::from(2)
    })
}

/// `--print-config`: the effective configuration as JSON. It holds no secret: the
/// configuration refuses keys that could hold one.
pub fn print_config<S: Serialize>(settings: &S) -> ExitCode {
    match serde_json::to_string_pretty(settings) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot print the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts logging and a multi-threaded runtime (`worker_threads` 0: one per CPU), installs
/// the shutdown signal before anything slow (so a SIGTERM during start-up is a clean stop
/// too) and runs `serve` with it until it returns.
pub fn run<F, Fut>(name: &str, log: &LogSettings, worker_threads: usize, serve: F) -> ExitCode
where
    F: FnOnce(Stop) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    startup::telemetry::init(log);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        runtime.worker_threads(worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let stop: Stop = Box::pin(startup::shutdown::signal());
        serve(stop).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            ExitCode::FAILURE
        }
    }
}
