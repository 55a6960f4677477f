//! The gateway's routes; every one needs the bearer token.

mod body;
mod claims;
mod events;
mod products;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

/// `POST /events`, `POST /products`, `GET /claims/{token}` (all need the
/// token: `Admin`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/events", post(events::post_events))
        .route("/products", post(products::post_product))
        .route("/claims/{token}", get(claims::get_claim))
        .with_state(state)
}
