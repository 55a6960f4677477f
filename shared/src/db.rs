//! The Postgres pool, with the project's migrations applied at start-up
//! (sqlx takes an advisory lock, so concurrent starters do not race).

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseConfig;

/// The workspace's `migrations/`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connects and migrates.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let pool = pool(cfg, cfg.max_connections, &[]).await?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

/// A second pool of a process that has [`connect`]ed, for reads by key
/// (an API's answers): at most `connections`, and generic plans. A
/// prepared statement is then planned once per connection; by default
/// PostgreSQL plans each execution again while it judges the generic plan
/// dearer, and for the recommendation's answers (`= ANY($n)` of a few
/// keys) it always did: a fifth of PostgreSQL's time went to planning.
pub async fn readers(cfg: &DatabaseConfig, connections: u32) -> anyhow::Result<PgPool> {
    pool(
        cfg,
        connections,
        &[("plan_cache_mode", "force_generic_plan")],
    )
    .await
}

async fn pool(
    cfg: &DatabaseConfig,
    connections: u32,
    settings: &[(&str, &str)],
) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = cfg
        .url
        .expose()
        .parse()
        .context("database.url is not a PostgreSQL URL")?;
    // A process paused or hung inside a transaction (SIGSTOP, a debugger, a
    // stuck VM) must not hold its row locks forever: the server ends such a
    // session, and whoever owns the partitions now can commit.
    let options = options
        .options([(
            "idle_in_transaction_session_timeout",
            format!("{}ms", cfg.idle_in_transaction_timeout_ms),
        )])
        .options(settings.iter().copied());
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")
}
