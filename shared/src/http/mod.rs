//! HTTP scaffolding every service shares: the ops endpoints (`/healthz`,
//! `/readyz`, `/metrics`), bearer-token auth, one JSON error type, request
//! metrics, a JSON 404, and graceful serving.

pub mod auth;
pub mod error;
pub mod ops;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use ops::Readiness;

/// Adds the ops endpoints, request metrics and the JSON 404 to a service's routes.
pub fn finish(service: &'static str, routes: Router, readiness: Readiness) -> Router {
    // Install the recorder now, so that what happens before the first
    // request (a failed commit, a dead letter) is counted too.
    ops::metrics_handle();
    routes
        .merge(ops::router(service, readiness))
        .fallback(|| async { ApiError::not_found("no such route") })
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
