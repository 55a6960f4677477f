//! `GET /claims/{token}`: the exact bytes of a claim-checked payload.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use shared::http::{Admin, ApiError, Path};
use uuid::Uuid;

use crate::state::AppState;

/// The exact bytes of a claim-checked payload, with the content type they
/// were stored with. A missing payload is 404; one that fails its integrity
/// check is 500 and its bytes are never served.
#[utoipa::path(get, path = "/claims/{token}", tag = "gateway",
    security(("bearer" = [])),
    params(("token" = Uuid, Path, description = "The claim-check token")),
    responses((status = 200, description = "The payload's bytes", content_type = "application/octet-stream", body = shared::http::openapi::Binary)))]
pub async fn get_claim(
    _: Admin,
    State(state): State<AppState>,
    Path(token): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (bytes, content_type) = state.claims.fetch_typed(token).await?;
    Ok(([(CONTENT_TYPE, content_type)], bytes).into_response())
}
