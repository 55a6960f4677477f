//! Loading and saving one partition's model. Saves write only what changed
//! since the last save, in the batch's transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};

use crate::codec;
use crate::model::{rank, Neighbors, PartitionModel, Popularity, Stored, UserState};

/// The well-formed entries with a finite score of a stored scored list
/// (queries skip anything else rather than fail).
pub fn finite_scores(stored: &[u8]) -> impl Iterator<Item = (&str, f64)> + '_ {
    codec::scores(stored)
        .map_while(Result::ok)
        .filter(|(_, score)| score.is_finite())
}

/// The product ids of a stored list of ids.
pub fn products(stored: &[u8]) -> impl Iterator<Item = &str> + '_ {
    codec::ids(stored).map_while(Result::ok).map(|(id, _)| id)
}

/// Reads a partition's whole model. A stored entry that is not a product
/// with a finite score (written by an older version, or by hand) is dropped,
/// counted and logged with its partition and row: one bad row must not stop
/// the partition from loading.
pub async fn load(pool: &PgPool, partition: i32) -> anyhow::Result<PartitionModel> {
    let mut model = PartitionModel::default();
    let users: Vec<(String, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT user_id, recent, purchased FROM rec_users WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    for (user, recent, purchased) in users {
        let recent = scores(partition, "rec_users", &user, &recent);
        let purchased = ids(partition, &user, &purchased);
        model.users.insert(
            user,
            UserState {
                recent,
                purchased,
                stored: Stored::Saved,
            },
        );
    }
    let cooc: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT item, neighbors FROM rec_cooc WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    for (item, neighbors) in cooc {
        let scores = scores(partition, "rec_cooc", &item, &neighbors)
            .into_iter()
            .collect();
        model.cooc.insert(
            item,
            Neighbors {
                scores,
                stored: Stored::Saved,
            },
        );
    }
    let popularity: Vec<(String, f64)> =
        sqlx::query_as("SELECT item, score FROM rec_popularity WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    for (item, score) in popularity {
        if !score.is_finite() {
            bad_row(partition, "rec_popularity", &item);
            continue;
        }
        let popularity = Popularity {
            score,
            stored: Stored::Saved,
        };
        model.popularity.insert(item, popularity);
    }
    Ok(model)
}

/// A stored scored list; entries that are not a product with a finite
/// score, and whatever follows a malformed entry, are dropped (and reported).
fn scores(partition: i32, table: &str, row: &str, stored: &[u8]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut bad = false;
    for entry in codec::scores(stored) {
        match entry {
            Ok((id, score)) if score.is_finite() => out.push((id.to_owned(), score)),
            _ => bad = true,
        }
    }
    if bad {
        bad_row(partition, table, row);
    }
    out
}

/// A stored list of ids; a malformed tail is dropped (and reported).
fn ids(partition: i32, row: &str, stored: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in codec::ids(stored) {
        match entry {
            Ok((id, _)) => out.push(id.to_owned()),
            Err(_) => bad_row(partition, "rec_users", row),
        }
    }
    out
}

fn bad_row(partition: i32, table: &str, row: &str) {
    metrics::counter!("kappa_recommendation_bad_entries_total", "table" => table.to_owned())
        .increment(1);
    tracing::warn!(
        partition,
        table,
        row,
        "dropped a stored entry that is not a product (with a finite score)"
    );
}

/// Writes what changed in the partitions' models since the last save, in
/// at most two statements per table for all of them: the changed rows
/// updated in place, the new ones inserted. Lists go to Postgres as bytes
/// ([`codec`]) in binary arrays: nothing to parse there.
pub async fn save(
    conn: &mut PgConnection,
    models: &HashMap<i32, PartitionModel>,
) -> sqlx::Result<()> {
    let users = Rows::of(
        models,
        |m| &m.users,
        |u| u.stored,
        |user| {
            let mut recent = Vec::with_capacity(user.recent.len() * 24);
            let entries = user.recent.iter().map(|(k, v)| (k.as_str(), *v));
            codec::put_scores(&mut recent, entries);
            let mut purchased = Vec::with_capacity(user.purchased.len() * 16);
            codec::put_ids(&mut purchased, user.purchased.iter().map(String::as_str));
            (recent, purchased)
        },
    );
    write(conn, &USERS, users, |query, lists| {
        let (recents, purchases): (Vec<Vec<u8>>, Vec<Vec<u8>>) = lists.into_iter().unzip();
        query.bind(recents).bind(purchases)
    })
    .await?;
    let cooc = Rows::of(
        models,
        |m| &m.cooc,
        |n| n.stored,
        |neighbors| {
            let mut ranked: Vec<(&str, f64)> = neighbors
                .scores
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect();
            rank(&mut ranked);
            let mut list = Vec::with_capacity(ranked.len() * 24);
            codec::put_scores(&mut list, ranked);
            list
        },
    );
    write(conn, &COOC, cooc, |query, lists| query.bind(lists)).await?;
    let popularity = Rows::of(models, |m| &m.popularity, |p| p.stored, |p| p.score);
    write(conn, &POPULARITY, popularity, |query, scores| {
        query.bind(scores)
    })
    .await?;
    Ok(())
}

type Statement<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Writes the rows of a table, each kind in one statement: partitions and
/// keys bound first, then `bind` binds the values' columns.
async fn write<'m, T>(
    conn: &mut PgConnection,
    table: &Table,
    kinds: impl Iterator<Item = (Stored, Rows<'m, T>)>,
    bind: impl for<'q> Fn(Statement<'q>, Vec<T>) -> Statement<'q>,
) -> sqlx::Result<()> {
    for (
        stored,
        Rows {
            partitions,
            keys,
            values,
        },
    ) in kinds
    {
        let sql = table.statement(stored);
        let query = bind(sqlx::query(&sql).bind(partitions).bind(&keys), values);
        table.expect_rows(stored, keys.len(), query.execute(&mut *conn).await?)?;
    }
    Ok(())
}

/// A table of the model: its key beside `partition`, and its columns with
/// their types, bound as arrays in this order after the partitions and keys.
struct Table {
    name: &'static str,
    key: &'static str,
    columns: &'static [(&'static str, &'static str)],
}

const USERS: Table = Table {
    name: "rec_users",
    key: "user_id",
    columns: &[("recent", "bytea"), ("purchased", "bytea")],
};
const COOC: Table = Table {
    name: "rec_cooc",
    key: "item",
    columns: &[("neighbors", "bytea")],
};
const POPULARITY: Table = Table {
    name: "rec_popularity",
    key: "item",
    columns: &[("score", "float8")],
};

impl Table {
    /// `$1` the partitions, `$2` the keys, `$3...` the columns: new rows
    /// inserted (an upsert, for a row the model could not load), changed
    /// ones updated in place.
    fn statement(&self, stored: Stored) -> String {
        let Table { name, key, columns } = self;
        let list = |f: &dyn Fn(&str) -> String| -> String {
            columns
                .iter()
                .map(|(c, _)| f(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let arrays: String = columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!(", ${}::{ty}[]", i + 3))
            .collect();
        let names = list(&|c| c.to_owned());
        match stored {
            Stored::New => format!(
                "INSERT INTO {name} (partition, {key}, {names})
                 SELECT * FROM UNNEST($1::int[], $2::text[]{arrays})
                 ON CONFLICT ({key}, partition) DO UPDATE SET {}",
                list(&|c| format!("{c} = EXCLUDED.{c}"))
            ),
            _ => format!(
                "UPDATE {name} AS r SET {}
                 FROM UNNEST($1::int[], $2::text[]{arrays}) AS v (partition, {key}, {names})
                 WHERE r.partition = v.partition AND r.{key} = v.{key}",
                list(&|c| format!("{c} = v.{c}"))
            ),
        }
    }

    /// An update in place must meet every row it names: one missing means
    /// the model in memory is not the stored one, and the batch must not
    /// commit (the runtime reloads the partition from what is stored and
    /// retries).
    fn expect_rows(
        &self,
        stored: Stored,
        rows: usize,
        done: sqlx::postgres::PgQueryResult,
    ) -> sqlx::Result<()> {
        if stored == Stored::Changed && done.rows_affected() != rows as u64 {
            return Err(sqlx::Error::Protocol(format!(
                "{}: {} of {rows} rows to update were there; the stored model differs from memory",
                self.name,
                done.rows_affected()
            )));
        }
        Ok(())
    }
}

/// Rows of one kind for one table: partitions, keys and values, as arrays.
struct Rows<'m, T> {
    partitions: Vec<i32>,
    keys: Vec<&'m str>,
    values: Vec<T>,
}

impl<'m, T> Rows<'m, T> {
    fn new() -> Self {
        Rows {
            partitions: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// The new and the changed rows of every partition's `entries` (the
    /// kinds that have any).
    fn of<V: 'm>(
        models: &'m HashMap<i32, PartitionModel>,
        entries: impl Fn(&'m PartitionModel) -> &'m crate::model::Map<String, V>,
        stored: impl Fn(&V) -> Stored,
        row: impl Fn(&V) -> T,
    ) -> impl Iterator<Item = (Stored, Self)> {
        let (mut new, mut changed) = (Self::new(), Self::new());
        for (&partition, model) in models {
            for (key, entry) in entries(model) {
                let rows = match stored(entry) {
                    Stored::New => &mut new,
                    Stored::Changed => &mut changed,
                    Stored::Saved => continue,
                };
                rows.partitions.push(partition);
                rows.keys.push(key.as_str());
                rows.values.push(row(entry));
            }
        }
        [(Stored::New, new), (Stored::Changed, changed)]
            .into_iter()
            .filter(|(_, rows)| !rows.keys.is_empty())
    }
}

/// Per-day interaction counts of one batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct Daily {
    pub views: i64,
    pub clicks: i64,
    pub add_to_cart: i64,
    pub purchases: i64,
    pub revenue_cents: i64,
}

/// Adds a batch's per (partition, day) counts.
pub async fn add_daily(
    conn: &mut PgConnection,
    counts: &BTreeMap<(i32, NaiveDate), Daily>,
) -> sqlx::Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let (mut days, mut partitions) = (Vec::new(), Vec::new());
    let (mut views, mut clicks, mut carts, mut purchases, mut revenue) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (&(partition, day), d) in counts {
        days.push(day);
        partitions.push(partition);
        views.push(d.views);
        clicks.push(d.clicks);
        carts.push(d.add_to_cart);
        purchases.push(d.purchases);
        revenue.push(d.revenue_cents);
    }
    sqlx::query(
        "INSERT INTO rec_daily (day, partition, views, clicks, add_to_cart, purchases, revenue_cents)
         SELECT * FROM UNNEST($1::date[], $2::int[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
         ON CONFLICT (day, partition) DO UPDATE SET
           views = rec_daily.views + EXCLUDED.views,
           clicks = rec_daily.clicks + EXCLUDED.clicks,
           add_to_cart = rec_daily.add_to_cart + EXCLUDED.add_to_cart,
           purchases = rec_daily.purchases + EXCLUDED.purchases,
           revenue_cents = rec_daily.revenue_cents + EXCLUDED.revenue_cents",
    )
    .bind(days)
    .bind(partitions)
    .bind(views)
    .bind(clicks)
    .bind(carts)
    .bind(purchases)
    .bind(revenue)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the newest event time applied per partition, in one statement.
pub async fn touch_partitions(
    conn: &mut PgConnection,
    latest: &HashMap<i32, DateTime<Utc>>,
) -> sqlx::Result<()> {
    if latest.is_empty() {
        return Ok(());
    }
    let (partitions, times): (Vec<i32>, Vec<DateTime<Utc>>) =
        latest.iter().map(|(p, t)| (*p, *t)).unzip();
    sqlx::query(
        "INSERT INTO rec_partitions (partition, last_event_at)
         SELECT * FROM UNNEST($1::int[], $2::timestamptz[])
         ON CONFLICT (partition) DO UPDATE SET last_event_at = GREATEST(rec_partitions.last_event_at, EXCLUDED.last_event_at)",
    )
    .bind(partitions)
    .bind(times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
