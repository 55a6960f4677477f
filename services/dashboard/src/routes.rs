//! `POST /api/replays` (token), `GET /api/replays`, `GET /api/replays/{id}`,
//! `GET /api/metrics/daily?from=&to=`, `GET /api/products/top?day=&by=&limit=`.
//! Metrics answers name the run and offsets they come from.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::http::{self, Admin, ApiError, Path, Query};

use crate::aggregate::{conversion, Day};
use crate::store::{self, By, Run, RunState, Trigger};
use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/replays", get(list_replays).post(start_replay))
        .route("/api/replays/{id}", get(get_replay))
        .route("/api/metrics/daily", get(daily))
        .route("/api/products/top", get(top_products))
        .route("/api/triggers", get(trigger_status))
        .route("/api/mapreduce/jobs", axum::routing::post(start_mapreduce))
        .route("/", get(crate::page::page))
        .with_state(state)
}

/// `POST /api/mapreduce/jobs` (token): starts a page-count job over the
/// whole access-log topic on the MapReduce coordinator, with the caller's
/// token, and answers what the coordinator answered.
async fn start_mapreduce(
    _: Admin,
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut request = s
        .http
        .post(format!("{}/jobs", s.pagecount_url))
        .json(&json!({}));
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        request = request.header(axum::http::header::AUTHORIZATION, auth.clone());
    }
    let response = request.send().await.map_err(|e| {
        ApiError::unavailable(
            "pagecount_unavailable",
            "the MapReduce coordinator did not answer",
        )
        .caused_by(e)
    })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Ok((status, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// "earliest" or an RFC 3339 time.
    from: String,
    to: Option<DateTime<Utc>>,
}

async fn start_replay(
    _: Admin,
    State(s): State<AppState>,
    http::Json(request): http::Json<ReplayRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let id = store::enqueue(&s.pool, Trigger::Manual, from, request.to).await?;
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
    let progress = match (progress, run.state) {
        (Some(view), _) => json!(view),
        (None, RunState::Succeeded) => json!({"fraction": 1.0}),
        (None, _) => json!({"fraction": 0.0}),
    };
    value["progress"] = progress;
    value
}

async fn list_replays(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = store::list(&s.pool, 50).await?;
    Ok(Json(
        json!({"runs": list.into_iter().map(|r| describe(r, &s)).collect::<Vec<_>>()}),
    ))
}

async fn get_replay(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let run = store::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no replay run {id}")))?;
    Ok(Json(describe(run, &s)))
}

async fn current(s: &AppState) -> Result<Run, ApiError> {
    store::current(&s.pool).await?.ok_or_else(|| {
        ApiError::not_found("no replay has succeeded yet; start one with POST /api/replays")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

async fn daily(
    State(s): State<AppState>,
    Query(range): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let run = current(&s).await?;
    let stored = store::stored_days(&s.pool, run.id).await?;
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
    by: By,
    limit: Option<i64>,
}

async fn top_products(
    State(s): State<AppState>,
    Query(q): Query<TopQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(10);
    if !(1..=crate::aggregate::TOP as i64).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("`limit` must be between 1 and {}", crate::aggregate::TOP),
        ));
    }
    let run = current(&s).await?;
    let rows = store::top_products(&s.pool, run.id, q.day, q.by, limit).await?;
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
