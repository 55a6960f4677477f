//! `GET /claims/{token}`: the exact bytes of a claim-checked payload.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::claim_check::ClaimError;
use shared::http::ApiError;
use uuid::Uuid;

use crate::AppState;

pub async fn get_claim(
    State(state): State<AppState>,
    token: Result<Path<Uuid>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(token) = token?;
    match state.claims.fetch_typed(token).await {
        Ok((bytes, content_type)) => Ok(([(CONTENT_TYPE, content_type)], bytes).into_response()),
        Err(error @ ClaimError::NotFound(_)) => Err(ApiError::not_found(error.to_string())),
        // Integrity failure: say so plainly; never serve the bytes.
        Err(error @ ClaimError::Corrupt { .. }) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error.code(),
            error.to_string(),
        )),
        Err(error) => Err(ApiError::unavailable(
            error.code(),
            "the claim-check store is unavailable",
        )),
    }
}
