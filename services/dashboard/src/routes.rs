//! `POST /api/replays` (token), `GET /api/replays`, `GET /api/replays/{id}`,
//! `GET /api/metrics/daily?from=&to=`, `GET /api/products/top?day=&by=&limit=`.
//! Metrics answers name the run and offsets they come from.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::config::Secret;
use shared::http::auth::require_token;
use shared::http::ApiError;

use crate::aggregate::{conversion, Day};
use crate::runs::{self, Run};
use crate::AppState;

pub fn router(state: AppState, token: Secret) -> Router {
    let admin = Router::new()
        .route("/api/replays", post(start_replay))
        .route_layer(axum::middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/api/replays", get(list_replays))
        .route("/api/replays/{id}", get(get_replay))
        .route("/api/metrics/daily", get(daily))
        .route("/api/products/top", get(top_products))
        .route("/api/triggers", get(trigger_status))
        .route("/", get(crate::page::page))
        .merge(admin)
        .with_state(state)
}

fn unavailable(error: sqlx::Error) -> ApiError {
    tracing::warn!(%error, "query failed");
    ApiError::unavailable(
        "database_unavailable",
        "the dashboard store is unavailable; retry shortly",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// "earliest" or an RFC 3339 time.
    from: String,
    to: Option<DateTime<Utc>>,
}

async fn start_replay(
    State(s): State<AppState>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body?;
    let from = match request.from.as_str() {
        "earliest" => None,
        time => Some(
            DateTime::parse_from_rfc3339(time)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid_from",
                        format!("`from` must be \"earliest\" or an RFC 3339 time: {e}"),
                    )
                })?,
        ),
    };
    if let (Some(from), Some(to)) = (from, request.to) {
        if to <= from {
            return Err(ApiError::bad_request(
                "invalid_range",
                "`to` must be after `from`",
            ));
        }
    }
    let id = runs::enqueue(&s.pool, "manual", from, request.to)
        .await
        .map_err(unavailable)?;
    s.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "queued"})),
    ))
}

/// A run with its live progress (for a running one) or its final numbers.
fn describe(run: Run, s: &AppState) -> Value {
    let progress = s
        .registry
        .lock()
        .expect("poisoned")
        .get(&run.id)
        .map(|p| p.view());
    let mut value = serde_json::to_value(&run).unwrap_or(Value::Null);
    let progress = match (progress, run.state.as_str()) {
        (Some(view), _) => json!(view),
        (None, "succeeded") => json!({"fraction": 1.0}),
        (None, _) => json!({"fraction": 0.0}),
    };
    value["progress"] = progress;
    value
}

async fn list_replays(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = runs::list(&s.pool, 50).await.map_err(unavailable)?;
    Ok(Json(
        json!({"runs": list.into_iter().map(|r| describe(r, &s)).collect::<Vec<_>>()}),
    ))
}

async fn get_replay(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let run = runs::get(&s.pool, id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("no replay run {id}")))?;
    Ok(Json(describe(run, &s)))
}

async fn current(s: &AppState) -> Result<Run, ApiError> {
    runs::current(&s.pool)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ApiError::not_found("no replay has succeeded yet; start one with POST /api/replays")
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

type DayRow = (NaiveDate, i64, i64, i64, i64, i64, i64, i64, i64);

/// A run's stored days.
pub async fn stored_days(
    pool: &sqlx::PgPool,
    run: i64,
) -> sqlx::Result<std::collections::BTreeMap<NaiveDate, Day>> {
    let rows: Vec<DayRow> = sqlx::query_as(
        "SELECT day, active_users, viewing_users, purchasing_users, views, clicks, add_to_cart, purchases, revenue_cents
         FROM dashboard_daily WHERE run_id = $1 ORDER BY day",
    )
    .bind(run)
    .fetch_all(pool)
    .await?;
    let n = |v: i64| v as u64;
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

async fn daily(
    State(s): State<AppState>,
    range: Result<Query<Range>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(range) = range?;
    let run = current(&s).await?;
    let stored = stored_days(&s.pool, run.id).await.map_err(unavailable)?;
    let first = range.from.or_else(|| stored.keys().next().copied());
    let last = range.to.or_else(|| stored.keys().next_back().copied());
    let mut days = Vec::new();
    let mut totals = Day::default();
    if let (Some(first), Some(last)) = (first, last) {
        if last < first {
            return Err(ApiError::bad_request(
                "invalid_range",
                "`to` must not be before `from`",
            ));
        }
        if (last - first).num_days() > 3660 {
            return Err(ApiError::bad_request(
                "invalid_range",
                "at most ten years of days per request",
            ));
        }
        // Every day of the range, zeros included.
        for date in first.iter_days().take_while(|d| *d <= last) {
            let day = stored.get(&date).cloned().unwrap_or_default();
            totals.views += day.views;
            totals.clicks += day.clicks;
            totals.add_to_cart += day.add_to_cart;
            totals.purchases += day.purchases;
            totals.revenue_cents += day.revenue_cents;
            let mut value = json!(day);
            value["day"] = json!(date);
            value["conversion"] = json!(conversion(&day));
            days.push(value);
        }
    }
    Ok(Json(json!({
        "run_id": run.id, "start_offsets": run.start_offsets, "end_offsets": run.end_offsets,
        "days": days, "totals": totals,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    day: NaiveDate,
    by: String,
    limit: Option<i64>,
}

async fn top_products(
    State(s): State<AppState>,
    query: Result<Query<TopQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    if q.by != "views" && q.by != "purchases" {
        return Err(ApiError::bad_request(
            "invalid_by",
            "`by` must be views or purchases",
        ));
    }
    let limit = q.limit.unwrap_or(10);
    if !(1..=crate::aggregate::TOP as i64).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("`limit` must be between 1 and {}", crate::aggregate::TOP),
        ));
    }
    let run = current(&s).await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT product_id, count FROM dashboard_top_products WHERE run_id = $1 AND day = $2 AND by = $3 ORDER BY rank LIMIT $4",
    )
    .bind(run.id)
    .bind(q.day)
    .bind(&q.by)
    .bind(limit)
    .fetch_all(&s.pool)
    .await
    .map_err(unavailable)?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(p, c)| json!({"product_id": p, "count": c}))
        .collect();
    Ok(Json(
        json!({"run_id": run.id, "end_offsets": run.end_offsets, "day": q.day, "by": q.by, "items": items}),
    ))
}

/// The schedule's next run and what the last threshold check found.
async fn trigger_status(State(s): State<AppState>) -> Json<crate::triggers::TriggerStatus> {
    Json(s.triggers.lock().expect("poisoned").clone())
}
