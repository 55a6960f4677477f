//! Every query of the dashboard, in one place: the replay runs (`runs`),
//! the results served (`results`), the product DAG's state (`products`), MapReduce jobs (`mapreduce`),
//! and the lock that lets one replay run at
//! a time across instances. The page and the API both read through here.

mod mapreduce;
mod products;
mod results;
mod runs;

use sqlx::PgConnection;

pub use mapreduce::{jobs as mapreduce_jobs, top_pages as mapreduce_top_pages, JobRow};
pub use products::{dag_summary, DagSummary};
pub use results::{stored_days, top_products};
pub use runs::*;

/// The advisory lock key of "a replay is running" (any 64-bit constant
/// shared by all instances).
const REPLAY_LOCK: i64 = 0x6b61_7070_6164_6173;

/// Takes the replay lock on `conn` if it is free.
pub async fn try_lock(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(REPLAY_LOCK)
        .fetch_one(conn)
        .await
}

/// Releases the replay lock held on `conn`.
pub async fn unlock(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(REPLAY_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

shared::text_enum! {
    /// Where a run is (`replay_runs.state`).
    RunState { Queued = "queued", Running = "running", Succeeded = "succeeded", Failed = "failed" }
}

shared::text_enum! {
    /// What started a run (`replay_runs.trigger`).
    Trigger { Manual = "manual", Schedule = "schedule", Interval = "interval", Threshold = "threshold" }
}

shared::text_enum! {
    /// What a run read (`replay_runs.kind`): the whole topic; the records
    /// after its base run's end, merged into the base's days; a custom time
    /// range (served by its id only).
    RunKind { Full = "full", Incremental = "incremental", Range = "range" }
}

shared::text_enum! {
    /// What a top-products list ranks by.
    By { Views = "views", Purchases = "purchases" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testkit::schema_matches;

    #[test]
    fn the_described_texts_are_the_serialized_ones() {
        schema_matches(RunState::ALL);
        schema_matches(Trigger::ALL);
        schema_matches(RunKind::ALL);
        schema_matches(By::ALL);
        assert_eq!(serde_json::to_value(By::Views).unwrap(), By::Views.as_str());
    }
}
