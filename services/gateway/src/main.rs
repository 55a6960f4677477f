//! The gateway process: configuration, telemetry, then the application.

/// mimalloc: the ingest path allocates per event (JSON, Kafka records), and
/// glibc's malloc/free showed up as ~17% of the gateway's CPU in a profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = shared::config::load()?;
    let settings = loaded.settings()?;
    let http = loaded.section("gateway")?;
    shared::telemetry::init("gateway", &settings.log);
    let shutdown = shared::shutdown::on_signal();
    gateway::Application::build(settings, http, shutdown)
        .await?
        .run()
        .await
}
