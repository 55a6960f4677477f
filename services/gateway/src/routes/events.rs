//! `POST /events`: validate all, then publish all, then answer per event.

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use shared::http::{Admin, ApiError};

use super::body::{is_single_json, parse_events};
use crate::publish::{Ack, PublishError};
use crate::state::AppState;

/// Bodies larger than this are parsed off the async workers.
const INLINE_PARSE_LIMIT: usize = 64 * 1024;

/// The 202 answer: where each event landed, in request order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    accepted: usize,
    events: Vec<Ack>,
}

/// Validates every event, then publishes them all: each lands keyed by its
/// entity, with an id (`id` as sent, or a new UUIDv7). A body with one bad
/// event is refused whole (400 naming the event and field); events over the
/// inline limit go to the claim-check store and travel as a token.
#[utoipa::path(post, path = "/events", tag = "gateway",
    security(("bearer" = [])),
    request_body(description = "One event (`application/json`), or one event per line (NDJSON: any other content type)",
        content((shared::event::Event = "application/json"), (String = "application/x-ndjson"))),
    responses(
        (status = 202, description = "Every event is on the topic", body = Accepted),
        (status = 503, description = "The broker did not acknowledge some events in time: `events` lists those that are on the topic, `failed` the ids to retry (with the same ids)", body = shared::http::openapi::ErrorBody)))]
pub async fn post_events(
    _: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = body?;
    let single = is_single_json(&headers);
    let events = if body.len() <= INLINE_PARSE_LIMIT {
        parse_events(&body, single, state.max_events)?
    } else {
        let max = state.max_events;
        tokio::task::spawn_blocking(move || parse_events(&body, single, max))
            .await
            .map_err(ApiError::internal)??
    };
    state.idle.note();
    let events = state
        .publisher
        .publish(events)
        .await
        .map_err(publish_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: events.len(),
            events,
        }),
    ))
}

/// The answer to a publish that failed (wholly or in part).
pub(super) fn publish_error(error: PublishError) -> ApiError {
    match error {
        PublishError::Broker {
            acknowledged,
            failed,
            reason,
        } => ApiError::unavailable(
            "broker_unavailable",
            format!(
                "Kafka did not acknowledge {} event(s) in time; retry them with the same ids",
                failed.len()
            ),
        )
        .caused_by(reason)
        .with("accepted", acknowledged.len())
        .with("events", acknowledged)
        .with("failed", failed),
        error @ PublishError::TooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            error.to_string(),
        ),
        PublishError::ClaimStore(error) => ApiError::unavailable(
            error.code(),
            "the claim-check store could not take a large event; nothing was produced",
        )
        .caused_by(error),
    }
}
