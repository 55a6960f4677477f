//! The `consumer_offsets` table: read at assignment, advanced with a
//! compare-and-set in every batch transaction.

use sqlx::{PgConnection, PgPool};

/// Where a partition stands in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The next offset to read; `None` when this consumer never committed the partition.
    pub next: Option<i64>,
}

/// Reads the stored positions of `partitions`.
pub async fn load(
    pool: &PgPool,
    consumer: &str,
    topic: &str,
    partitions: &[i32],
) -> sqlx::Result<Vec<(i32, Position)>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM consumer_offsets
         WHERE consumer = $1 AND topic = $2 AND partition = ANY($3)",
    )
    .bind(consumer)
    .bind(topic)
    .bind(partitions)
    .fetch_all(pool)
    .await?;
    Ok(partitions
        .iter()
        .map(|&p| {
            let next = rows.iter().find(|(rp, _)| *rp == p).map(|(_, o)| *o);
            (p, Position { next })
        })
        .collect())
}

/// One partition's step in a batch commit.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub partition: i32,
    /// What this instance believes is stored.
    pub from: Position,
    /// The offset after the batch's last message of this partition.
    pub next: i64,
    pub applied: i64,
    pub dead_lettered: i64,
}

/// Advances one partition as `step` says, adding to its counters. Returns
/// false when the stored position is not `step.from`: another instance
/// committed this partition meanwhile (this one is a zombie), or an earlier
/// commit of ours went through unacknowledged; the whole transaction must be
/// abandoned.
pub async fn advance(
    conn: &mut PgConnection,
    consumer: &str,
    topic: &str,
    step: Step,
) -> sqlx::Result<bool> {
    let done = match step.from.next {
        None => sqlx::query(
            "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, applied, dead_lettered)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(topic)
        .bind(step.partition)
        .bind(step.next)
        .bind(step.applied)
        .bind(step.dead_lettered)
        .execute(&mut *conn)
        .await?,
        Some(expected) => sqlx::query(
            "UPDATE consumer_offsets
             SET next_offset = $4, applied = applied + $5, dead_lettered = dead_lettered + $6, updated_at = now()
             WHERE consumer = $1 AND topic = $2 AND partition = $3 AND next_offset = $7",
        )
        .bind(consumer)
        .bind(topic)
        .bind(step.partition)
        .bind(step.next)
        .bind(step.applied)
        .bind(step.dead_lettered)
        .bind(expected)
        .execute(&mut *conn)
        .await?,
    };
    Ok(done.rows_affected() == 1)
}

/// Per partition of a consumer: next offset, events applied, messages dead-lettered.
pub async fn progress(
    pool: &PgPool,
    consumer: &str,
    topic: &str,
) -> sqlx::Result<Vec<(i32, i64, i64, i64)>> {
    sqlx::query_as(
        "SELECT partition, next_offset, applied, dead_lettered FROM consumer_offsets
         WHERE consumer = $1 AND topic = $2 ORDER BY partition",
    )
    .bind(consumer)
    .bind(topic)
    .fetch_all(pool)
    .await
}
