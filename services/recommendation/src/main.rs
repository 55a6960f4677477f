//! The recommendation process.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::main(
        "recommendation",
        "recommendation",
        |settings, config, shutdown| async move {
            recommendation::Application::build(settings, config, shutdown)
                .await?
                .run()
                .await
        },
    )
    .await
}
