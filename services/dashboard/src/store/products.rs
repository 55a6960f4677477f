//! The product DAG as the page shows it, read from the product creator's
//! tables (same database): products by status, the joins still waiting, and
//! each branch's time from upload to result.

use sqlx::PgPool;

/// What the "Products" panel shows.
#[derive(Debug, Default)]
pub struct DagSummary {
    /// (status, products), in the order pending, active, rejected, incomplete.
    pub by_status: Vec<(String, i64)>,
    /// The oldest waiting joins: (product, parts missing, seconds waited, seconds to the deadline).
    pub waiting: Vec<(String, Vec<String>, f64, f64)>,
    /// Per branch kind: (kind, parts arrived, mean seconds upload to result), slowest first.
    pub branches: Vec<(String, i64, f64)>,
}

pub async fn dag_summary(pool: &PgPool) -> sqlx::Result<DagSummary> {
    let by_status = sqlx::query_as(
        "SELECT s, count(p.id) FROM unnest(ARRAY['pending','active','rejected','incomplete']) WITH ORDINALITY AS t(s, n)
         LEFT JOIN products p ON p.status = t.s GROUP BY s, n ORDER BY n",
    )
    .fetch_all(pool)
    .await?;
    let waiting = sqlx::query_as(
        "SELECT p.id, coalesce(array_agg(pp.part ORDER BY pp.part) FILTER (WHERE pp.state = 'waiting'), '{}'),
                extract(epoch FROM now() - p.buffered_at)::float8,
                extract(epoch FROM p.deadline_at - now())::float8
         FROM products p JOIN product_parts pp ON pp.product_id = p.id
         WHERE p.status = 'pending' GROUP BY p.id ORDER BY p.buffered_at LIMIT 10",
    )
    .fetch_all(pool)
    .await?;
    let branches = sqlx::query_as(
        "SELECT pp.kind, count(*), avg(extract(epoch FROM pp.arrived_at - p.uploaded_at))::float8
         FROM product_parts pp JOIN products p ON p.id = pp.product_id
         WHERE pp.arrived_at IS NOT NULL GROUP BY pp.kind ORDER BY 3 DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(DagSummary {
        by_status,
        waiting,
        branches,
    })
}
