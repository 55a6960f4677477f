//! Answers combine every partition's rows, so any instance gives the same
//! answer whichever partitions it owns. An answer and its `as_of` are read
//! in one snapshot ([`snapshot`]): the position is exactly what it includes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::model::{linear, log_add, log_growth, rank};
use crate::store::{finite_scores, products};

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

/// A read-only transaction on one snapshot (REPEATABLE READ): every read
/// in it sees the same commits, whatever the worker commits meanwhile.
pub async fn snapshot(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}

/// The freshness of the committed state, in one query: the offsets, and
/// the newest event time beside each (rows of both tables move in the same
/// transactions, so no offsets means no events).
pub async fn as_of(conn: &mut PgConnection, consumer: &str, topic: &str) -> sqlx::Result<AsOf> {
    let rows: Vec<(i32, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT partition, next_offset, (SELECT max(last_event_at) FROM rec_partitions)
         FROM consumer_offsets WHERE consumer = $1 AND topic = $2 ORDER BY partition",
    )
    .bind(consumer)
    .bind(topic)
    .fetch_all(&mut *conn)
    .await?;
    Ok(AsOf {
        last_event_at: rows.first().and_then(|r| r.2),
        next_offsets: rows
            .into_iter()
            .map(|(partition, next, _)| (partition.to_string(), next))
            .collect(),
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

/// Adds `score` to the log-score of `item`. Sums of floats depend on their
/// order in the last bits: callers add rows in key order (not the table's
/// physical order, which a rewrite or a migration changes), so equal state
/// gives equal answers bit for bit.
fn accumulate(scores: &mut HashMap<String, f64>, item: String, score: f64) {
    let total = scores.entry(item).or_insert(f64::NEG_INFINITY);
    *total = log_add(*total, score);
}

/// Recommendations for `user`; `fallback` when popularity had to fill in.
pub async fn for_user(
    conn: &mut PgConnection,
    cache: &PopularCache,
    user: &str,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<(Vec<Scored>, bool)> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT recent, purchased FROM rec_users WHERE user_id = $1")
            .bind(user)
            .fetch_all(&mut *conn)
            .await?;
    let mut recent: HashMap<String, f64> = HashMap::new();
    let mut purchased: HashSet<String> = HashSet::new();
    for (r, p) in rows {
        for (item, weight) in finite_scores(&r) {
            let w = recent.entry(item).or_insert(f64::NEG_INFINITY);
            *w = w.max(weight);
        }
        purchased.extend(products(&p));
    }
    let now = now(as_of, half_life_secs);
    let mut scores: HashMap<String, f64> = HashMap::new();
    if !recent.is_empty() {
        let items: Vec<&str> = recent.keys().map(String::as_str).collect();
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT item, neighbors FROM rec_cooc WHERE item = ANY($1) ORDER BY item, partition",
        )
        .bind(&items)
        .fetch_all(&mut *conn)
        .await?;
        for (item, neighbors) in rows {
            // weight x score, both decayed to now: a product of two factors.
            let weight = recent[&item] - now;
            for (candidate, score) in finite_scores(&neighbors) {
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
        for item in popular(conn, cache, limit + skip.len(), as_of, half_life_secs).await? {
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

/// The most popular products (decayed), all partitions combined: a
/// product's score is the log-sum of its partitions' log-scores. Exact
/// without reading every row (Fagin's threshold algorithm): each
/// partition's best `depth` rows by score (`rec_popularity_rank_idx`),
/// then every partition's score of each product seen. No product unseen
/// can score more than the log-sum of the lowest score read in each
/// partition not read to its end, so once `limit` seen products score
/// above that, they are the answer; else the read goes four times deeper.
async fn most_popular(
    conn: &mut PgConnection,
    limit: usize,
    partitions: &[i32],
) -> sqlx::Result<Vec<(String, f64)>> {
    if limit == 0 || partitions.is_empty() {
        return Ok(Vec::new());
    }
    let mut depth = i64::try_from(limit.max(8) * 2).unwrap_or(i64::MAX);
    loop {
        let best: Vec<(i32, String, f64)> = sqlx::query_as(
            "SELECT p, r.item, r.score FROM unnest($1::int4[]) AS p
             CROSS JOIN LATERAL (SELECT item, score FROM rec_popularity WHERE partition = p
                                 ORDER BY score DESC, item LIMIT $2) AS r",
        )
        .bind(partitions)
        .bind(depth)
        .fetch_all(&mut *conn)
        .await?;
        let mut read: HashMap<i32, (i64, f64)> = HashMap::new();
        for (partition, _, score) in &best {
            let (rows, lowest) = read.entry(*partition).or_insert((0, f64::INFINITY));
            *rows += 1;
            *lowest = lowest.min(*score);
        }
        let bound = read
            .values()
            .filter(|(rows, _)| *rows == depth)
            .fold(f64::NEG_INFINITY, |sum, (_, lowest)| log_add(sum, *lowest));
        let seen: BTreeSet<&str> = best.iter().map(|(_, item, _)| item.as_str()).collect();
        let seen: Vec<&str> = seen.into_iter().collect();
        let rows: Vec<(String, i32, f64)> = sqlx::query_as(
            "SELECT item, partition, score FROM rec_popularity WHERE item = ANY($1)
             ORDER BY item, partition",
        )
        .bind(&seen)
        .fetch_all(&mut *conn)
        .await?;
        let mut totals: HashMap<String, f64> = HashMap::new();
        for (item, _, score) in rows {
            accumulate(&mut totals, item, score);
        }
        let mut ranked: Vec<(String, f64)> = totals.into_iter().collect();
        rank(&mut ranked);
        let read_all = bound == f64::NEG_INFINITY;
        if read_all
            || ranked
                .get(limit - 1)
                .is_some_and(|(_, score)| *score > bound)
        {
            ranked.truncate(limit);
            return Ok(ranked);
        }
        depth = depth.saturating_mul(4);
    }
}

/// The popular list of one committed position, kept for the answers that
/// follow at that position: the list is a function of the committed state
/// alone, so a kept one is what a fresh read would give (every new user
/// gets the same fill-in until the next commit).
#[derive(Debug, Default)]
pub struct PopularCache(Mutex<Option<Kept>>);

#[derive(Debug)]
struct Kept {
    position: BTreeMap<String, i64>,
    /// The best `asked` products, or all there are if fewer.
    asked: usize,
    ranked: Vec<(String, f64)>,
}

/// Reads at least this many, so that answers asking a few more than the
/// last one (a fill-in skips what the user has) still find them kept.
const POPULAR_AT_LEAST: usize = 100;

/// The `limit` most popular products at `as_of`'s position.
pub async fn popular(
    conn: &mut PgConnection,
    cache: &PopularCache,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<Vec<Scored>> {
    let kept = {
        let kept = cache.0.lock().expect("the popular cache's lock");
        kept.as_ref()
            .filter(|k| k.position == as_of.next_offsets)
            .filter(|k| limit <= k.asked || k.ranked.len() < k.asked)
            .map(|k| k.ranked.iter().take(limit).cloned().collect::<Vec<_>>())
    };
    let ranked = match kept {
        Some(ranked) => ranked,
        None => {
            let partitions: Vec<i32> = as_of
                .next_offsets
                .keys()
                .filter_map(|p| p.parse().ok())
                .collect();
            let asked = limit.max(POPULAR_AT_LEAST);
            let ranked = most_popular(conn, asked, &partitions).await?;
            let answer = ranked.iter().take(limit).cloned().collect();
            *cache.0.lock().expect("the popular cache's lock") = Some(Kept {
                position: as_of.next_offsets.clone(),
                asked,
                ranked,
            });
            answer
        }
    };
    let now = now(as_of, half_life_secs);
    Ok(ranked
        .into_iter()
        .map(|(product_id, score)| Scored {
            product_id,
            score: linear(score, now),
            source: Source::Popular,
        })
        .collect())
}

/// Products most often engaged with together with `item`.
pub async fn similar(
    conn: &mut PgConnection,
    item: &str,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<Vec<Scored>> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT neighbors FROM rec_cooc WHERE item = $1 ORDER BY partition")
            .bind(item)
            .fetch_all(&mut *conn)
            .await?;
    let mut scores: HashMap<String, f64> = HashMap::new();
    for (neighbors,) in rows {
        for (candidate, score) in finite_scores(&neighbors) {
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
