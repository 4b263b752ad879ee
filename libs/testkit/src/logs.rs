//! The logs of the code under test, behind an environment variable.

use std::sync::Once;

/// Logs of the code under test, for a failing test's reader: off unless `DBGW_TEST_LOG` is
/// set (to a `tracing` filter such as `debug` or `proxy=trace`).
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(level) = std::env::var("DBGW_TEST_LOG") {
            startup::telemetry::init(&startup::telemetry::LogSettings {
                level,
                format: startup::telemetry::LogFormat::Text,
            });
        }
    });
}
