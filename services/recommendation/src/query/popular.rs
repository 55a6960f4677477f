//! The most popular products (decayed, every partition combined), read
//! exactly without reading every row, and kept per committed position for
//! the answers that fill in with them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use sqlx::PgConnection;

use super::{accumulate, now, AsOf, Scored, Source};
use crate::model::{linear, log_add, rank, Map};

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
        let mut read: Map<i32, (i64, f64)> = Map::default();
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
        let mut totals: Map<&str, f64> = Map::default();
        for (item, _, score) in &rows {
            accumulate(&mut totals, item, *score);
        }
        let mut ranked: Vec<(String, f64)> = totals
            .into_iter()
            .map(|(item, score)| (item.to_owned(), score))
            .collect();
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

impl PopularCache {
    /// The best `limit` kept for `as_of`'s position, if they are.
    pub(super) fn kept(&self, as_of: &AsOf, limit: usize) -> Option<Vec<(String, f64)>> {
        let kept = self.0.lock().expect("the popular cache's lock");
        kept.as_ref()
            .filter(|k| k.position == as_of.next_offsets)
            .filter(|k| limit <= k.asked || k.ranked.len() < k.asked)
            .map(|k| k.ranked.iter().take(limit).cloned().collect())
    }
}

/// The `limit` most popular products at `as_of`'s position.
pub async fn popular(
    conn: &mut PgConnection,
    cache: &PopularCache,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<Vec<Scored>> {
    let ranked = match cache.kept(as_of, limit) {
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
    Ok(popular_scored(ranked, as_of, half_life_secs))
}

/// Popular log-scores as answers, linear relative to `as_of`'s time.
pub(super) fn popular_scored(
    ranked: Vec<(String, f64)>,
    as_of: &AsOf,
    half_life_secs: f64,
) -> Vec<Scored> {
    let now = now(as_of, half_life_secs);
    ranked
        .into_iter()
        .map(|(product_id, score)| Scored {
            product_id,
            score: linear(score, now),
            source: Source::Popular,
        })
        .collect()
}
