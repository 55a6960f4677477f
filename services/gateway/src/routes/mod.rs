//! The gateway's routes; every one needs the bearer token.

mod body;
mod claims;
mod events;

use axum::routing::{get, post};
use axum::Router;
use shared::config::Secret;
use shared::http::auth::require_token;

use crate::AppState;

/// `POST /events`, `GET /claims/{token}`.
pub fn router(state: AppState, token: Secret) -> Router {
    Router::new()
        .route("/events", post(events::post_events))
        .route("/claims/{token}", get(claims::get_claim))
        .route_layer(axum::middleware::from_fn_with_state(token, require_token))
        .with_state(state)
}
