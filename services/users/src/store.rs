//! The `users` table and its outbox: every write changes a user and adds
//! the `user_updated` event that says so, in one transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::event::{Event, EventBody, UserUpdated};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A user as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    /// 1 when created, one more with every change (the `ETag`).
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// No such user.
    NotFound,
    /// A user with this id exists already.
    Exists,
    /// `If-Match` named another version than the stored one.
    Stale {
        current: i64,
    },
    Database(sqlx::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        WriteError::Database(error)
    }
}

/// Creates a user (and its first event).
pub async fn create(
    pool: &PgPool,
    id: &str,
    email: &str,
    name: Option<&str>,
) -> Result<User, WriteError> {
    let mut tx = pool.begin().await?;
    let user: Option<User> = sqlx::query_as(
        "INSERT INTO users (id, email, name) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING RETURNING *",
    )
    .bind(id)
    .bind(email)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let user = user.ok_or(WriteError::Exists)?;
    outbox(&mut tx, &user).await?;
    tx.commit().await?;
    Ok(user)
}

/// Changes a user's email and name; with `expected`, only if the stored
/// version is that one. The version grows by one.
pub async fn update(
    pool: &PgPool,
    id: &str,
    email: &str,
    name: Option<&str>,
    expected: Option<i64>,
) -> Result<User, WriteError> {
    let mut tx = pool.begin().await?;
    // The row lock orders concurrent writers: each sees the last version.
    let current: Option<i64> =
        sqlx::query_scalar("SELECT version FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = current.ok_or(WriteError::NotFound)?;
    if expected.is_some_and(|e| e != current) {
        return Err(WriteError::Stale { current });
    }
    let user: User = sqlx::query_as(
        "UPDATE users SET email = $2, name = $3, version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(email)
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    outbox(&mut tx, &user).await?;
    tx.commit().await?;
    Ok(user)
}

/// The `user_updated` event of `user`'s current version, as an outbox row.
async fn outbox(tx: &mut PgConnection, user: &User) -> sqlx::Result<()> {
    let event_id = Uuid::now_v7();
    let event = Event {
        id: Some(event_id),
        ts: Some(user.updated_at),
        body: EventBody::UserUpdated(UserUpdated {
            user_id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            version: Some(user.version as u64),
        }),
    };
    let payload = String::from_utf8(event.to_json()).expect("events serialize to UTF-8");
    sqlx::query(
        "INSERT INTO users_outbox (event_id, user_id, version, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind(event_id)
    .bind(&user.id)
    .bind(user.version)
    .bind(payload)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, id: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as("SELECT * FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Up to `limit` users after `after` (keyset pagination by id).
pub async fn list(pool: &PgPool, limit: i64, after: Option<&str>) -> sqlx::Result<Vec<User>> {
    sqlx::query_as("SELECT * FROM users WHERE $2::text IS NULL OR id > $2 ORDER BY id LIMIT $1")
        .bind(limit)
        .bind(after)
        .fetch_all(pool)
        .await
}
