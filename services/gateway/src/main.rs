//! The gateway process.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::main(
        "gateway",
        "gateway",
        |settings, http, shutdown| async move {
            gateway::Application::build(settings, http, shutdown)
                .await?
                .run()
                .await
        },
    )
    .await
}
