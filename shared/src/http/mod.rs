//! HTTP scaffolding every service shares: the ops endpoints (`/healthz`,
//! `/readyz`, `/metrics`), the API description (`/openapi.json`), bearer-token
//! auth, one JSON error type, request metrics, a JSON 404, request limits
//! (`limits`), and graceful serving.

pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod openapi;
pub mod ops;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

pub use auth::{Admin, Viewer};
pub use error::ApiError;
pub use extract::{Json, Limit, LimitError, Path, Query};
pub use limits::HttpLimits;
pub use ops::Readiness;

/// Adds the ops endpoints, `/openapi.json` (the routes' description, see
/// [`openapi`]), the admin token (for the [`Admin`] extractor), request ids
/// and metrics, and JSON answers for unknown paths (404) and methods (405).
pub fn finish(
    service: &'static str,
    routes: OpenApiRouter,
    readiness: Readiness,
    auth: &crate::config::AuthConfig,
) -> Router {
    // Install the recorder now, so that what happens before the first
    // request (a failed commit, a dead letter) is counted too.
    ops::metrics_handle();
    let (routes, mut api) = routes
        .merge(ops::router(service, readiness))
        .split_for_parts();
    openapi::complete(&mut api, service);
    let api =
        axum::body::Bytes::from(serde_json::to_vec(&api).expect("an OpenAPI document serializes"));
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || std::future::ready((json, api.clone()))),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::Extension(auth::AdminToken(auth.admin_token.clone())))
        .layer(axum::Extension(auth::MetricsAccess {
            public: auth.public_metrics,
        }))
        .layer(axum::middleware::from_fn(limits::guard))
        .layer(axum::middleware::from_fn(ops::track))
}

/// Binds a service's listen address (port 0 picks a free one), naming the
/// address when it is taken.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Serves `router` until `shutdown`; in-flight requests finish first.
/// HTTP/1.1 with a header read timeout (`[http] header_timeout_ms`): a
/// client that trickles its request line and headers is disconnected
/// instead of holding the connection (hyper answers nothing then; the body
/// deadline, once headers are in, answers 408).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HttpLimits::get().header_timeout());
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, for one: back off, keep serving.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    tower::Service::call(&mut router, request.map(Body::new))
                        .await
                        .unwrap_or_else(|never| match never {}),
                )
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
