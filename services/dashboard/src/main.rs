//! The dashboard process.

/// mimalloc: the hot paths (JSON, Kafka records, model updates) allocate per
/// event, and glibc's malloc/free showed up as ~17% of the gateway's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Idle between bursts: what a burst freed goes back to the OS.
    shared::memory::purge_at_once();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A replay's blocking threads retire 1 s after their last task (not
        // tokio's 10 s): the memory their heaps hold goes back with them.
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()?
        .block_on(shared::service::main(
            "dashboard",
            "dashboard",
            |settings, config, shutdown| async move {
                dashboard::Application::build(settings, config, shutdown)
                    .await?
                    .run()
                    .await
            },
        ))
}
