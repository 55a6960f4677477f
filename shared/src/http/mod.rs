//! HTTP scaffolding every service shares: the ops endpoints (`/healthz`,
//! `/readyz`, `/metrics`), bearer-token auth, one JSON error type, request
//! metrics, a JSON 404, and graceful serving.

pub mod auth;
pub mod error;
pub mod extract;
pub mod ops;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::Admin;
pub use error::ApiError;
pub use extract::{Json, Path, Query};
pub use ops::Readiness;

/// Adds the ops endpoints, the admin token (for the [`Admin`] extractor),
/// request ids and metrics, and JSON answers for unknown paths (404) and
/// methods (405).
pub fn finish(
    service: &'static str,
    routes: Router,
    readiness: Readiness,
    token: crate::config::Secret,
) -> Router {
    // Install the recorder now, so that what happens before the first
    // request (a failed commit, a dead letter) is counted too.
    ops::metrics_handle();
    routes
        .merge(ops::router(service, readiness))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::Extension(auth::AdminToken(token)))
        .layer(axum::middleware::from_fn(ops::track))
}

/// Serves `router` until `shutdown`; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
