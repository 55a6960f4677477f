//! The jobs' tables, in one place: a job created with its map tasks (in the
//! outbox, one transaction), its progress as the reducers record it, the
//! latest jobs, cancelling, and a succeeded job's pages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;

shared::text_enum! {
    /// Where a job is (`pagecount_jobs.state`).
    JobState {
        /// Map or reduce tasks are still running.
        Running = "running",
        /// Every line is counted: the pages are served.
        Succeeded = "succeeded",
        /// Cancelled: nothing is served.
        Cancelled = "cancelled",
    }
}

/// A job to store: what it counts and how.
pub struct NewJob<'a> {
    pub input_topic: &'a str,
    pub ranges: &'a [Range],
    pub lines_total: i64,
    pub chunk_lines: i32,
    pub chunks_total: i32,
    pub shuffle_partitions: i32,
    pub combiner: bool,
}

/// Stores `job` and, in the same transaction, its map tasks in the outbox
/// (`tasks` makes them, `(key, payload)`, from the job's id): a coordinator
/// killed after the commit leaves the tasks to the next relay. Keeps the
/// results of the last `keep_jobs` jobs. The new job's id.
pub async fn create(
    pool: &PgPool,
    job: NewJob<'_>,
    keep_jobs: i64,
    tasks: impl FnOnce(i64) -> Vec<(String, String)>,
) -> sqlx::Result<i64> {
    let state = match job.chunks_total {
        0 => JobState::Succeeded,
        _ => JobState::Running,
    };
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO pagecount_jobs (state, input_topic, ranges, lines_total, chunk_lines, chunks_total, shuffle_partitions, combiner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(state)
    .bind(job.input_topic)
    .bind(sqlx::types::Json(job.ranges))
    .bind(job.lines_total)
    .bind(job.chunk_lines)
    .bind(job.chunks_total)
    .bind(job.shuffle_partitions)
    .bind(job.combiner)
    .fetch_one(&mut *tx)
    .await?;
    let (keys, payloads): (Vec<String>, Vec<String>) = tasks(id).into_iter().unzip();
    sqlx::query(
        "INSERT INTO pagecount_outbox (job_id, task_key, payload)
         SELECT $1, key, payload FROM unnest($2::text[], $3::text[]) AS t(key, payload)",
    )
    .bind(id)
    .bind(&keys)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM pagecount_jobs WHERE state <> 'running' AND id <= $1 - $2")
        .bind(id)
        .bind(keep_jobs)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

/// One partition's range of the input.
#[derive(Serialize, ToSchema)]
pub struct Range {
    pub partition: i32,
    pub start: i64,
    /// Exclusive.
    pub end: i64,
}

/// A job with its progress.
#[derive(Serialize, ToSchema)]
pub struct Job {
    id: i64,
    state: JobState,
    input_topic: String,
    /// What the job counts, per partition.
    #[schema(value_type = Vec<Range>)]
    ranges: Value,
    lines_total: i64,
    chunk_lines: i32,
    combiner: bool,
    /// Map tasks.
    chunks: Chunks,
    /// Shuffle partitions reduced to their final counts.
    shuffle_partitions: FinalPartitions,
    lines: Lines,
    /// What the mappers sent to the reducers.
    shuffle: Shuffle,
    seconds: Seconds,
    /// 0 to 1: half for the map tasks done, half for the partitions reduced.
    progress: f64,
    /// Estimated seconds left while running; null otherwise.
    eta_seconds: Option<f64>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct Chunks {
    done: i64,
    total: i32,
}

#[derive(Serialize, ToSchema)]
pub struct FinalPartitions {
    r#final: i64,
    total: i32,
}

/// The lines the mappers read.
#[derive(Serialize, ToSchema)]
pub struct Lines {
    read: i64,
    counted: i64,
    /// Not a web-server log line (dead-lettered).
    rejected: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Shuffle {
    records: i64,
    bytes: i64,
}

/// How long each phase took.
#[derive(Serialize, ToSchema)]
pub struct Seconds {
    /// Null until every map task is done.
    map: Option<f64>,
    /// Null until the job finished.
    reduce: Option<f64>,
    /// So far, while running.
    total: f64,
}

/// A job with its progress.
pub async fn job(pool: &PgPool, id: i64) -> sqlx::Result<Option<Job>> {
    type Row = (
        i64,
        JobState,
        String,
        Value,
        i64,
        i32,
        i32,
        i32,
        bool,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, state, input_topic, ranges, lines_total, chunk_lines, chunks_total, shuffle_partitions, combiner,
                created_at, mapped_at, finished_at FROM pagecount_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((
        id,
        state,
        topic,
        ranges,
        lines_total,
        chunk_lines,
        chunks_total,
        partitions,
        combiner,
        created,
        mapped,
        finished,
    )) = row
    else {
        return Ok(None);
    };
    // Each chunk's marker reaches every shuffle partition: partition 0's copy counts it once.
    let (chunks_done, lines, rejected, records, bytes): (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(lines)::bigint, sum(rejected)::bigint, sum(records)::bigint, sum(bytes)::bigint
         FROM pagecount_chunks WHERE job_id = $1 AND shuffle_partition = 0",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let (final_partitions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pagecount_partitions WHERE job_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let (lines, rejected) = (lines.unwrap_or(0), rejected.unwrap_or(0));
    let progress = if chunks_total == 0 {
        1.0
    } else {
        0.5 * chunks_done as f64 / f64::from(chunks_total)
            + 0.5 * final_partitions as f64 / f64::from(partitions)
    };
    let elapsed = (finished.unwrap_or_else(Utc::now) - created).as_seconds_f64();
    let eta = (state == JobState::Running && progress > 0.0)
        .then(|| elapsed * (1.0 - progress) / progress);
    let seconds = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| {
        a.zip(b).map(|(a, b)| (b - a).as_seconds_f64())
    };
    Ok(Some(Job {
        id,
        state,
        input_topic: topic,
        ranges,
        lines_total,
        chunk_lines,
        combiner,
        chunks: Chunks {
            done: chunks_done,
            total: chunks_total,
        },
        shuffle_partitions: FinalPartitions {
            r#final: final_partitions,
            total: partitions,
        },
        lines: Lines {
            read: lines,
            counted: lines - rejected,
            rejected,
        },
        shuffle: Shuffle {
            records: records.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        },
        seconds: Seconds {
            map: seconds(Some(created), mapped),
            reduce: seconds(mapped, finished),
            total: elapsed,
        },
        progress,
        eta_seconds: eta,
        created_at: created,
        finished_at: finished,
    }))
}

/// The ids of the `n` newest jobs, newest first.
pub async fn latest(pool: &PgPool, n: i64) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("SELECT id FROM pagecount_jobs ORDER BY id DESC LIMIT $1")
        .bind(n)
        .fetch_all(pool)
        .await
}

/// Job `id`'s state.
pub async fn state(pool: &PgPool, id: i64) -> sqlx::Result<Option<JobState>> {
    sqlx::query_scalar("SELECT state FROM pagecount_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Cancels job `id` if it is running, and deletes its partial sums: nothing
/// half-written is served. Its state after (a job that had finished keeps
/// its state); none if there is no such job.
pub async fn cancel(pool: &PgPool, id: i64) -> sqlx::Result<Option<JobState>> {
    let state: Option<JobState> = sqlx::query_scalar(
        "UPDATE pagecount_jobs SET state = CASE WHEN state = 'running' THEN 'cancelled' ELSE state END,
                finished_at = CASE WHEN state = 'running' THEN now() ELSE finished_at END
         WHERE id = $1 RETURNING state",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    if state == Some(JobState::Cancelled) {
        sqlx::query("DELETE FROM pagecount_pages WHERE job_id = $1")
            .bind(id)
            .execute(pool)
            .await?;
    }
    Ok(state)
}

/// Up to `limit` of job `id`'s pages after `(count, page)`, by count then
/// page, both descending.
pub async fn pages(
    pool: &PgPool,
    id: i64,
    after: Option<(i64, &str)>,
    limit: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT page, count FROM pagecount_pages WHERE job_id = $1
           AND ($2::bigint IS NULL OR (count, page) < ($2, $3))
         ORDER BY count DESC, page DESC LIMIT $4",
    )
    .bind(id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_described_states_are_the_stored_ones() {
        shared::testkit::schema_matches(JobState::ALL);
    }
}
