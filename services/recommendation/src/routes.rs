//! `GET /users/{id}/recommendations` (token: it reveals a user's history),
//! `GET /products/{id}/similar`, `GET /stats`, `GET /stats/daily`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::http::{Admin, ApiError, Path, Query};

use crate::{query, AppState};

const MAX_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    limit: Option<usize>,
}

impl Limit {
    fn get(self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(10) {
            n @ 1..=MAX_LIMIT => Ok(n),
            n => Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
            )),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/users/{id}/recommendations", get(recommendations))
        .route("/products/{id}/similar", get(similar))
        .route("/stats", get(stats))
        .route("/stats/daily", get(daily))
        .with_state(state)
}

async fn recommendations(
    _: Admin,
    State(s): State<AppState>,
    Path(user): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit.get()?;
    let as_of = query::as_of(&s.pool, &s.consumer, &s.topic).await?;
    let (items, fallback) =
        query::for_user(&s.pool, &user, limit, &as_of, s.half_life_secs).await?;
    Ok(Json(
        json!({"user_id": user, "items": items, "fallback": fallback, "as_of": as_of}),
    ))
}

async fn similar(
    State(s): State<AppState>,
    Path(product): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit.get()?;
    let as_of = query::as_of(&s.pool, &s.consumer, &s.topic).await?;
    let items = query::similar(&s.pool, &product, limit, &as_of, s.half_life_secs).await?;
    Ok(Json(
        json!({"product_id": product, "items": items, "as_of": as_of}),
    ))
}

async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = shared::worker::offsets::progress(&s.pool, &s.consumer, &s.topic).await?;
    let next: serde_json::Map<String, Value> = rows
        .iter()
        .map(|(p, next, _, _)| (p.to_string(), Value::from(*next)))
        .collect();
    Ok(Json(json!({
        "events_applied": rows.iter().map(|r| r.2).sum::<i64>(),
        "dlq": rows.iter().map(|r| r.3).sum::<i64>(),
        "next_offsets": next,
    })))
}

async fn daily(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"days": query::daily(&s.pool).await?})))
}
