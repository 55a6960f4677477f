//! `GET /dlq`, `POST /dlq/redrive`: the dead-letter queue as a tool (the
//! work is in [`crate::dlq`]; here, the HTTP side).

use axum::extract::State;
use serde::Deserialize;
use shared::http::{Admin, ApiError, Json, Query};
use utoipa::IntoParams;

use crate::dlq::filter::{Filter, RedriveFilter};
use crate::dlq::list::{DeadLetterPage, ListRequest};
use crate::dlq::redrive::RedriveAnswer;
use crate::dlq::DlqError;
use crate::state::AppState;

impl From<DlqError> for ApiError {
    fn from(error: DlqError) -> Self {
        match error {
            DlqError::Invalid {
                code,
                field,
                message,
            } => ApiError::bad_request(code, message).with("field", field),
            DlqError::Limit(error) => ApiError::from(error),
            DlqError::Unreadable(cause) => ApiError::unavailable(
                "dlq_unavailable",
                "the dead-letter topic could not be read; retry shortly",
            )
            .caused_by(format!("{cause:#}")),
            DlqError::NotCommitted(cause) => ApiError::unavailable(
                "redrive_failed",
                "the redrive could not be committed (the broker is unavailable, or a redrive ran at the same time on another gateway); nothing was redriven: send the filter again",
            )
            .caused_by(cause),
            DlqError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

/// `GET /dlq` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only dead letters with this reason: their code, e.g. `invalid_json`
    /// (at most 256 bytes, no control characters; empty: any reason).
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    reason: Option<String>,
    /// The cursor: the `next` of the previous page, `partition:offset`
    /// pairs separated by commas (`0:41,2:7`), each partition once; a page
    /// holds what follows them. Partitions not named start at their
    /// earliest offset.
    #[param(pattern = r"^(?:\+?[0-9]{1,9}:\+?[0-9]{1,18}(?:,\+?[0-9]{1,9}:\+?[0-9]{1,18})*)?$")]
    after: Option<String>,
    /// Dead letters per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Lists the dead-letter queue, a page at a time, with counts by reason.
///
/// Reads the DLQ topic from its earliest offsets up to its end offsets at
/// the time of the request. Each dead letter comes with its reason and code,
/// its origin (topic, partition, offset, time), the first 256 bytes of its
/// payload and key (text if UTF-8, else base64), its `redrive-count` and
/// whether it was redriven from here. Records are ordered by partition,
/// then offset; pass `next` as `after` for the next page (or, later, for
/// what arrived since).
#[utoipa::path(get, path = "/dlq", tag = "gateway", operation_id = "list_dead_letters",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of dead letters and the counts by reason", body = DeadLetterPage),
        (status = 503, description = "The DLQ topic or the redrive log could not be read; retry", body = shared::http::openapi::ErrorBody)))]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<DeadLetterPage>, ApiError> {
    let request = ListRequest::check(
        query.reason.as_deref(),
        query.after.as_deref(),
        query.limit.as_deref(),
    )?;
    Ok(axum::Json(state.dlq.clone().list(request).await?))
}

/// Republishes the original records of the dead letters a filter matches.
///
/// Each matching dead letter's original record goes back to its origin topic:
/// the same payload and key (a `key_mismatch` is keyed by its entity: the
/// key was what was wrong), its own headers, its event time, plus
/// `redrive-count` (the record's count + 1) and where it was first read
/// (`redrive.origin.topic|partition|offset|timestamp`) and redriven from
/// (`redrive.dlq.topic|partition|offset`). Refused, and listed with the
/// reason: a dead letter whose record was redriven `dlq.max_redrives` times
/// already; one redriven from here before, unless `again` is set (then it
/// counts toward the maximum); one without an origin, or whose origin is not
/// the stream's topic. An empty filter is a 400. The copies and the redrive
/// log's records are one Kafka transaction: all are published, or none.
#[utoipa::path(post, path = "/dlq/redrive", tag = "gateway", operation_id = "redrive_dead_letters",
    security(("bearer" = [])),
    request_body = RedriveFilter,
    responses(
        (status = 200, description = "What was redriven and what was refused, and why", body = RedriveAnswer),
        (status = 503, description = "The DLQ could not be read or the transaction failed (broker down, or a redrive ran at the same time on another gateway): nothing was redriven; send the filter again", body = shared::http::openapi::ErrorBody)))]
pub async fn redrive(
    _: Admin,
    State(state): State<AppState>,
    Json(filter): Json<RedriveFilter>,
) -> Result<axum::Json<RedriveAnswer>, ApiError> {
    let filter = Filter::check(filter)?;
    let dlq = state.dlq.clone();
    dlq.ensure_log().await?;
    // On a task of its own: a client that hangs up does not cancel a
    // redrive halfway (an open transaction would wait for its timeout).
    let answer = tokio::spawn(async move { dlq.redrive(filter).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(axum::Json(answer))
}
