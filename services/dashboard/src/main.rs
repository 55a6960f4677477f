//! The dashboard process.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::main(
        "dashboard",
        "dashboard",
        |settings, config, shutdown| async move {
            dashboard::Application::build(settings, config, shutdown)
                .await?
                .run()
                .await
        },
    )
    .await
}
