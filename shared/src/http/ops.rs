//! `/healthz` (the process answers), `/readyz` (its dependencies answer) and
//! `/metrics` (Prometheus text), plus per-route request metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalogue;
use crate::config::KafkaConfig;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependency checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    /// Adds a named check.
    pub fn check<F>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.checks.push((name, Arc::new(check)));
        self
    }

    /// Ready when Postgres answers a query.
    pub fn postgres(self, pool: PgPool) -> Self {
        self.check("postgres", move || {
            let pool = pool.clone();
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
    }

    /// Ready when the broker returns `topic`'s metadata.
    pub fn kafka(self, cfg: &KafkaConfig, topic: String) -> anyhow::Result<Self> {
        // One client for all probes: a new one per probe would cost threads and connections.
        let client: Arc<BaseConsumer> = Arc::new(crate::kafka::client_config(cfg).create()?);
        Ok(self.check("kafka", move || {
            let client = client.clone();
            let topic = topic.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    let metadata = client
                        .fetch_metadata(Some(&topic), Duration::from_secs(2))
                        .map_err(|e| e.to_string())?;
                    match metadata.topics().first().and_then(|t| t.error()) {
                        Some(err) => Err(format!("topic {topic}: {err:?}")),
                        None => Ok(()),
                    }
                })
                .await
                .map_err(|e| e.to_string())?
            })
        }))
    }
}

impl Readiness {
    /// Ready while the producer reports deliveries (see
    /// [`crate::kafka_batch::BatchProducer::stalled`]).
    pub fn producer(self, producer: Arc<crate::kafka_batch::BatchProducer>) -> Self {
        self.check("producer", move || {
            let stalled = producer.stalled();
            Box::pin(async move {
                match stalled {
                    false => Ok(()),
                    true => Err("the producer reports no deliveries (its polling thread is gone): restart the service".to_owned()),
                }
            })
        })
    }

    /// Ready while the worker is not stuck (see [`crate::worker::Health`]).
    pub fn worker(self, health: std::sync::Arc<crate::worker::Health>) -> Self {
        self.check("worker", move || {
            let health = health.clone();
            Box::pin(async move { health.check() })
        })
    }
}

/// The ops routes.
pub fn router(service: &'static str, readiness: Readiness) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .with_state(service)
        .merge(
            OpenApiRouter::new()
                .routes(routes!(readyz))
                .with_state(readiness),
        )
        .routes(routes!(render_metrics))
}

/// What `/healthz` and `/readyz` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Status {
    /// `ok` (healthz), `ready` or `not_ready` (readyz).
    status: String,
    /// The service's name (healthz).
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'static str>,
    /// Each dependency check: `ok` or why it failed (readyz).
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<std::collections::BTreeMap<String, String>>,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process answers", body = Status)))]
async fn healthz(State(service): State<&'static str>) -> Json<Status> {
    Json(Status {
        status: "ok".into(),
        service: Some(service),
        checks: None,
    })
}

/// Every dependency answers (each check has 3 s).
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Every dependency answers", body = Status),
    (status = 503, description = "A dependency does not answer: `checks` says which and why", body = Status)))]
async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, Json<Status>) {
    let results =
        futures::future::join_all(readiness.checks.iter().map(|(name, check)| async move {
            let outcome = tokio::time::timeout(Duration::from_secs(3), check())
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            (*name, outcome)
        }))
        .await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let checks = results
        .into_iter()
        .map(|(name, r)| (name.to_owned(), r.err().unwrap_or_else(|| "ok".into())))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Status {
        status: if ready { "ready" } else { "not_ready" }.into(),
        service: None,
        checks: Some(checks),
    };
    (status, Json(body))
}

/// The process-wide Prometheus recorder ([`catalogue::handle`]).
pub use catalogue::handle as metrics_handle;

/// Prometheus text: every metric of the catalogue (README, "Metrics").
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
async fn render_metrics() -> impl IntoResponse {
    let handle = metrics_handle();
    handle.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        handle.render(),
    )
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served (for error bodies), if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Middleware: gives every request an id (`x-request-id`, the client's if it
/// sent a sane one), counts requests and times them per route, method and
/// status: labels from fixed sets, whatever the client sends.
pub async fn track(request: Request, next: Next) -> Response {
    metrics_handle();
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let route = route_label(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    // `StatusCode` holds 100..=999 only, and the server chooses it: bounded.
    let labels = [
        ("route", route),
        ("method", method_label(&method).to_owned()),
        ("status", response.status().as_u16().to_string()),
    ];
    let elapsed = started.elapsed();
    // The access log: probes and scrapes at debug, everything else at info.
    // It keeps the method as sent: a line is written once, where a label
    // value would be a series kept for good.
    let method = method.as_str();
    let status = response.status().as_u16();
    let latency_ms = elapsed.as_secs_f64() * 1e3;
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(target: "access", method, path, status, latency_ms, request_id = id, "request");
    } else {
        tracing::info!(target: "access", method, path, status, latency_ms, request_id = id, "request");
    }
    metrics::counter!("kappa_http_requests_total", &labels).increment(1);
    metrics::histogram!("kappa_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    response
}

/// The `route` label: the template of the route that matched (one of the
/// router's, never the path as sent), or `unmatched`.
fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

/// The `method` label: a standard method, or `other`. The method is the
/// client's to choose (any token, thousands of bytes long), and every
/// distinct label value is a series `/metrics` keeps for good.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_label_is_standard_or_other() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let long = Method::from_bytes("X".repeat(3_000).as_bytes()).unwrap();
        assert_eq!(method_label(&long), "other");
        // Methods are case-sensitive: `get` is not `GET`.
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "other");
    }
}
