//! The `replay_runs` table, and storing a successful run's results.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::{By, RunState, Trigger};
use crate::aggregate::{Day, Results};

/// One replay run as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    #[sqlx(try_from = "String")]
    pub trigger: Trigger,
    /// The range's start time; none: from the earliest offsets.
    pub from_time: Option<DateTime<Utc>>,
    /// The range's end time; none: up to the end offsets snapshotted at the start.
    pub to_time: Option<DateTime<Utc>>,
    #[sqlx(try_from = "String")]
    pub state: RunState,
    /// Per partition (as a string), the first offset read; none before the range is planned.
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    pub start_offsets: Option<Value>,
    /// Per partition, the offset the range ends before (snapshotted at the start).
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    pub end_offsets: Option<Value>,
    /// Records in the range.
    pub records: Option<i64>,
    /// Parsed events among them.
    pub events: Option<i64>,
    /// Records that did not parse (or whose claim check did not resolve).
    pub rejected: Option<i64>,
    /// Payload bytes read.
    pub bytes: Option<i64>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why a failed run failed.
    pub error: Option<String>,
}

impl Run {
    /// From the earliest offsets to the end snapshotted at its start: only
    /// such a run may become current; one over a custom range (a `from`
    /// time or a `to`) holds part of the data and is served by its id only.
    pub fn is_full(&self) -> bool {
        self.from_time.is_none() && self.to_time.is_none()
    }
}

/// Queues a run; returns its id.
pub async fn enqueue(
    pool: &PgPool,
    trigger: Trigger,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO replay_runs (trigger, from_time, to_time) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(trigger.as_str())
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
}

/// Queues an automatic run unless one is already waiting (then the waiting
/// one serves this trigger too); returns the new run's id.
pub async fn enqueue_automatic(pool: &PgPool, trigger: Trigger) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO replay_runs (trigger) VALUES ($1)
         ON CONFLICT ((true)) WHERE state = 'queued' AND trigger <> 'manual' DO NOTHING
         RETURNING id",
    )
    .bind(trigger.as_str())
    .fetch_optional(pool)
    .await
}

/// Whether a run is queued or running.
pub async fn busy(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM replay_runs WHERE state IN ('queued', 'running'))",
    )
    .fetch_one(pool)
    .await
}

/// The newest successful full run (what a threshold counts new data from:
/// a custom range's end offsets say nothing about what was covered).
pub async fn last_success(pool: &PgPool) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(
        "SELECT * FROM replay_runs WHERE state = 'succeeded' AND from_time IS NULL AND to_time IS NULL
         ORDER BY id DESC LIMIT 1",
    )
        .fetch_optional(pool)
        .await
}

/// Takes the oldest queued run and marks it running.
pub async fn claim_next(conn: &mut PgConnection) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(
        "UPDATE replay_runs SET state = 'running', started_at = now()
         WHERE id = (SELECT id FROM replay_runs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *",
    )
    .fetch_optional(conn)
    .await
}

/// Runs left `running` by a process that died: only called under the replay
/// lock, so none of them can still be running.
pub async fn fail_interrupted(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE replay_runs SET state = 'failed', finished_at = now(), error = 'interrupted: the replaying process stopped'
         WHERE state = 'running'",
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Records the snapshotted range of a run.
pub async fn record_range(
    pool: &PgPool,
    id: i64,
    start: &BTreeMap<i32, i64>,
    end: &BTreeMap<i32, i64>,
    records: u64,
) -> sqlx::Result<()> {
    let json = |m: &BTreeMap<i32, i64>| {
        Value::Object(
            m.iter()
                .map(|(p, o)| (p.to_string(), Value::from(*o)))
                .collect(),
        )
    };
    sqlx::query(
        "UPDATE replay_runs SET start_offsets = $2, end_offsets = $3, records = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(json(start))
    .bind(json(end))
    .bind(records as i64)
    .execute(pool)
    .await?;
    Ok(())
}

/// What a run read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub events: u64,
    pub rejected: u64,
    pub bytes: u64,
}

/// Stores a successful run's results and, for a full run, makes it current,
/// in one transaction; then keeps only the newest `keep` finished runs and
/// the current one.
pub async fn succeed(
    pool: &PgPool,
    run: &Run,
    results: &Results,
    counts: Counts,
    keep: i64,
) -> sqlx::Result<()> {
    let id = run.id;
    let mut tx = pool.begin().await?;
    let mut daily = DailyColumns::default();
    let mut top = TopColumns::default();
    for (date, result) in &results.days {
        daily.push(*date, &result.day);
        for (by, list) in [
            (By::Views, &result.top_views),
            (By::Purchases, &result.top_purchases),
        ] {
            for (rank, (product, count)) in list.iter().enumerate() {
                top.day.push(*date);
                top.by.push(by.as_str());
                top.rank.push(rank as i32 + 1);
                top.product.push(product.as_str());
                top.count.push(*count as i64);
            }
        }
    }
    sqlx::query(
        "INSERT INTO dashboard_daily (run_id, day, active_users, viewing_users, purchasing_users, views, clicks, add_to_cart, purchases, revenue_cents)
         SELECT $1, * FROM UNNEST($2::date[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[])",
    )
    .bind(id)
    .bind(daily.day)
    .bind(daily.active)
    .bind(daily.viewing)
    .bind(daily.purchasing)
    .bind(daily.views)
    .bind(daily.clicks)
    .bind(daily.carts)
    .bind(daily.purchases)
    .bind(daily.revenue)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO dashboard_top_products (run_id, day, by, rank, product_id, count)
         SELECT $1, * FROM UNNEST($2::date[], $3::text[], $4::int4[], $5::text[], $6::int8[])",
    )
    .bind(id)
    .bind(top.day)
    .bind(top.by)
    .bind(top.rank)
    .bind(top.product)
    .bind(top.count)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE replay_runs SET state = 'succeeded', finished_at = now(), events = $2, rejected = $3, bytes = $4 WHERE id = $1",
    )
        .bind(id)
        .bind(counts.events as i64)
        .bind(counts.rejected as i64)
        .bind(counts.bytes as i64)
        .execute(&mut *tx)
        .await?;
    if run.is_full() {
        sqlx::query(
            "INSERT INTO dashboard_current (singleton, run_id) VALUES (true, $1)
             ON CONFLICT (singleton) DO UPDATE SET run_id = EXCLUDED.run_id",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    // Retention: the newest `keep` finished runs, and the current one however
    // many custom-range runs came after it.
    sqlx::query(
        "DELETE FROM replay_runs WHERE state IN ('succeeded', 'failed') AND id NOT IN
           (SELECT id FROM replay_runs WHERE state IN ('succeeded', 'failed') ORDER BY id DESC LIMIT $1)
         AND id NOT IN (SELECT run_id FROM dashboard_current)",
    )
    .bind(keep.max(1))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// `dashboard_daily` rows as columns, for one UNNEST insert.
#[derive(Default)]
struct DailyColumns {
    day: Vec<NaiveDate>,
    active: Vec<i64>,
    viewing: Vec<i64>,
    purchasing: Vec<i64>,
    views: Vec<i64>,
    clicks: Vec<i64>,
    carts: Vec<i64>,
    purchases: Vec<i64>,
    revenue: Vec<i64>,
}

impl DailyColumns {
    fn push(&mut self, date: NaiveDate, d: &Day) {
        let n = |v: u64| v as i64;
        self.day.push(date);
        self.active.push(n(d.active_users));
        self.viewing.push(n(d.viewing_users));
        self.purchasing.push(n(d.purchasing_users));
        self.views.push(n(d.views));
        self.clicks.push(n(d.clicks));
        self.carts.push(n(d.add_to_cart));
        self.purchases.push(n(d.purchases));
        self.revenue.push(n(d.revenue_cents));
    }
}

/// `dashboard_top_products` rows as columns.
#[derive(Default)]
struct TopColumns<'a> {
    day: Vec<NaiveDate>,
    by: Vec<&'static str>,
    rank: Vec<i32>,
    product: Vec<&'a str>,
    count: Vec<i64>,
}

/// Marks a run failed; what the API serves does not change.
pub async fn fail(pool: &PgPool, id: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE replay_runs SET state = 'failed', finished_at = now(), error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Run>> {
    sqlx::query_as("SELECT * FROM replay_runs ORDER BY id DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Run>> {
    sqlx::query_as("SELECT * FROM replay_runs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The id of the run served by default, if a full run succeeded yet.
pub async fn current_id(pool: &PgPool) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT run_id FROM dashboard_current")
        .fetch_optional(pool)
        .await
}

/// The run whose results are served by default, if a full run succeeded yet.
pub async fn current(pool: &PgPool) -> sqlx::Result<Option<Run>> {
    sqlx::query_as("SELECT r.* FROM dashboard_current c JOIN replay_runs r ON r.id = c.run_id")
        .fetch_optional(pool)
        .await
}
