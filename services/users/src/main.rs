//! The users service process.

/// mimalloc, as in every binary of the suite.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::main("users", "users", |settings, config, shutdown| async move {
        users::Application::build(settings, config, shutdown)
            .await?
            .run()
            .await
    })
    .await
}
