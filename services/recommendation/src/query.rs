//! Answers combine every partition's rows, so any instance gives the same
//! answer whichever partitions it owns.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::model::{linear, log_add, log_growth, rank};
use crate::store::{finite_scores, products, Json};

/// Where a recommended product comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Engaged with together with the user's recent products (co-occurrence).
    Similar,
    /// A popular product filling up a thin history.
    Popular,
}

/// One recommended product. `score` is relative to the newest event's time
/// (an interaction weight of 1 at that instant scores 1); scores of
/// different sources are on different scales and not comparable.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Scored {
    pub product_id: String,
    pub score: f64,
    pub source: Source,
}

/// How fresh an answer is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AsOf {
    /// The newest applied event's time; null before the first.
    pub last_event_at: Option<DateTime<Utc>>,
    /// The next offset to consume, by partition: the answer includes
    /// everything before.
    pub next_offsets: BTreeMap<String, i64>,
}

/// One UTC day's counters, all partitions combined.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Day {
    pub day: NaiveDate,
    pub views: i64,
    pub clicks: i64,
    pub add_to_cart: i64,
    pub purchases: i64,
    /// The purchases' `price_cents`, summed.
    pub revenue_cents: i64,
}

/// The freshness of the committed state.
pub async fn as_of(pool: &PgPool, consumer: &str, topic: &str) -> sqlx::Result<AsOf> {
    let last: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(last_event_at) FROM rec_partitions")
            .fetch_one(pool)
            .await?;
    let next_offsets = shared::worker::offsets::progress(pool, consumer, topic)
        .await?
        .into_iter()
        .map(|(p, next, _, _)| (p.to_string(), next))
        .collect();
    Ok(AsOf {
        last_event_at: last,
        next_offsets,
    })
}

/// The stream's "now" as a log-factor: the newest event's. Scores are
/// reported relative to it, so they are the same whichever instance answers
/// and whenever, and a backfill from 1990 scores like today's data.
fn now(as_of: &AsOf, half_life_secs: f64) -> f64 {
    as_of
        .last_event_at
        .map_or(0.0, |t| log_growth(t, half_life_secs))
}

/// Log-scores ranked (best first, ties by product id), cut to `limit` and
/// made linear relative to `now`.
fn top(scores: HashMap<String, f64>, limit: usize, now: f64, source: Source) -> Vec<Scored> {
    let mut ranked: Vec<(String, f64)> = scores.into_iter().collect();
    rank(&mut ranked);
    ranked.truncate(limit);
    ranked
        .into_iter()
        .map(|(product_id, score)| Scored {
            product_id,
            score: linear(score, now),
            source,
        })
        .collect()
}

/// Adds `score` to the log-score of `item`.
fn accumulate(scores: &mut HashMap<String, f64>, item: String, score: f64) {
    let total = scores.entry(item).or_insert(f64::NEG_INFINITY);
    *total = log_add(*total, score);
}

/// Recommendations for `user`; `fallback` when popularity had to fill in.
pub async fn for_user(
    pool: &PgPool,
    user: &str,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<(Vec<Scored>, bool)> {
    let rows: Vec<(Json<Value>, Json<Value>)> =
        sqlx::query_as("SELECT recent, purchased FROM rec_users WHERE user_id = $1")
            .bind(user)
            .fetch_all(pool)
            .await?;
    let mut recent: HashMap<String, f64> = HashMap::new();
    let mut purchased: HashSet<String> = HashSet::new();
    for (r, p) in rows {
        for (item, weight) in finite_scores(&r.0) {
            let w = recent.entry(item).or_insert(f64::NEG_INFINITY);
            *w = w.max(weight);
        }
        purchased.extend(products(&p.0));
    }
    let now = now(as_of, half_life_secs);
    let mut scores: HashMap<String, f64> = HashMap::new();
    if !recent.is_empty() {
        let items: Vec<&str> = recent.keys().map(String::as_str).collect();
        let rows: Vec<(String, Json<Value>)> =
            sqlx::query_as("SELECT item, neighbors FROM rec_cooc WHERE item = ANY($1)")
                .bind(&items)
                .fetch_all(pool)
                .await?;
        for (item, neighbors) in rows {
            // weight x score, both decayed to now: a product of two factors.
            let weight = recent[&item] - now;
            for (candidate, score) in finite_scores(&neighbors.0) {
                if !purchased.contains(&candidate) {
                    accumulate(&mut scores, candidate, weight + score);
                }
            }
        }
    }
    // `weight + score - now` was summed above: `now` once more, and linear.
    let mut ranked = top(scores, limit, now, Source::Similar);
    let fallback = ranked.len() < limit;
    if fallback {
        let have: HashSet<String> = ranked.iter().map(|s| s.product_id.clone()).collect();
        let skip: HashSet<String> = have.union(&purchased).cloned().collect();
        for item in popular(pool, limit + skip.len(), as_of, half_life_secs).await? {
            if ranked.len() == limit {
                break;
            }
            if !skip.contains(&item.product_id) {
                // Popular fill-ins rank after every co-occurrence candidate.
                ranked.push(item);
            }
        }
    }
    Ok((ranked, fallback))
}

/// The most popular products (decayed), all partitions combined: the
/// per-partition log-scores of a product add up with log-sum-exp in SQL
/// (a term more than 1,000 halvings below the largest is 0, not an
/// underflow error).
pub async fn popular(
    pool: &PgPool,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<Vec<Scored>> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT item, top + log(2.0, sum(CASE WHEN score - top < -1000 THEN 0 ELSE power(2.0, score - top) END)::numeric)::float8 AS s
         FROM (SELECT item, score, max(score) OVER (PARTITION BY item) AS top FROM rec_popularity) AS p
         GROUP BY item, top ORDER BY s DESC, item LIMIT $1",
    )
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    let now = now(as_of, half_life_secs);
    Ok(rows
        .into_iter()
        .map(|(product_id, s)| Scored {
            product_id,
            score: linear(s, now),
            source: Source::Popular,
        })
        .collect())
}

/// Products most often engaged with together with `item`.
pub async fn similar(
    pool: &PgPool,
    item: &str,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<Vec<Scored>> {
    let rows: Vec<(Json<Value>,)> =
        sqlx::query_as("SELECT neighbors FROM rec_cooc WHERE item = $1")
            .bind(item)
            .fetch_all(pool)
            .await?;
    let mut scores: HashMap<String, f64> = HashMap::new();
    for (neighbors,) in rows {
        for (candidate, score) in finite_scores(&neighbors.0) {
            accumulate(&mut scores, candidate, score);
        }
    }
    Ok(top(
        scores,
        limit,
        now(as_of, half_life_secs),
        Source::Similar,
    ))
}

/// Per UTC day counters, all partitions combined.
pub async fn daily(pool: &PgPool) -> sqlx::Result<Vec<Day>> {
    let rows: Vec<(NaiveDate, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT day, sum(views)::int8, sum(clicks)::int8, sum(add_to_cart)::int8, sum(purchases)::int8, sum(revenue_cents)::int8
         FROM rec_daily GROUP BY day ORDER BY day",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(day, views, clicks, add_to_cart, purchases, revenue_cents)| Day {
                day,
                views,
                clicks,
                add_to_cart,
                purchases,
                revenue_cents,
            },
        )
        .collect())
}

/// A sha256 over every state table in a canonical order: equal state, equal sum.
pub async fn checksum(pool: &PgPool) -> sqlx::Result<String> {
    sqlx::query_scalar(
        "SELECT encode(sha256(convert_to(concat_ws('|',
            (SELECT string_agg(concat_ws(',', user_id, partition, recent::text, purchased::text), ';' ORDER BY user_id, partition) FROM rec_users),
            (SELECT string_agg(concat_ws(',', item, partition, neighbors::text), ';' ORDER BY item, partition) FROM rec_cooc),
            (SELECT string_agg(concat_ws(',', item, partition, score::text), ';' ORDER BY item, partition) FROM rec_popularity),
            (SELECT string_agg(concat_ws(',', day, partition, views, clicks, add_to_cart, purchases, revenue_cents), ';' ORDER BY day, partition) FROM rec_daily)
         ), 'UTF8')), 'hex')",
    )
    .fetch_one(pool)
    .await
}
