//! The pagecount process (`[pagecount] role` = coordinator | map | reduce),
//! or `pagecount local FILE | --topic NAME`, the single-process count.

/// mimalloc, as in every binary of the suite.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("local") {
        return tokio::task::spawn_blocking(move || pagecount::local::main(&args[1..])).await?;
    }
    shared::service::main(
        "pagecount",
        "pagecount",
        |settings, config, shutdown| async move {
            pagecount::Application::build(settings, config, shutdown)
                .await?
                .run()
                .await
        },
    )
    .await
}
