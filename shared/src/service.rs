//! The start-up every service process shares: configuration (the common
//! sections plus the service's own), telemetry, the shutdown signal, then the
//! service itself. A service's `main` is one call.

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::config::Settings;
use crate::shutdown::CancellationToken;

/// Loads `[section]` and the shared settings, starts telemetry as `service`,
/// and runs `start` until it returns (SIGTERM/SIGINT cancel its token).
/// What is left to drop afterwards (a Kafka client leaving its group) gets
/// `shutdown.grace_ms` more, never longer: with the broker gone,
/// librdkafka's close can wait far beyond any bound a supervisor keeps.
pub async fn main<C, F, Fut>(service: &'static str, section: &str, start: F) -> anyhow::Result<()>
where
    C: DeserializeOwned,
    F: FnOnce(Settings, C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let loaded = crate::config::load()?;
    let settings = loaded.settings()?;
    let config: C = loaded.section(section)?;
    crate::telemetry::init(service, &settings.log);
    crate::event::Limits::install(settings.events);
    let shutdown = crate::shutdown::on_signal();
    let grace = settings.shutdown.grace();
    let result = start(settings, config, shutdown).await;
    let code = i32::from(result.is_err());
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "clean-up after shutdown outlasted the grace period; exiting"
        );
        std::process::exit(code);
    });
    result
}
