//! The gateway's routes; every one needs the bearer token.

mod body;
mod claims;
pub(crate) mod dlq;
mod events;
mod products;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// `POST /events`, `POST /products`, `GET /claims/{token}`, `GET /dlq`,
/// `POST /dlq/redrive` (all need the token: `Admin`).
pub fn router(state: AppState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(events::post_events))
        .routes(routes!(products::post_product))
        .routes(routes!(claims::get_claim))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::redrive))
        .with_state(state)
}
