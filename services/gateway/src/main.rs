//! The gateway process.

/// mimalloc: the hot paths (JSON, Kafka records, model updates) allocate per
/// event, and glibc's malloc/free showed up as ~17% of the gateway's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Idle between bursts: what a burst freed goes back to the OS.
    shared::memory::purge_at_once();
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
