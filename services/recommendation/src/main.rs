//! The recommendation process: configuration, telemetry, then the application.

/// mimalloc: the consume loop allocates per event (parsing, model updates).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = shared::config::load()?;
    let settings = loaded.settings()?;
    let config = loaded.section("recommendation")?;
    shared::telemetry::init("recommendation", &settings.log);
    let shutdown = shared::shutdown::on_signal();
    recommendation::Application::build(settings, config, shutdown)
        .await?
        .run()
        .await
}
