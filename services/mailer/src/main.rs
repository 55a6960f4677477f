//! The mail worker process (`[mailer] mode` = stateless | stateful).

/// mimalloc, as in every binary of the suite.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::main(
        "mailer",
        "mailer",
        |settings, config, shutdown| async move {
            mailer::Application::build(settings, config, shutdown)
                .await?
                .run()
                .await
        },
    )
    .await
}
