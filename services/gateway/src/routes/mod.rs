//! The gateway's routes; every one needs the bearer token.

mod body;
mod claims;
mod events;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

/// `POST /events`, `GET /claims/{token}` (both need the token: `Admin`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/events", post(events::post_events))
        .route("/claims/{token}", get(claims::get_claim))
        .with_state(state)
}
