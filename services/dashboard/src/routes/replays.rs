//! `POST /api/replays` (token), `GET /api/replays`, `GET /api/replays/{id}`:
//! queueing a replay, and the runs with their live progress.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::http::{self, Admin, ApiError, Path};
use shared::replay::ProgressView;
use utoipa::ToSchema;

use crate::state::AppState;
use crate::store::{self, Run, RunState, Trigger};

/// A replay request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// "earliest" or an RFC 3339 time (not before 1970).
    #[schema(schema_with = shared::event::openapi::earliest_or_time)]
    from: String,
    /// An RFC 3339 time; none: up to the end offsets at the start.
    #[schema(schema_with = shared::event::openapi::time_or_null)]
    to: Option<String>,
}

/// The 202 answer to a replay request.
#[derive(Serialize, ToSchema)]
pub struct Queued {
    id: i64,
    /// Always `queued`.
    state: RunState,
    /// A full replay (from `earliest`, no `to`): it becomes current when it succeeds.
    full: bool,
}

/// Queue a replay.
///
/// Only a full one (from "earliest", no `to`) becomes current when it
/// succeeds; a custom range is stored under its id. A bad time, or a `to`
/// not after `from`, is 400 `invalid_range` naming the field.
#[utoipa::path(post, path = "/api/replays", tag = "dashboard",
    security(("bearer" = [])),
    request_body = ReplayRequest,
    responses((status = 202, description = "The run is queued", body = Queued)))]
pub(super) async fn start_replay(
    _: Admin,
    State(s): State<AppState>,
    http::Json(request): http::Json<ReplayRequest>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    // The rules every replay-like request shares (pagecount's jobs too).
    let http::extract::TimeRange { from, to } =
        http::extract::TimeRange::parse(&request.from, request.to.as_deref())?;
    let id = store::enqueue(&s.pool, Trigger::Manual, from, to).await?;
    s.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            id,
            state: RunState::Queued,
            full: from.is_none() && to.is_none(),
        }),
    ))
}

/// How far a run got: a running run's live numbers, or just the fraction.
#[derive(Serialize, ToSchema)]
pub struct RunProgress {
    /// Records read so far (a run in progress on this instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    read: Option<u64>,
    /// Records in the run's range (a run in progress on this instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    /// 0..1, never stepping back; 1 for a succeeded run.
    fraction: f64,
    /// Records per second so far (a run in progress on this instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    per_second: Option<f64>,
    /// Seconds left at the current pace; null while unknown (a run in progress on this instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    eta_seconds: Option<Option<f64>>,
}

impl RunProgress {
    fn fraction(fraction: f64) -> Self {
        RunProgress {
            read: None,
            total: None,
            fraction,
            per_second: None,
            eta_seconds: None,
        }
    }
}

impl From<ProgressView> for RunProgress {
    fn from(view: ProgressView) -> Self {
        RunProgress {
            read: Some(view.read),
            total: Some(view.total),
            fraction: view.fraction,
            per_second: Some(view.per_second),
            eta_seconds: Some(view.eta_seconds),
        }
    }
}

/// A run with its progress, and whether it is the run served by default.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    run: Run,
    progress: RunProgress,
    /// Its results cover the whole topic (a full replay, or an incremental
    /// run continuing one); `kind` says which.
    full: bool,
    /// The run the metrics answer with by default.
    current: bool,
}

/// The newest runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunList {
    runs: Vec<RunView>,
}

/// The progress of the runs in hand. Read *before* the runs themselves: the
/// runner stores a run's success before it drops its progress, so a run that
/// finishes in between reads as succeeded (1.0), never as a running run
/// without progress (0.0, which made the fraction step back).
fn live(s: &AppState) -> HashMap<i64, ProgressView> {
    let registry = s.registry.lock().expect("poisoned");
    registry.iter().map(|(id, p)| (*id, p.view())).collect()
}

fn describe(run: Run, current: Option<i64>, live: &HashMap<i64, ProgressView>) -> RunView {
    let progress = match (run.state, live.get(&run.id)) {
        (RunState::Succeeded, _) => RunProgress::fraction(1.0),
        (_, Some(view)) => RunProgress::from(*view),
        (_, None) => RunProgress::fraction(0.0),
    };
    RunView {
        full: run.covers_topic(),
        current: current == Some(run.id),
        progress,
        run,
    }
}

/// The newest replay runs.
///
/// The 50 newest runs, newest first, with their state, range (start and end
/// offsets), counts, error, live progress, and which one is current.
#[utoipa::path(get, path = "/api/replays", tag = "dashboard",
    responses((status = 200, description = "The runs, newest first", body = RunList)))]
pub(super) async fn list_replays(State(s): State<AppState>) -> Result<Json<RunList>, ApiError> {
    let live = live(&s);
    let list = store::list(&s.pool, 50).await?;
    let current = store::current_id(&s.pool).await?;
    Ok(Json(RunList {
        runs: list
            .into_iter()
            .map(|r| describe(r, current, &live))
            .collect(),
    }))
}

/// One replay run.
///
/// Its state, range, counts, error, and live progress while it runs.
#[utoipa::path(get, path = "/api/replays/{id}", tag = "dashboard",
    params(("id" = i64, Path, description = "The run's id")),
    responses((status = 200, description = "The run", body = RunView)))]
pub(super) async fn get_replay(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<RunView>, ApiError> {
    let live = live(&s);
    let run = store::get(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no replay run {id}")))?;
    let current = store::current_id(&s.pool).await?;
    Ok(Json(describe(run, current, &live)))
}
