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
    let options: PgConnectOptions = cfg
        .url
        .expose()
        .parse()
        .context("database.url is not a PostgreSQL URL")?;
    // A process paused or hung inside a transaction (SIGSTOP, a debugger, a
    // stuck VM) must not hold its row locks forever: the server ends such a
    // session, and whoever owns the partitions now can commit.
    let options = options.options([(
        "idle_in_transaction_session_timeout",
        format!("{}ms", cfg.idle_in_transaction_timeout_ms),
    )]);
    let pool = PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}
