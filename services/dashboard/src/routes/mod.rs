//! `POST /api/replays` (token), `GET /api/replays`, `GET /api/replays/{id}`,
//! `GET /api/metrics/daily?from=&to=&run=`, `GET /api/products/top?day=&by=&limit=&run=`,
//! `GET /api/triggers`, `GET /api/audit?from=&to=` (token),
//! `GET /api/dlq/daily?from=&to=`, `POST /api/mapreduce/jobs` (token), and the page `/`.
//! Metrics answers name the run and offsets they come from: the current run
//! (the newest successful full replay) unless `run` names another.
//!
//! The daily metrics (the page, `/api/metrics/daily`, `/api/products/top`,
//! `/api/dlq/daily`) are public or need the token as `auth.public_metrics`
//! says ([`Viewer`]); their OpenAPI operations say which, computed here when
//! the router is built.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::http::openapi::ErrorBody;
use shared::http::{Admin, ApiError, Limit, Query, Viewer};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::aggregate::{conversion, Day};
use crate::audit::{AuditError, AuditReport};
use crate::daily::{Daily, Totals};
use crate::state::AppState;
use crate::store::{self, By, Run, RunState};

mod replays;

/// The operations that serve daily metrics: public or not by `auth.public_metrics`.
const METRICS_ROUTES: [&str; 4] = [
    "/",
    "/api/metrics/daily",
    "/api/products/top",
    "/api/dlq/daily",
];

pub fn router(state: AppState) -> OpenApiRouter {
    let public = state.public_metrics;
    let mut router = OpenApiRouter::new()
        .routes(routes!(replays::list_replays, replays::start_replay))
        .routes(routes!(replays::get_replay))
        .routes(routes!(daily))
        .routes(routes!(top_products))
        .routes(routes!(trigger_status))
        .routes(routes!(audit))
        .routes(routes!(dlq_daily))
        .routes(routes!(start_mapreduce))
        .routes(routes!(crate::page::page))
        .with_state(state);
    shared::http::openapi::metrics_security(&mut router, &METRICS_ROUTES, public);
    router
}

/// Start a MapReduce page count.
///
/// Starts a page-count job over the whole access-log topic on the MapReduce
/// coordinator (`dashboard.pagecount_url`), with the caller's token, and
/// answers what the coordinator answered: its status and its JSON body.
#[utoipa::path(post, path = "/api/mapreduce/jobs", tag = "dashboard",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The coordinator started the job: its answer (the job)", body = Value),
        (status = 502, description = "The coordinator answered something that is not JSON", body = ErrorBody),
        (status = 503, description = "The coordinator did not answer (`pagecount_unavailable`), or answered 503 itself", body = ErrorBody)))]
async fn start_mapreduce(
    _: Admin,
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut request = s
        .http
        .post(format!("{}/jobs", s.pagecount_url))
        .json(&serde_json::json!({}));
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        request = request.header(axum::http::header::AUTHORIZATION, auth.clone());
    }
    let unavailable = |e: reqwest::Error| {
        ApiError::unavailable(
            "pagecount_unavailable",
            "the MapReduce coordinator did not answer",
        )
        .caused_by(e)
    };
    let response = request.send().await.map_err(unavailable)?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = response.bytes().await.map_err(unavailable)?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "pagecount_bad_answer",
            format!("the MapReduce coordinator answered {status} without JSON"),
        )
        .caused_by(e)
    })?;
    Ok((status, Json(body)))
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

/// The days of a metrics answer.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// The first day (UTC); none: see the operation.
    from: Option<NaiveDate>,
    /// The last day (UTC); none: the newest day with data.
    to: Option<NaiveDate>,
    /// A run's id; none: the current run.
    run: Option<i64>,
}

/// One day of a metrics answer.
#[derive(Serialize, ToSchema)]
pub struct DayRow {
    #[serde(flatten)]
    counts: Day,
    day: NaiveDate,
    /// Purchasing users over viewing users; 0 without views.
    conversion: f64,
}

/// Daily metrics of a run over a range of days.
#[derive(Serialize, ToSchema)]
pub struct DailyMetrics {
    run_id: i64,
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    start_offsets: Option<Value>,
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    end_offsets: Option<Value>,
    /// The resolved range; none when no range was asked and the run has no data.
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// Every day of the range, days without events as zeros.
    days: Vec<DayRow>,
    /// Sums of what adds up over days (distinct users do not).
    totals: Totals,
}

/// Daily metrics.
///
/// Per UTC day from `from` to `to` (days without events as zeros): active,
/// viewing and purchasing users, views, clicks, add_to_cart, purchases,
/// revenue, conversion, with totals. Without a range: the newest 30 days
/// with data (within ten years); an explicit range covers at most ten
/// years. Public unless `auth.public_metrics` is false.
#[utoipa::path(get, path = "/api/metrics/daily", tag = "dashboard",
    params(Range),
    responses(
        (status = 200, description = "The days of the range", body = DailyMetrics),
        (status = 404, description = "No replay has succeeded yet, or the named run has no results", body = ErrorBody)))]
async fn daily(
    _: Viewer,
    State(s): State<AppState>,
    Query(range): Query<Range>,
) -> Result<Json<DailyMetrics>, ApiError> {
    let run = served(&s, range.run).await?;
    let stored = store::stored_days(&s.pool, run.id).await?;
    let daily = Daily::new(range.from, range.to, &stored)
        .map_err(|e| ApiError::bad_request("invalid_range", e.message).with("field", e.field))?;
    let days = daily
        .every_day()
        .map(|(date, day)| DayRow {
            conversion: conversion(&day),
            counts: day,
            day: date,
        })
        .collect();
    Ok(Json(DailyMetrics {
        run_id: run.id,
        start_offsets: run.start_offsets,
        end_offsets: run.end_offsets,
        from: daily.range.map(|r| r.0),
        to: daily.range.map(|r| r.1),
        days,
        totals: daily.totals(),
    }))
}

/// The day and ranking of a top-products answer.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// The day (UTC).
    day: NaiveDate,
    /// What to rank by.
    #[param(inline)]
    by: By,
    /// How many products, 1 to 20 (default 10).
    #[param(minimum = 1, maximum = 20)]
    limit: Option<i64>,
    /// A run's id; none: the current run.
    run: Option<i64>,
}

/// A product and its count.
#[derive(Serialize, ToSchema)]
pub struct Ranked {
    product_id: String,
    count: i64,
}

/// The top products of a day.
#[derive(Serialize, ToSchema)]
pub struct TopProducts {
    run_id: i64,
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    end_offsets: Option<Value>,
    day: NaiveDate,
    by: By,
    /// Best first (then by product id).
    items: Vec<Ranked>,
}

/// The top products of a day.
///
/// By views or by purchases, best first. Public unless
/// `auth.public_metrics` is false.
#[utoipa::path(get, path = "/api/products/top", tag = "dashboard",
    params(TopQuery),
    responses(
        (status = 200, description = "The ranking", body = TopProducts),
        (status = 404, description = "No replay has succeeded yet, or the named run has no results", body = ErrorBody)))]
async fn top_products(
    _: Viewer,
    State(s): State<AppState>,
    Query(q): Query<TopQuery>,
) -> Result<Json<TopProducts>, ApiError> {
    let limit = Limit::new(10, crate::aggregate::TOP).check(q.limit)? as i64;
    let run = served(&s, q.run).await?;
    let rows = store::top_products(&s.pool, run.id, q.day, q.by, limit).await?;
    let items = rows
        .into_iter()
        .map(|(product_id, count)| Ranked { product_id, count })
        .collect();
    Ok(Json(TopProducts {
        run_id: run.id,
        end_offsets: run.end_offsets,
        day: q.day,
        by: q.by,
        items,
    }))
}

/// What starts replays besides requests.
///
/// The schedule's next run, the thresholds, and what the last threshold
/// check found.
#[utoipa::path(get, path = "/api/triggers", tag = "dashboard",
    responses((status = 200, description = "The triggers' status", body = crate::triggers::TriggerStatus)))]
async fn trigger_status(State(s): State<AppState>) -> Json<crate::triggers::TriggerStatus> {
    Json(s.triggers.lock().expect("poisoned").clone())
}

/// The days of an audit or a dead-letter answer.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Days {
    /// The first day (UTC); none: no lower bound.
    from: Option<NaiveDate>,
    /// The last day (UTC); none: no upper bound.
    to: Option<NaiveDate>,
}

impl Days {
    fn checked(&self) -> Result<(), ApiError> {
        match (self.from, self.to) {
            (Some(from), Some(to)) if to < from => Err(ApiError::bad_request(
                "invalid_range",
                format!("`to` ({to}) must not be before `from` ({from})"),
            )
            .with("field", "to")),
            _ => Ok(()),
        }
    }
}

/// The Kappa audit.
///
/// Compares the streaming half (the recommendation consumer's per-day
/// counters) with the batch half (the current replay run's per-day
/// metrics) over the offsets both have processed: per partition up to the
/// smaller of the stream's committed position and the run's end offset;
/// the records between the two are read from the topic and taken out of
/// the half that is ahead, counted as the replay counts them. Per day and
/// measure both numbers and their difference, which must be 0. An audit
/// over every day (no `from`, `to`) sets the `kappa_dashboard_audit_drift`
/// gauges and the page's audit line.
#[utoipa::path(get, path = "/api/audit", tag = "dashboard",
    security(("bearer" = [])),
    params(Days),
    responses(
        (status = 200, description = "Both halves compared", body = AuditReport),
        (status = 404, description = "No full replay has succeeded yet", body = ErrorBody),
        (status = 409, description = "The streaming consumer has no committed position on the topic yet (`stream_not_started`)", body = ErrorBody)))]
async fn audit(
    _: Admin,
    State(s): State<AppState>,
    Query(days): Query<Days>,
) -> Result<Json<AuditReport>, ApiError> {
    days.checked()?;
    match s.auditor.audit(days.from, days.to).await {
        Ok(report) => Ok(Json(report)),
        Err(AuditError::NoRun) => Err(ApiError::not_found(
            "no full replay has succeeded yet; start one with POST /api/replays",
        )),
        Err(AuditError::StreamNotStarted { consumer, topic }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stream_not_started",
            format!(
                "the streaming consumer `{consumer}` has committed no position on `{topic}` yet"
            ),
        )),
        Err(AuditError::BadRange(message)) => {
            Err(ApiError::bad_request("invalid_range", message).with("field", "to"))
        }
        Err(AuditError::Failed(error)) => Err(ApiError::unavailable(
            "audit_unavailable",
            "the broker or the database did not answer the audit; retry",
        )
        .caused_by(format!("{error:#}"))),
    }
}

/// Dead letters of one day.
#[derive(Serialize, ToSchema)]
pub struct DlqDay {
    day: NaiveDate,
    total: u64,
    /// Per reason code (`dlq.code`; `other` for a code outside the
    /// catalogue of known codes, `unknown` for a record without one).
    by_code: BTreeMap<String, u64>,
}

/// Dead letters by reason over time.
#[derive(Serialize, ToSchema)]
pub struct DlqDaily {
    topic: String,
    /// Per partition, the offset counted up to.
    read_to: BTreeMap<String, i64>,
    /// Whether the read got to the topic's end (false: it ran out of time;
    /// the next look goes on from `read_to`).
    complete: bool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// Days with dead letters, oldest first.
    days: Vec<DlqDay>,
    /// Per reason code, over the days listed.
    totals: BTreeMap<String, u64>,
    total: u64,
}

/// The newest days with dead letters that one answer lists.
pub const DLQ_DAYS: usize = 366;

/// Dead letters by reason per day.
///
/// Records on the dead-letter topic per UTC day (when they were
/// dead-lettered) and reason code, days with dead letters only, oldest
/// first (at most the newest 366 within the range). Public unless
/// `auth.public_metrics` is false.
#[utoipa::path(get, path = "/api/dlq/daily", tag = "dashboard",
    params(Days),
    responses((status = 200, description = "Dead letters per day and reason", body = DlqDaily)))]
async fn dlq_daily(
    _: Viewer,
    State(s): State<AppState>,
    Query(days): Query<Days>,
) -> Result<Json<DlqDaily>, ApiError> {
    days.checked()?;
    let snapshot = s.dead_letters.snapshot().await.map_err(|e| {
        ApiError::unavailable("kafka_unavailable", "the broker did not answer")
            .caused_by(format!("{e:#}"))
    })?;
    let chosen = crate::dead_letters::select(&snapshot.days, days.from, days.to, DLQ_DAYS);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let list: Vec<DlqDay> = chosen
        .into_iter()
        .map(|(day, by_code)| {
            for (code, n) in &by_code {
                *totals.entry(code.clone()).or_default() += n;
            }
            DlqDay {
                day,
                total: by_code.values().sum(),
                by_code,
            }
        })
        .collect();
    Ok(Json(DlqDaily {
        topic: s.dead_letters.topic().to_owned(),
        read_to: snapshot
            .next
            .iter()
            .map(|(p, o)| (p.to_string(), *o))
            .collect(),
        complete: snapshot.complete,
        from: days.from,
        to: days.to,
        total: totals.values().sum(),
        days: list,
        totals,
    }))
}
