//! The products process (`[products] role` = api | image | video | metadata | creator).

/// mimalloc, as in every binary of the suite.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::main(
        "products",
        "products",
        |settings, config, shutdown| async move {
            products::Application::build(settings, config, shutdown)
                .await?
                .run()
                .await
        },
    )
    .await
}
