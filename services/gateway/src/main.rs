//! The gateway process: configuration, telemetry, then the application.

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
