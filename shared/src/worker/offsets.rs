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

/// Advances every partition as its step says, adding to its counters, in
/// at most two statements (first commits inserted, the rest moved with a
/// compare-and-set). Returns false when a stored position is not its
/// step's `from`: another instance committed that partition meanwhile (this
/// one is a zombie), or an earlier commit of ours went through
/// unacknowledged; the whole transaction must be abandoned.
pub async fn advance(
    conn: &mut PgConnection,
    consumer: &str,
    topic: &str,
    steps: &[Step],
) -> sqlx::Result<bool> {
    let (first, moved): (Vec<&Step>, Vec<&Step>) =
        steps.iter().partition(|s| s.from.next.is_none());
    let column =
        |steps: &[&Step], f: fn(&Step) -> i64| steps.iter().map(|s| f(s)).collect::<Vec<i64>>();
    let partitions = |steps: &[&Step]| steps.iter().map(|s| s.partition).collect::<Vec<i32>>();
    if !first.is_empty() {
        let done = sqlx::query(
            "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset, applied, dead_lettered)
             SELECT $1, $2, * FROM UNNEST($3::int[], $4::int8[], $5::int8[], $6::int8[])
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(topic)
        .bind(partitions(&first))
        .bind(column(&first, |s| s.next))
        .bind(column(&first, |s| s.applied))
        .bind(column(&first, |s| s.dead_lettered))
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() != first.len() as u64 {
            return Ok(false);
        }
    }
    if !moved.is_empty() {
        let done = sqlx::query(
            "UPDATE consumer_offsets AS o
             SET next_offset = v.next, applied = o.applied + v.applied,
                 dead_lettered = o.dead_lettered + v.dead, updated_at = now()
             FROM UNNEST($3::int[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
                  AS v (partition, next, applied, dead, expected)
             WHERE o.consumer = $1 AND o.topic = $2 AND o.partition = v.partition
               AND o.next_offset = v.expected",
        )
        .bind(consumer)
        .bind(topic)
        .bind(partitions(&moved))
        .bind(column(&moved, |s| s.next))
        .bind(column(&moved, |s| s.applied))
        .bind(column(&moved, |s| s.dead_lettered))
        .bind(column(&moved, |s| s.from.next.unwrap_or_default()))
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() != moved.len() as u64 {
            return Ok(false);
        }
    }
    Ok(true)
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
