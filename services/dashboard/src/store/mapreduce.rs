//! MapReduce jobs as the page shows them, read from the pagecount tables
//! (same database): the newest jobs with their progress, and the top pages
//! of the newest job that succeeded.

use sqlx::PgPool;

/// One job's row on the page.
#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub state: String,
    pub chunks_done: i64,
    pub chunks_total: i32,
    pub partitions_final: i64,
    pub partitions_total: i32,
    pub lines_total: i64,
    pub seconds: f64,
}

pub async fn jobs(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(
        "SELECT j.id, j.state,
                (SELECT count(*) FROM pagecount_chunks c WHERE c.job_id = j.id AND c.shuffle_partition = 0) AS chunks_done,
                j.chunks_total,
                (SELECT count(*) FROM pagecount_partitions p WHERE p.job_id = j.id) AS partitions_final,
                j.shuffle_partitions AS partitions_total, j.lines_total,
                extract(epoch FROM coalesce(j.finished_at, now()) - j.created_at)::float8 AS seconds
         FROM pagecount_jobs j ORDER BY j.id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The newest succeeded job's id and its top `limit` pages.
pub async fn top_pages(
    pool: &PgPool,
    limit: i64,
) -> sqlx::Result<Option<(i64, Vec<(String, i64)>)>> {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT max(id) FROM pagecount_jobs WHERE state = 'succeeded'")
            .fetch_one(pool)
            .await?;
    let Some(id) = newest else {
        return Ok(None);
    };
    let pages = sqlx::query_as(
        "SELECT page, count FROM pagecount_pages WHERE job_id = $1 ORDER BY count DESC, page DESC LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(Some((id, pages)))
}
