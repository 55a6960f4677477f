//! Loading and saving one partition's model. Saves write only what changed
//! since the last save, in the batch's transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::model::{PartitionModel, UserState};

/// A stored list of `[product, score]` pairs.
pub type Scores = sqlx::types::Json<Vec<(String, f64)>>;
/// A stored list of products.
pub type Products = sqlx::types::Json<Vec<String>>;

/// Reads a partition's whole model.
pub async fn load(pool: &PgPool, partition: i32) -> anyhow::Result<PartitionModel> {
    let mut model = PartitionModel::default();
    let users: Vec<(String, Scores, Products)> =
        sqlx::query_as("SELECT user_id, recent, purchased FROM rec_users WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    for (user, recent, purchased) in users {
        model.users.insert(
            user,
            UserState {
                recent: recent.0,
                purchased: purchased.0,
            },
        );
    }
    let cooc: Vec<(String, Scores)> =
        sqlx::query_as("SELECT item, neighbors FROM rec_cooc WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    for (item, neighbors) in cooc {
        model.cooc.insert(item, neighbors.0.into_iter().collect());
    }
    let popularity: Vec<(String, f64)> =
        sqlx::query_as("SELECT item, score FROM rec_popularity WHERE partition = $1")
            .bind(partition)
            .fetch_all(pool)
            .await?;
    model.popularity = popularity.into_iter().collect();
    Ok(model)
}

/// Writes what changed in `model` since the last save.
pub async fn save(
    conn: &mut PgConnection,
    partition: i32,
    model: &PartitionModel,
) -> sqlx::Result<()> {
    if !model.dirty_users.is_empty() {
        let (mut ids, mut recents, mut purchases) = (Vec::new(), Vec::new(), Vec::new());
        for id in &model.dirty_users {
            let user = &model.users[id];
            ids.push(id.as_str());
            recents.push(pairs(&user.recent));
            purchases.push(Value::from(user.purchased.clone()));
        }
        sqlx::query(
            "INSERT INTO rec_users (partition, user_id, recent, purchased)
             SELECT $1, * FROM UNNEST($2::text[], $3::jsonb[], $4::jsonb[])
             ON CONFLICT (user_id, partition) DO UPDATE SET recent = EXCLUDED.recent, purchased = EXCLUDED.purchased",
        )
        .bind(partition)
        .bind(ids)
        .bind(recents)
        .bind(purchases)
        .execute(&mut *conn)
        .await?;
    }
    if !model.dirty_items.is_empty() {
        let (mut items, mut lists) = (Vec::new(), Vec::new());
        for item in &model.dirty_items {
            let mut neighbors: Vec<(String, f64)> = model.cooc[item]
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            crate::model::rank(&mut neighbors);
            items.push(item.as_str());
            lists.push(pairs(&neighbors));
        }
        sqlx::query(
            "INSERT INTO rec_cooc (partition, item, neighbors)
             SELECT $1, * FROM UNNEST($2::text[], $3::jsonb[])
             ON CONFLICT (item, partition) DO UPDATE SET neighbors = EXCLUDED.neighbors",
        )
        .bind(partition)
        .bind(items)
        .bind(lists)
        .execute(&mut *conn)
        .await?;
    }
    if !model.dirty_popularity.is_empty() {
        let items: Vec<&str> = model.dirty_popularity.iter().map(String::as_str).collect();
        let scores: Vec<f64> = model
            .dirty_popularity
            .iter()
            .map(|i| model.popularity[i])
            .collect();
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

fn pairs(list: &[(String, f64)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(k, v)| Value::from(vec![Value::from(k.as_str()), Value::from(*v)]))
            .collect(),
    )
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
