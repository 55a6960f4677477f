//! The reducers: one consumer group on the shuffle topic (`read_committed`:
//! an aborted map transaction is never seen), in the runtime's Postgres
//! mode: the per-page sums and the chunk markers of a batch commit with its
//! offsets, so a reducer killed mid-job resumes exactly. A page always
//! meets the same shuffle partition, hence one reducer. When a shuffle
//! partition holds every chunk's marker, all counts before them in that
//! partition are in (one producer transaction writes a chunk's counts, then
//! its markers): the partition is final; the job succeeds when every
//! partition is. Records of a job that is not running are skipped.

use std::collections::{BTreeSet, HashMap, HashSet};

use shared::consume::Received;
use shared::event::{Envelope, Event, EventBody, EventType};
use shared::worker::{Postgres, Refusals, Worker};
use sqlx::PgConnection;

pub struct Reducer;

impl Worker for Reducer {
    type Mode = Postgres;

    const READS: &'static [EventType] = &[EventType::PageCount, EventType::ChunkDone];

    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> anyhow::Result<Refusals> {
        let bodies: Vec<(&Received, &EventBody)> = events
            .iter()
            .filter_map(|r| match &r.envelope {
                Envelope::Inline(Event { body, .. }) => Some((r, body)),
                _ => None,
            })
            .collect();
        let jobs: Vec<i64> = bodies
            .iter()
            .filter_map(|(_, b)| match b {
                EventBody::PageCount(c) => Some(c.job_id),
                EventBody::ChunkDone(d) => Some(d.job_id),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if jobs.is_empty() {
            return Ok(Refusals::none());
        }
        let running: HashSet<i64> = sqlx::query_scalar(
            "SELECT id FROM pagecount_jobs WHERE id = ANY($1) AND state = 'running'",
        )
        .bind(&jobs)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut sums: HashMap<(i64, &str), i64> = HashMap::new();
        let mut markers = Vec::new();
        for (received, body) in &bodies {
            match body {
                EventBody::PageCount(c) if running.contains(&c.job_id) => {
                    *sums.entry((c.job_id, c.page.as_str())).or_default() += c.count as i64;
                }
                EventBody::ChunkDone(d) if running.contains(&d.job_id) => {
                    markers.push((received.partition, d))
                }
                _ => {}
            }
        }
        if !sums.is_empty() {
            let (job_ids, pages, counts): (Vec<i64>, Vec<&str>, Vec<i64>) = sums
                .iter()
                .map(|((job, page), count)| (*job, *page, *count))
                .fold(
                    (vec![], vec![], vec![]),
                    |(mut j, mut p, mut c), (job, page, count)| {
                        j.push(job);
                        p.push(page);
                        c.push(count);
                        (j, p, c)
                    },
                );
            sqlx::query(
                "INSERT INTO pagecount_pages (job_id, page, count)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[])
                 ON CONFLICT (job_id, page) DO UPDATE SET count = pagecount_pages.count + EXCLUDED.count",
            )
            .bind(&job_ids)
            .bind(&pages)
            .bind(&counts)
            .execute(&mut *tx)
            .await?;
        }
        let mut touched = BTreeSet::new();
        for (partition, d) in &markers {
            sqlx::query(
                "INSERT INTO pagecount_chunks (job_id, chunk, shuffle_partition, lines, rejected, records, bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(d.job_id)
            .bind(d.chunk as i32)
            .bind(partition)
            .bind(d.lines as i64)
            .bind(d.rejected as i64)
            .bind(d.records as i64)
            .bind(d.bytes as i64)
            .execute(&mut *tx)
            .await?;
            touched.insert((d.job_id, *partition));
        }
        for (job, partition) in touched {
            finish_partition(tx, job, partition).await?;
        }
        Ok(Refusals::none())
    }
}

/// Marks the partition final when it has every chunk's marker, and the job
/// succeeded when every partition is final. The job's row is locked first,
/// so two reducers finishing their partitions at once see each other. The
/// lock is `FOR NO KEY UPDATE`: the batch's inserts already hold `FOR KEY
/// SHARE` on the row (their foreign keys), which `FOR UPDATE` would wait on
/// in the other reducer's transaction while it waits on ours: a deadlock.
async fn finish_partition(tx: &mut PgConnection, job: i64, partition: i32) -> anyhow::Result<()> {
    let (chunks_total, partitions_total): (i32, i32) = sqlx::query_as(
        "SELECT chunks_total, shuffle_partitions FROM pagecount_jobs WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(job)
    .fetch_one(&mut *tx)
    .await?;
    let (seen,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pagecount_chunks WHERE job_id = $1 AND shuffle_partition = $2",
    )
    .bind(job)
    .bind(partition)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE pagecount_jobs SET mapped_at = greatest(mapped_at, now()) WHERE id = $1")
        .bind(job)
        .execute(&mut *tx)
        .await?;
    if seen < i64::from(chunks_total) {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO pagecount_partitions (job_id, shuffle_partition) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(job)
    .bind(partition)
    .execute(&mut *tx)
    .await?;
    let (done,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pagecount_partitions WHERE job_id = $1")
            .bind(job)
            .fetch_one(&mut *tx)
            .await?;
    if done == i64::from(partitions_total) {
        sqlx::query(
            "UPDATE pagecount_jobs SET state = 'succeeded', finished_at = now() WHERE id = $1 AND state = 'running'",
        )
        .bind(job)
        .execute(&mut *tx)
        .await?;
        metrics::counter!("kappa_pagecount_jobs_succeeded_total").increment(1);
    }
    Ok(())
}
