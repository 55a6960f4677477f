//! The results a run stored: its days and its top products.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::PgPool;

use super::By;
use crate::aggregate::Day;

type DayRow = (NaiveDate, i64, i64, i64, i64, i64, i64, i64, i64);

/// A run's stored days.
pub async fn stored_days(pool: &PgPool, run: i64) -> sqlx::Result<BTreeMap<NaiveDate, Day>> {
    let rows: Vec<DayRow> = sqlx::query_as(
        "SELECT day, active_users, viewing_users, purchasing_users, views, clicks, add_to_cart, purchases, revenue_cents
         FROM dashboard_daily WHERE run_id = $1 ORDER BY day",
    )
    .bind(run)
    .fetch_all(pool)
    .await?;
    let n = |v: i64| v.max(0) as u64;
    Ok(rows
        .into_iter()
        .map(|r| {
            let day = Day {
                active_users: n(r.1),
                viewing_users: n(r.2),
                purchasing_users: n(r.3),
                views: n(r.4),
                clicks: n(r.5),
                add_to_cart: n(r.6),
                purchases: n(r.7),
                revenue_cents: n(r.8),
            };
            (r.0, day)
        })
        .collect())
}

/// The best `limit` products of a run's day by `by`: (product, count).
pub async fn top_products(
    pool: &PgPool,
    run: i64,
    day: NaiveDate,
    by: By,
    limit: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT product_id, count FROM dashboard_top_products
         WHERE run_id = $1 AND day = $2 AND by = $3 ORDER BY rank LIMIT $4",
    )
    .bind(run)
    .bind(day)
    .bind(by.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await
}
