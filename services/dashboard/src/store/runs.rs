//! The `replay_runs` table, and storing a successful run's results.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::{By, RunKind, RunState, Trigger};
use crate::aggregate::{self, Day, Results};

/// One replay run as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub trigger: Trigger,
    /// The range's start time; none: from the earliest offsets.
    pub from_time: Option<DateTime<Utc>>,
    /// The range's end time; none: up to the end offsets snapshotted at the start.
    pub to_time: Option<DateTime<Utc>>,
    pub state: RunState,
    /// What it read: `full`, `incremental` or `range`; none while an
    /// automatic run waits (decided when it starts).
    pub kind: Option<RunKind>,
    /// The run an incremental run merged its records into.
    pub base_run_id: Option<i64>,
    /// The version of what it computed (`dashboard::aggregate::VERSION`).
    pub aggregation_version: Option<i32>,
    /// Per partition, the offset its results count from: a full run's
    /// start, an incremental run's base's; none for a custom range.
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    pub covered_from: Option<Value>,
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
    /// Its results cover the whole topic up to the end snapshotted at its
    /// start (a full replay, or an incremental run on one): only such a run
    /// may become current; one over a custom range (a `from` time or a
    /// `to`) holds part of the data and is served by its id only.
    pub fn covers_topic(&self) -> bool {
        self.from_time.is_none() && self.to_time.is_none()
    }

    /// Per partition, the offset its range ended before.
    pub fn ends(&self) -> BTreeMap<i32, i64> {
        offsets(self.end_offsets.as_ref())
    }

    /// Per partition, the offset its results count from (its start offsets
    /// when it stored none).
    pub fn covered_from(&self) -> BTreeMap<i32, i64> {
        offsets(self.covered_from.as_ref().or(self.start_offsets.as_ref()))
    }
}

/// `{"<partition>": offset}` as stored.
fn offsets(stored: Option<&Value>) -> BTreeMap<i32, i64> {
    let offsets = stored.and_then(Value::as_object);
    offsets
        .into_iter()
        .flatten()
        .filter_map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?)))
        .collect()
}

/// `offsets` as stored.
fn stored(offsets: &BTreeMap<i32, i64>) -> Value {
    Value::Object(
        offsets
            .iter()
            .map(|(p, o)| (p.to_string(), Value::from(*o)))
            .collect(),
    )
}

/// Queues a run asked for (a full replay, or a custom range); returns its id.
pub async fn enqueue(
    pool: &PgPool,
    trigger: Trigger,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<i64> {
    let kind = if from.is_none() && to.is_none() {
        RunKind::Full
    } else {
        RunKind::Range
    };
    sqlx::query_scalar(
        "INSERT INTO replay_runs (trigger, from_time, to_time, kind) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(trigger.as_str())
    .bind(from)
    .bind(to)
    .bind(kind.as_str())
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

/// The current run, and whether an automatic run can continue it: its
/// days' mergeable state was made by this aggregation version.
pub async fn current_chain(pool: &PgPool) -> sqlx::Result<Option<(Run, bool)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        run: Run,
        continuable: bool,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT r.*, c.state_version IS NOT DISTINCT FROM $1 AND r.end_offsets IS NOT NULL AS continuable
         FROM dashboard_current c JOIN replay_runs r ON r.id = c.run_id",
    )
    .bind(aggregate::VERSION)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.run, r.continuable)))
}

/// The run an automatic run continues from ([`current_chain`]), if any.
pub async fn chain_base(pool: &PgPool) -> sqlx::Result<Option<Run>> {
    let chain = current_chain(pool).await?;
    Ok(chain.and_then(|(run, continuable)| continuable.then_some(run)))
}

/// Where the current run's repeat detection ended (`replay::Windows`, encoded).
pub async fn windows(conn: &mut PgConnection) -> sqlx::Result<Option<Vec<u8>>> {
    let windows = sqlx::query_scalar("SELECT windows FROM dashboard_current")
        .fetch_optional(conn)
        .await?;
    Ok(windows.flatten())
}

/// The stored mergeable state of those of `days` the current run counted.
pub async fn day_states(
    conn: &mut PgConnection,
    days: &[NaiveDate],
) -> sqlx::Result<Vec<(NaiveDate, Vec<u8>)>> {
    sqlx::query_as("SELECT day, state FROM dashboard_day_state WHERE day = ANY($1)")
        .bind(days)
        .fetch_all(conn)
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

/// What a run reads, decided when it starts.
pub struct Range<'a> {
    pub kind: RunKind,
    /// The run an incremental run continues.
    pub base: Option<&'a Run>,
    pub start: &'a BTreeMap<i32, i64>,
    pub end: &'a BTreeMap<i32, i64>,
    pub records: u64,
}

/// Records the snapshotted range of a run and what kind of run it is.
pub async fn record_range(pool: &PgPool, id: i64, range: Range<'_>) -> sqlx::Result<()> {
    let covered_from = match (range.kind, range.base) {
        (RunKind::Full, _) => Some(stored(range.start)),
        (RunKind::Incremental, Some(base)) => Some(stored(&base.covered_from())),
        _ => None,
    };
    sqlx::query(
        "UPDATE replay_runs SET start_offsets = $2, end_offsets = $3, records = $4, kind = $5,
                base_run_id = $6, aggregation_version = $7, covered_from = $8
         WHERE id = $1",
    )
    .bind(id)
    .bind(stored(range.start))
    .bind(stored(range.end))
    .bind(range.records as i64)
    .bind(range.kind.as_str())
    .bind(range.base.map(|b| b.id))
    .bind(aggregate::VERSION)
    .bind(covered_from)
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

/// What a successful run stores.
pub struct Outcome {
    /// The days it computed (an incremental run: the days its records touched).
    pub results: Results,
    pub counts: Counts,
    /// For a run that covers the topic, each computed day's mergeable state
    /// (`Aggregate::encode_day`).
    pub states: Vec<(NaiveDate, Vec<u8>)>,
    /// For a run that covers the topic, where its repeat detection ended
    /// (`replay::Windows`, encoded).
    pub windows: Vec<u8>,
    /// For an incremental run, the run whose other days it carries over.
    pub base: Option<i64>,
}

/// Why storing a successful run was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Another run became current while this one merged into its base.
    #[error("run {base}, which this run continues, is no longer current (now {current:?})")]
    BaseMoved { base: i64, current: Option<i64> },
}

/// Stores a successful run's results and, for a run that covers the topic,
/// makes it current with its days' state, in one transaction (an
/// incremental run carries its base's untouched days over); then keeps
/// only the newest `keep` finished runs and the current one.
pub async fn succeed(
    conn: &mut PgConnection,
    run: &Run,
    outcome: &Outcome,
    keep: i64,
) -> Result<(), StoreError> {
    let (id, results, counts) = (run.id, &outcome.results, outcome.counts);
    let mut tx = sqlx::Connection::begin(conn).await?;
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
    if run.covers_topic() {
        become_current(&mut tx, id, outcome).await?;
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
    tx.commit().await?;
    Ok(())
}

/// Copies run $2's results of the days not in $3 to run $1, table by table.
const CARRY_OVER: [&str; 2] = [
    "INSERT INTO dashboard_daily (run_id, day, active_users, viewing_users, purchasing_users, views, clicks, add_to_cart, purchases, revenue_cents)
     SELECT $1, day, active_users, viewing_users, purchasing_users, views, clicks, add_to_cart, purchases, revenue_cents
     FROM dashboard_daily WHERE run_id = $2 AND NOT day = ANY($3)",
    "INSERT INTO dashboard_top_products (run_id, day, by, rank, product_id, count)
     SELECT $1, day, by, rank, product_id, count
     FROM dashboard_top_products WHERE run_id = $2 AND NOT day = ANY($3)",
];

/// Makes run `id` current with its days' state: a full run's state replaces
/// all of it; an incremental run's replaces its days' and carries its
/// base's other days over, if the base is still current.
async fn become_current(
    tx: &mut PgConnection,
    id: i64,
    outcome: &Outcome,
) -> Result<(), StoreError> {
    let current: Option<i64> =
        sqlx::query_scalar("SELECT run_id FROM dashboard_current FOR UPDATE")
            .fetch_optional(&mut *tx)
            .await?;
    match outcome.base {
        Some(base) if current != Some(base) => return Err(StoreError::BaseMoved { base, current }),
        Some(base) => {
            let computed: Vec<NaiveDate> = outcome.results.days.keys().copied().collect();
            for carry_over in CARRY_OVER {
                sqlx::query(carry_over)
                    .bind(id)
                    .bind(base)
                    .bind(&computed)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        None => {
            sqlx::query("DELETE FROM dashboard_day_state")
                .execute(&mut *tx)
                .await?;
        }
    }
    let (days, states): (Vec<NaiveDate>, Vec<&[u8]>) = outcome
        .states
        .iter()
        .map(|(day, state)| (*day, state.as_slice()))
        .unzip();
    sqlx::query(
        "INSERT INTO dashboard_day_state (day, state) SELECT * FROM UNNEST($1::date[], $2::bytea[])
         ON CONFLICT (day) DO UPDATE SET state = EXCLUDED.state",
    )
    .bind(days)
    .bind(states)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO dashboard_current (singleton, run_id, state_version, windows) VALUES (true, $1, $2, $3)
         ON CONFLICT (singleton) DO UPDATE
         SET run_id = EXCLUDED.run_id, state_version = EXCLUDED.state_version, windows = EXCLUDED.windows",
    )
    .bind(id)
    .bind(aggregate::VERSION)
    .bind(&outcome.windows)
    .execute(&mut *tx)
    .await?;
    Ok(())
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
