//! `POST /api/replays` (token), `GET /api/replays`, `GET /api/replays/{id}`,
//! `GET /api/metrics/daily?from=&to=&run=`, `GET /api/products/top?day=&by=&limit=&run=`.
//! Metrics answers name the run and offsets they come from: the current run
//! (the newest successful full replay) unless `run` names another.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::http::{self, Admin, ApiError, Path, Query};
use shared::replay::ProgressView;

use crate::aggregate::conversion;
use crate::daily::Daily;
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
    /// An RFC 3339 time; none: up to the end offsets at the start.
    to: Option<String>,
}

/// A replay bound as a time. Kafka timestamps start at the Unix epoch, and
/// the broker's offsets-for-times lookup reads negative ones as sentinels
/// (-1 latest, -2 earliest), so a time before 1970 is refused here rather
/// than read as something else or failed later with the client library's text.
fn replay_time(field: &'static str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let invalid = |problem: String| {
        ApiError::bad_request("invalid_range", format!("`{field}` {problem}")).with("field", field)
    };
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            let earliest = if field == "from" {
                "\"earliest\" or "
            } else {
                ""
            };
            invalid(format!("must be {earliest}an RFC 3339 time: {e}"))
        })?
        .with_timezone(&Utc);
    if time < DateTime::UNIX_EPOCH {
        return Err(invalid(format!(
            "({time}) is before 1970-01-01T00:00:00Z, where event times on the stream begin"
        )));
    }
    Ok(time)
}

/// Queues a replay. Only a full one (from "earliest", no `to`) becomes
/// current when it succeeds; a custom range is stored under its id.
async fn start_replay(
    _: Admin,
    State(s): State<AppState>,
    http::Json(request): http::Json<ReplayRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let from = match request.from.as_str() {
        "earliest" => None,
        time => Some(replay_time("from", time)?),
    };
    let to = request
        .to
        .as_deref()
        .map(|t| replay_time("to", t))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if to <= from {
            return Err(ApiError::bad_request(
                "invalid_range",
                format!("`to` ({to}) must be after `from` ({from})"),
            )
            .with("field", "to"));
        }
    }
    let id = store::enqueue(&s.pool, Trigger::Manual, from, to).await?;
    s.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "queued", "full": from.is_none() && to.is_none()})),
    ))
}

/// A run with its live progress (for a running one) or its final numbers,
/// and whether it is the run served by default.
/// The progress of the runs in hand. Read *before* the runs themselves: the
/// runner stores a run's success before it drops its progress, so a run that
/// finishes in between reads as succeeded (1.0), never as a running run
/// without progress (0.0, which made the fraction step back).
fn live(s: &AppState) -> HashMap<i64, ProgressView> {
    let registry = s.registry.lock().expect("poisoned");
    registry.iter().map(|(id, p)| (*id, p.view())).collect()
}

fn describe(run: Run, current: Option<i64>, live: &HashMap<i64, ProgressView>) -> Value {
    let mut value = serde_json::to_value(&run).unwrap_or(Value::Null);
    let progress = match (run.state, live.get(&run.id)) {
        (RunState::Succeeded, _) => json!({"fraction": 1.0}),
        (_, Some(view)) => json!(view),
        (_, None) => json!({"fraction": 0.0}),
    };
    value["progress"] = progress;
    value["full"] = json!(run.is_full());
    value["current"] = json!(current == Some(run.id));
    value
}

async fn list_replays(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let live = live(&s);
    let list = store::list(&s.pool, 50).await?;
    let current = store::current_id(&s.pool).await?;
    Ok(Json(
        json!({"runs": list.into_iter().map(|r| describe(r, current, &live)).collect::<Vec<_>>()}),
    ))
}

async fn get_replay(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let live = live(&s);
    let run = store::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no replay run {id}")))?;
    let current = store::current_id(&s.pool).await?;
    Ok(Json(describe(run, current, &live)))
}

/// The run whose results answer: the one named, or the current one.
async fn served(s: &AppState, run: Option<i64>) -> Result<Run, ApiError> {
    let Some(id) = run else {
        return store::current(&s.pool).await?.ok_or_else(|| {
            ApiError::not_found("no replay has succeeded yet; start one with POST /api/replays")
        });
    };
    match store::get(&s.pool, id).await? {
        Some(run) if run.state == RunState::Succeeded => Ok(run),
        Some(run) => Err(ApiError::not_found(format!(
            "replay run {id} has no results (it is {})",
            run.state.as_str()
        ))),
        None => Err(ApiError::not_found(format!("no replay run {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// A run's id; none: the current run.
    run: Option<i64>,
}

/// The days of a range (see [`crate::daily`] for the default range and
/// what totals hold).
async fn daily(
    State(s): State<AppState>,
    Query(range): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let run = served(&s, range.run).await?;
    let stored = store::stored_days(&s.pool, run.id).await?;
    let daily = Daily::new(range.from, range.to, &stored)
        .map_err(|e| ApiError::bad_request("invalid_range", e.message).with("field", e.field))?;
    let days: Vec<Value> = daily
        .every_day()
        .map(|(date, day)| {
            let mut value = json!(day);
            value["day"] = json!(date);
            value["conversion"] = json!(conversion(&day));
            value
        })
        .collect();
    Ok(Json(json!({
        "run_id": run.id, "start_offsets": run.start_offsets, "end_offsets": run.end_offsets,
        "from": daily.range.map(|r| r.0), "to": daily.range.map(|r| r.1),
        "days": days, "totals": daily.totals(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    day: NaiveDate,
    by: By,
    limit: Option<i64>,
    /// A run's id; none: the current run.
    run: Option<i64>,
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
    let run = served(&s, q.run).await?;
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
