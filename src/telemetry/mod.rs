//! Telemetry: logging setup, metric names and the metrics hub, the `/metrics` endpoint.
//!
//! Logs go to stderr through `tracing`, as text or JSON lines, filtered by level
//! (`RUST_LOG` overrides). Per-packet events are never logged at info or above.

pub mod metrics;
pub mod server;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber; later calls are ignored.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
