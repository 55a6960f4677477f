//! Answers combine every partition's rows, so any instance gives the same
//! answer whichever partitions it owns. An answer and its `as_of` are read
//! at one committed position: in one snapshot ([`snapshot`]), or in
//! statements that each read the position too ([`answer_for_user`],
//! [`answer_similar`]). The position is exactly what the answer includes.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::model::{by_rank, linear, log_add, log_growth, rank, Map};
use crate::store::{finite_scores, products};

mod popular;

use popular::popular_scored;
pub use popular::{popular, PopularCache};

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

impl AsOf {
    /// From a position as the statements read it (partitions and their
    /// offsets as arrays in partition order, NULL before the first commit).
    fn at((partitions, offsets): Position, last_event_at: Option<DateTime<Utc>>) -> Self {
        Self {
            last_event_at,
            next_offsets: partitions
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.to_string())
                .zip(offsets.unwrap_or_default())
                .collect(),
        }
    }
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
pub(super) fn now(as_of: &AsOf, half_life_secs: f64) -> f64 {
    as_of
        .last_event_at
        .map_or(0.0, |t| log_growth(t, half_life_secs))
}

/// Sets of product ids.
type Set<'a> = std::collections::HashSet<&'a str, foldhash::fast::RandomState>;

/// Log-scores ranked (best first, ties by product id), cut to `limit` and
/// made linear relative to `now`. Only the best `limit` are sorted: the
/// order is total (ids are distinct), so they are the same ones, in the
/// same order, as in a sort of them all.
fn top(scores: Map<&str, f64>, limit: usize, now: f64, source: Source) -> Vec<Scored> {
    if limit == 0 {
        return Vec::new();
    }
    let mut ranked: Vec<(&str, f64)> = scores.into_iter().collect();
    if ranked.len() > limit {
        ranked.select_nth_unstable_by(limit - 1, by_rank);
        ranked.truncate(limit);
    }
    rank(&mut ranked);
    ranked
        .into_iter()
        .map(|(product_id, score)| Scored {
            product_id: product_id.to_owned(),
            score: linear(score, now),
            source,
        })
        .collect()
}

/// Adds `score` to the log-score of `item`. Sums of floats depend on their
/// order in the last bits: callers add rows in key order (not the table's
/// physical order, which a rewrite or a migration changes), so equal state
/// gives equal answers bit for bit. A first score is the sum itself
/// (`log_add` with nothing gives it back exactly), without its logarithm.
pub(super) fn accumulate<'a>(scores: &mut Map<&'a str, f64>, item: &'a str, score: f64) {
    match scores.entry(item) {
        Entry::Occupied(mut total) => *total.get_mut() = log_add(*total.get(), score),
        Entry::Vacant(total) => {
            total.insert(score);
        }
    }
}

/// Recommendations for `user`, `fallback` when popularity filled in, and
/// the position they are of. Usually read outside any transaction, in two
/// statements each of which also reads the committed position (every change
/// to the model commits with its offsets, so the same position twice is the
/// same state twice); when a commit fell between them, or the fill-in is not
/// kept for that position, again, at most [`UNLOCKED_READS`] times, then in
/// one snapshot ([`for_user`] in a `REPEATABLE READ` transaction, which
/// also keeps the fill-in of its position). A transaction is three round
/// trips more than the answer needs (`BEGIN`, the position on its own,
/// `COMMIT`): a new user's answer is one round trip, a known user's two.
pub async fn answer_for_user(
    pool: &PgPool,
    cache: &PopularCache,
    position: (&str, &str),
    user: &str,
    limit: usize,
    half_life_secs: f64,
) -> sqlx::Result<(Vec<Scored>, bool, AsOf)> {
    let (consumer, topic) = position;
    for _ in 0..UNLOCKED_READS {
        match unlocked(pool, cache, position, user, limit, half_life_secs).await? {
            Unlocked::Answer(answer) => return Ok(answer),
            Unlocked::Moved => continue,
            Unlocked::NotKept => break,
        }
    }
    metrics::counter!("kappa_recommendation_answers_in_snapshot_total").increment(1);
    let mut snapshot = snapshot(pool).await?;
    let as_of = as_of(&mut snapshot, consumer, topic).await?;
    let (items, fallback) =
        for_user(&mut snapshot, cache, user, limit, &as_of, half_life_secs).await?;
    snapshot.commit().await?;
    Ok((items, fallback, as_of))
}

/// Reads of an answer outside a transaction before it is read in one.
pub const UNLOCKED_READS: usize = 3;

/// The committed position (partitions and their next offsets, by
/// partition; NULL before the first commit), once, joined to rows read in
/// the same statement: at least one row, whatever the rows are.
const POSITION: &str = "
    (SELECT array_agg(partition ORDER BY partition) AS partitions,
            array_agg(next_offset ORDER BY partition) AS offsets
     FROM consumer_offsets WHERE consumer = $1 AND topic = $2) AS o";

/// The position, the newest event time and the user's rows (`recent`,
/// `purchased`; NULL if none), in one statement (one snapshot).
static USER_AT_POSITION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT o.partitions, o.offsets, (SELECT max(last_event_at) FROM rec_partitions), u.recent, u.purchased
         FROM {POSITION} LEFT JOIN rec_users AS u ON u.user_id = $3"
    )
});

/// The position and the neighbour lists of `$3`'s products, in one
/// statement. Rows, not arrays of them: an aggregate of the lists copies
/// and sorts them all, which made the statement three times as costly
/// (pgbench, 10 products: 3,600 statements/s against 9,000).
static NEIGHBORS_AT_POSITION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT o.partitions, o.offsets, c.item, c.partition, c.neighbors
         FROM {POSITION} LEFT JOIN rec_cooc AS c ON c.item = ANY($3)"
    )
});

type Position = (Option<Vec<i32>>, Option<Vec<i64>>);

/// A neighbour list as read: product, partition, list.
type NeighborRow = (String, i32, Vec<u8>);

/// An answer read in statements of their own.
enum Unlocked {
    Answer((Vec<Scored>, bool, AsOf)),
    /// A commit fell between the statements.
    Moved,
    /// The fill-in the answer needs is not kept for its position.
    NotKept,
}

async fn unlocked(
    pool: &PgPool,
    cache: &PopularCache,
    (consumer, topic): (&str, &str),
    user: &str,
    limit: usize,
    half_life_secs: f64,
) -> sqlx::Result<Unlocked> {
    type UserRow = (
        Option<Vec<i32>>,
        Option<Vec<i64>>,
        Option<DateTime<Utc>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    type Neighbors = (
        Option<Vec<i32>>,
        Option<Vec<i64>>,
        Option<String>,
        Option<i32>,
        Option<Vec<u8>>,
    );
    let mut conn = pool.acquire().await?;
    let rows: Vec<UserRow> = sqlx::query_as(&USER_AT_POSITION)
        .bind(consumer)
        .bind(topic)
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
    // The position joins the user's rows: there is at least one row.
    let Some((partitions, offsets, last_event_at, ..)) = rows.first() else {
        return Err(sqlx::Error::RowNotFound);
    };
    let (position, last_event_at): (Position, _) =
        ((partitions.clone(), offsets.clone()), *last_event_at);
    let lists: Vec<(Vec<u8>, Vec<u8>)> = rows
        .into_iter()
        .filter_map(|(.., recent, purchased)| recent.zip(purchased))
        .collect();
    let history = History::of(&lists);
    let mut neighbors: Vec<NeighborRow> = Vec::new();
    if !history.recent.is_empty() {
        let rows: Vec<Neighbors> = sqlx::query_as(&NEIGHBORS_AT_POSITION)
            .bind(consumer)
            .bind(topic)
            .bind(history.products())
            .fetch_all(&mut *conn)
            .await?;
        for (partitions, offsets, item, partition, list) in rows {
            if (partitions, offsets) != position {
                return Ok(Unlocked::Moved);
            }
            if let (Some(item), Some(partition), Some(list)) = (item, partition, list) {
                neighbors.push((item, partition, list));
            }
        }
    }
    drop(conn);
    let as_of = AsOf::at(position, last_event_at);
    let now = now(&as_of, half_life_secs);
    let mut ranked = history.similar(&mut neighbors, limit, now);
    let fallback = ranked.len() < limit;
    if fallback {
        let skip = history.skip(&ranked);
        let Some(kept) = cache.kept(&as_of, limit + skip.len()) else {
            return Ok(Unlocked::NotKept);
        };
        fill_in(
            &mut ranked,
            limit,
            &skip,
            popular_scored(kept, &as_of, half_life_secs),
        );
    }
    Ok(Unlocked::Answer((ranked, fallback, as_of)))
}

/// Recommendations for `user` at `as_of`, read in the snapshot `conn`
/// holds; `fallback` when popularity had to fill in.
pub async fn for_user(
    conn: &mut PgConnection,
    cache: &PopularCache,
    user: &str,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<(Vec<Scored>, bool)> {
    let lists: Vec<(Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT recent, purchased FROM rec_users WHERE user_id = $1")
            .bind(user)
            .fetch_all(&mut *conn)
            .await?;
    let history = History::of(&lists);
    let mut neighbors: Vec<NeighborRow> = if history.recent.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT item, partition, neighbors FROM rec_cooc WHERE item = ANY($1)")
            .bind(history.products())
            .fetch_all(&mut *conn)
            .await?
    };
    let mut ranked = history.similar(&mut neighbors, limit, now(as_of, half_life_secs));
    let fallback = ranked.len() < limit;
    if fallback {
        let skip = history.skip(&ranked);
        let popular = popular(conn, cache, limit + skip.len(), as_of, half_life_secs).await?;
        fill_in(&mut ranked, limit, &skip, popular);
    }
    Ok((ranked, fallback))
}

/// A user's stored lists, every partition's combined (borrowed from the
/// rows read).
struct History<'a> {
    /// Recent products and their weight (the highest of any partition).
    recent: Map<&'a str, f64>,
    purchased: Set<'a>,
}

impl<'a> History<'a> {
    /// From the user's rows: (`recent`, `purchased`) per partition.
    fn of(lists: &'a [(Vec<u8>, Vec<u8>)]) -> Self {
        let mut recent: Map<&str, f64> = Map::default();
        let mut purchased = Set::default();
        for (r, p) in lists {
            for (item, weight) in finite_scores(r) {
                let w = recent.entry(item).or_insert(f64::NEG_INFINITY);
                *w = w.max(weight);
            }
            purchased.extend(products(p));
        }
        Self { recent, purchased }
    }

    /// The recent products, whose neighbour lists an answer reads.
    fn products(&self) -> Vec<&'a str> {
        self.recent.keys().copied().collect()
    }

    /// The best `limit` products engaged with together with the recent
    /// ones and not purchased, from the recent products' neighbour lists.
    /// They are added in key order (product, then partition; bytes, not a
    /// collation of the database's), whatever order they were read in.
    fn similar(&self, neighbors: &mut [NeighborRow], limit: usize, now: f64) -> Vec<Scored> {
        neighbors.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let entries = neighbors.iter().map(|(.., list)| list.len() / 16).sum();
        let mut scores: Map<&str, f64> = Map::with_capacity_and_hasher(entries, Default::default());
        for (item, _, neighbors) in neighbors.iter() {
            // weight x score, both decayed to now: a product of two factors.
            let weight = self.recent[item.as_str()] - now;
            for (candidate, score) in finite_scores(neighbors) {
                if !self.purchased.contains(candidate) {
                    accumulate(&mut scores, candidate, weight + score);
                }
            }
        }
        // `weight + score - now` was summed above: `now` once more, and linear.
        top(scores, limit, now, Source::Similar)
    }

    /// What a popular fill-in must not repeat: the purchased products and
    /// those already in the answer.
    fn skip(&self, ranked: &[Scored]) -> OwnedSet {
        let mut skip: OwnedSet = self.purchased.iter().map(|p| (*p).to_owned()).collect();
        skip.extend(ranked.iter().map(|s| s.product_id.clone()));
        skip
    }
}

type OwnedSet = std::collections::HashSet<String, foldhash::fast::RandomState>;

/// Popular products after every co-occurrence candidate, up to `limit`,
/// none of `skip`.
fn fill_in(ranked: &mut Vec<Scored>, limit: usize, skip: &OwnedSet, popular: Vec<Scored>) {
    for item in popular {
        if ranked.len() == limit {
            break;
        }
        if !skip.contains(&item.product_id) {
            ranked.push(item);
        }
    }
}

/// The position, the newest event time and `$3`'s neighbour lists (one
/// row per partition; NULL if none), in one statement (one snapshot).
static SIMILAR_AT_POSITION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT o.partitions, o.offsets, (SELECT max(last_event_at) FROM rec_partitions), c.partition, c.neighbors
         FROM {POSITION} LEFT JOIN rec_cooc AS c ON c.item = $3"
    )
});

/// Products most often engaged with together with `item`, and the position
/// they are of: one statement, one round trip, no transaction.
pub async fn answer_similar(
    pool: &PgPool,
    (consumer, topic): (&str, &str),
    item: &str,
    limit: usize,
    half_life_secs: f64,
) -> sqlx::Result<(Vec<Scored>, AsOf)> {
    type Row = (
        Option<Vec<i32>>,
        Option<Vec<i64>>,
        Option<DateTime<Utc>>,
        Option<i32>,
        Option<Vec<u8>>,
    );
    let rows: Vec<Row> = sqlx::query_as(&SIMILAR_AT_POSITION)
        .bind(consumer)
        .bind(topic)
        .bind(item)
        .fetch_all(pool)
        .await?;
    // The position joins the lists: there is at least one row.
    let Some((partitions, offsets, last_event_at, ..)) = rows.first() else {
        return Err(sqlx::Error::RowNotFound);
    };
    let as_of = AsOf::at((partitions.clone(), offsets.clone()), *last_event_at);
    let mut lists: Vec<(i32, Vec<u8>)> = rows
        .into_iter()
        .filter_map(|(.., partition, list)| partition.zip(list))
        .collect();
    let now = now(&as_of, half_life_secs);
    Ok((similar_in(&mut lists, limit, now), as_of))
}

/// Products most often engaged with together with `item`, read in the
/// snapshot `conn` holds.
pub async fn similar(
    conn: &mut PgConnection,
    item: &str,
    limit: usize,
    as_of: &AsOf,
    half_life_secs: f64,
) -> sqlx::Result<Vec<Scored>> {
    let mut lists: Vec<(i32, Vec<u8>)> =
        sqlx::query_as("SELECT partition, neighbors FROM rec_cooc WHERE item = $1")
            .bind(item)
            .fetch_all(&mut *conn)
            .await?;
    Ok(similar_in(&mut lists, limit, now(as_of, half_life_secs)))
}

/// The best `limit` of a product's neighbour lists (one per partition),
/// added in partition order whatever order they were read in.
fn similar_in(lists: &mut [(i32, Vec<u8>)], limit: usize, now: f64) -> Vec<Scored> {
    lists.sort_unstable_by_key(|(partition, _)| *partition);
    let mut scores: Map<&str, f64> = Map::default();
    for (_, neighbors) in lists.iter() {
        for (candidate, score) in finite_scores(neighbors) {
            accumulate(&mut scores, candidate, score);
        }
    }
    top(scores, limit, now, Source::Similar)
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
