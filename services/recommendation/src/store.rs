//! Loading and saving one partition's model. Saves write only what changed
//! since the last save, in the batch's transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::model::{Neighbors, PartitionModel, Popularity, UserState};

/// A stored JSON column.
pub type Json<T> = sqlx::types::Json<T>;

/// The `[product, score]` pairs of a stored list that are well-formed with a
/// finite score (queries skip anything else rather than fail).
pub fn finite_scores(stored: &Value) -> impl Iterator<Item = (String, f64)> + '_ {
    stored.as_array().into_iter().flatten().filter_map(|item| {
        let pair = item.as_array()?;
        let score = pair.get(1)?.as_f64().filter(|s| s.is_finite())?;
        Some((pair.first()?.as_str()?.to_owned(), score))
    })
}

/// The product ids of a stored list.
pub fn products(stored: &Value) -> impl Iterator<Item = String> + '_ {
    stored
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
}

/// Reads a partition's whole model. A stored entry that is not a product
/// with a finite score (written by an older version, or by hand) is dropped,
/// counted and logged with its partition and row: one bad row must not stop
/// the partition from loading.
pub async fn load(pool: &PgPool, partition: i32) -> anyhow::Result<PartitionModel> {
    let mut model = PartitionModel::default();
    let users: Vec<(String, Json<Value>, Json<Value>)> =
        sqlx::query_as("SELECT user_id, recent, purchased FROM rec_users WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    for (user, recent, purchased) in users {
        let recent = scores(partition, "rec_users", &user, &recent.0);
        let purchased = products(&purchased.0).collect();
        model.users.insert(
            user,
            UserState {
                recent,
                purchased,
                dirty: false,
            },
        );
    }
    let cooc: Vec<(String, Json<Value>)> =
        sqlx::query_as("SELECT item, neighbors FROM rec_cooc WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    for (item, neighbors) in cooc {
        let scores = scores(partition, "rec_cooc", &item, &neighbors.0)
            .into_iter()
            .collect();
        model.cooc.insert(
            item,
            Neighbors {
                scores,
                dirty: false,
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
            dirty: false,
        };
        model.popularity.insert(item, popularity);
    }
    Ok(model)
}

/// `[[product, score], ...]` as stored; entries that are not that, with a
/// finite score, are dropped (and reported).
fn scores(partition: i32, table: &str, row: &str, stored: &Value) -> Vec<(String, f64)> {
    let out: Vec<(String, f64)> = finite_scores(stored).collect();
    let stored_len = stored.as_array().map_or(0, Vec::len);
    if out.len() != stored_len || !stored.is_array() {
        bad_row(partition, table, row);
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
        "dropped a stored entry that is not a finite score"
    );
}

/// Writes what changed in `model` since the last save. Lists go to
/// Postgres as JSON text written straight from the values (no JSON tree).
pub async fn save(
    conn: &mut PgConnection,
    partition: i32,
    model: &PartitionModel,
) -> sqlx::Result<()> {
    let (mut ids, mut recents, mut purchases) = (Vec::new(), Vec::new(), Vec::new());
    for (id, user) in model.users.iter().filter(|(_, u)| u.dirty) {
        ids.push(id.as_str());
        recents.push(json(&user.recent));
        purchases.push(json(&user.purchased));
    }
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO rec_users (partition, user_id, recent, purchased)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[]::jsonb[], $4::text[]::jsonb[])
             ON CONFLICT (user_id, partition) DO UPDATE SET recent = EXCLUDED.recent, purchased = EXCLUDED.purchased",
        )
        .bind(partition)
        .bind(ids)
        .bind(recents)
        .bind(purchases)
        .execute(&mut *conn)
        .await?;
    }
    let (mut items, mut lists) = (Vec::new(), Vec::new());
    for (item, neighbors) in model.cooc.iter().filter(|(_, n)| n.dirty) {
        let mut ranked: Vec<(&str, f64)> = neighbors
            .scores
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        items.push(item.as_str());
        lists.push(json(&ranked));
    }
    if !items.is_empty() {
        sqlx::query(
            "INSERT INTO rec_cooc (partition, item, neighbors)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[]::jsonb[])
             ON CONFLICT (item, partition) DO UPDATE SET neighbors = EXCLUDED.neighbors",
        )
        .bind(partition)
        .bind(items)
        .bind(lists)
        .execute(&mut *conn)
        .await?;
    }
    let (mut items, mut scores) = (Vec::new(), Vec::new());
    for (item, popularity) in model.popularity.iter().filter(|(_, p)| p.dirty) {
        items.push(item.as_str());
        scores.push(popularity.score);
    }
    if !items.is_empty() {
        sqlx::query(
            "INSERT INTO rec_popularity (partition, item, score)
             SELECT $1, * FROM UNNEST($2::text[], $3::float8[])
             ON CONFLICT (item, partition) DO UPDATE SET score = EXCLUDED.score",
        )
        .bind(partition)
        .bind(items)
        .bind(scores)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("lists of strings and finite floats serialize")
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

/// Records the newest event time applied per partition.
pub async fn touch_partitions(
    conn: &mut PgConnection,
    latest: &HashMap<i32, DateTime<Utc>>,
) -> sqlx::Result<()> {
    for (&partition, &at) in latest {
        sqlx::query(
            "INSERT INTO rec_partitions (partition, last_event_at) VALUES ($1, $2)
             ON CONFLICT (partition) DO UPDATE SET last_event_at = GREATEST(rec_partitions.last_event_at, EXCLUDED.last_event_at)",
        )
        .bind(partition)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
