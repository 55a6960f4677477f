//! Tracing set-up: one call per process, JSON lines by default.
//!
//! Crates that log through `log` (librdkafka's bindings) reach tracing
//! through [`LogBridge`], not tracing-log's `LogTracer`: that one adds
//! `log.file` and `log.module_path` fields to every line, absolute paths
//! into the build machine's cargo registry.

use tracing::Level;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`. Calling it
/// twice (tests) keeps the first subscriber.
pub fn init(service: &'static str, log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let max = filter
        .max_level_hint()
        .and_then(|l| l.into_level())
        .unwrap_or(Level::TRACE);
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Json => tracing::subscriber::set_global_default(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish(),
        ),
        LogFormat::Pretty => tracing::subscriber::set_global_default(builder.finish()),
    };
    if installed.is_ok() {
        if log::set_logger(&LogBridge).is_ok() {
            log::set_max_level(match max {
                Level::ERROR => log::LevelFilter::Error,
                Level::WARN => log::LevelFilter::Warn,
                Level::INFO => log::LevelFilter::Info,
                Level::DEBUG => log::LevelFilter::Debug,
                Level::TRACE => log::LevelFilter::Trace,
            });
        }
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}

/// Forwards `log` records to tracing with their target as a field (`from`)
/// and nothing else of the record's origin.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let from = record.target();
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "log", from, "{message}"),
            log::Level::Warn => tracing::warn!(target: "log", from, "{message}"),
            log::Level::Info => tracing::info!(target: "log", from, "{message}"),
            log::Level::Debug => tracing::debug!(target: "log", from, "{message}"),
            log::Level::Trace => tracing::trace!(target: "log", from, "{message}"),
        }
    }

    fn flush(&self) {}
}
