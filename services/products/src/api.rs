//! The products API (token required, as every API of the suite):
//! `GET /products/{id}` (status, each part's state and reason, thumbnail URL,
//! video facts, normalised metadata), `GET /products?status=&limit=&after=`
//! (keyset pages by id), `GET /products/{id}/thumbnail` (the JPEG, `ETag` =
//! its sha256, `If-None-Match` answered 304), `GET /pending-joins` (products
//! the creator still buffers: parts seen and missing, age, deadline), and
//! `GET /products/stats` (counts by status, per-branch latency) for the
//! dashboard.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::claim_check::ClaimStore;
use shared::http::{Admin, ApiError, Path, Query};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub claims: ClaimStore,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/products", get(list))
        .route("/products/stats", get(stats))
        .route("/products/{id}", get(fetch))
        .route("/products/{id}/thumbnail", get(thumbnail))
        .route("/pending-joins", get(pending))
        .with_state(state)
}

const STATUSES: [&str; 4] = ["pending", "active", "rejected", "incomplete"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    status: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

#[derive(Serialize, sqlx::FromRow)]
struct Product {
    id: String,
    seller_id: Option<String>,
    status: String,
    reason: Option<String>,
    metadata: Value,
    normalized: Option<Value>,
    uploaded_at: DateTime<Utc>,
    deadline_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, sqlx::FromRow)]
struct Part {
    part: String,
    kind: String,
    state: String,
    reason: Option<String>,
    result: Option<Value>,
    arrived_at: Option<DateTime<Utc>>,
}

const PRODUCT_COLUMNS: &str =
    "id, seller_id, status, reason, metadata, normalized, uploaded_at, deadline_at, finished_at";

async fn fetch(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let product: Product = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
    ))
    .bind(&id)
    .fetch_optional(&s.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
    let parts: Vec<Part> = sqlx::query_as(
        "SELECT part, kind, state, reason, result, arrived_at FROM product_parts
         WHERE product_id = $1 ORDER BY part",
    )
    .bind(&id)
    .fetch_all(&s.pool)
    .await?;
    let thumbnail = parts
        .iter()
        .any(|p| p.kind == "image" && p.state == "processed")
        .then(|| format!("/products/{id}/thumbnail"));
    let video = parts
        .iter()
        .find(|p| p.kind == "video" && p.state == "processed")
        .and_then(|p| p.result.clone());
    let mut body = json!(product);
    body["parts"] = json!(parts);
    body["thumbnail_url"] = json!(thumbnail);
    body["video"] = json!(video);
    Ok(axum::Json(body).into_response())
}

async fn list(
    _: Admin,
    State(s): State<ApiState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(
            ApiError::bad_request("invalid_query", "limit must be 1 to 1000")
                .with("field", "limit"),
        );
    }
    if let Some(status) = page.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("status `{status}` is not one of {}", STATUSES.join(", ")),
        )
        .with("field", "status"));
    }
    let products: Vec<Product> = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(&page.status)
    .bind(&page.after)
    .bind(limit)
    .fetch_all(&s.pool)
    .await?;
    let next = (products.len() as i64 == limit).then(|| products.last().map(|p| p.id.clone()));
    Ok(axum::Json(json!({"products": products, "next_after": next.flatten()})).into_response())
}

async fn thumbnail(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let result: Option<Value> = sqlx::query_scalar(
        "SELECT result FROM product_parts
         WHERE product_id = $1 AND kind = 'image' AND state = 'processed' ORDER BY part LIMIT 1",
    )
    .bind(&id)
    .fetch_optional(&s.pool)
    .await?
    .flatten();
    let token = result
        .as_ref()
        .and_then(|r| r["thumbnail"]["token"].as_str())
        .and_then(|t| t.parse::<Uuid>().ok())
        .ok_or_else(|| ApiError::not_found(format!("no thumbnail for product {id}")))?;
    let sha = result
        .as_ref()
        .and_then(|r| r["thumbnail"]["sha256"].as_str())
        .unwrap_or_default();
    let etag = HeaderValue::from_str(&format!("\"{sha}\"")).map_err(ApiError::internal)?;
    let cache = [(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    )];
    if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)], cache).into_response());
    }
    let (bytes, content_type) = s.claims.fetch_typed(token).await.map_err(|e| match e {
        shared::claim_check::ClaimError::Database(e) => ApiError::from(e),
        e => ApiError::not_found(format!("the thumbnail of product {id} is gone: {e}")),
    })?;
    let content_type = HeaderValue::from_str(&content_type).map_err(ApiError::internal)?;
    Ok((
        StatusCode::OK,
        [(ETAG, etag), (CONTENT_TYPE, content_type)],
        cache,
        bytes,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingQuery {
    limit: Option<i64>,
}

/// A product the creator still waits for.
#[derive(Serialize, sqlx::FromRow)]
struct Join {
    product_id: String,
    seen: Vec<String>,
    missing: Vec<String>,
    age_seconds: f64,
    buffered_at: DateTime<Utc>,
    deadline_at: DateTime<Utc>,
}

async fn pending(
    _: Admin,
    State(s): State<ApiState>,
    Query(q): Query<PendingQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let joins: Vec<Join> = sqlx::query_as(
        "SELECT p.id AS product_id,
                coalesce(array_agg(pp.part ORDER BY pp.part) FILTER (WHERE pp.state <> 'waiting'), '{}') AS seen,
                coalesce(array_agg(pp.part ORDER BY pp.part) FILTER (WHERE pp.state = 'waiting'), '{}') AS missing,
                extract(epoch FROM now() - p.buffered_at)::float8 AS age_seconds, p.buffered_at, p.deadline_at
         FROM products p JOIN product_parts pp ON pp.product_id = p.id
         WHERE p.status = 'pending'
         GROUP BY p.id ORDER BY p.buffered_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&s.pool)
    .await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM products WHERE status = 'pending'")
        .fetch_one(&s.pool)
        .await?;
    Ok(axum::Json(json!({"pending": total, "joins": joins})).into_response())
}

/// Counts by status and, per branch, how long results took from the upload
/// (mean and p95 over the parts that arrived), slowest first.
async fn stats(_: Admin, State(s): State<ApiState>) -> Result<Response, ApiError> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM products GROUP BY status")
            .fetch_all(&s.pool)
            .await?;
    let branches: Vec<(String, i64, Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT pp.kind, count(*),
                avg(extract(epoch FROM pp.arrived_at - p.uploaded_at))::float8,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM pp.arrived_at - p.uploaded_at))::float8
         FROM product_parts pp JOIN products p ON p.id = pp.product_id
         WHERE pp.arrived_at IS NOT NULL GROUP BY pp.kind ORDER BY 3 DESC NULLS LAST",
    )
    .fetch_all(&s.pool)
    .await?;
    let mut by_status = json!({"pending": 0, "active": 0, "rejected": 0, "incomplete": 0});
    for (status, n) in counts {
        by_status[status] = json!(n);
    }
    let branches: Vec<Value> = branches
        .into_iter()
        .map(|(kind, parts, mean, p95)| json!({"kind": kind, "parts": parts, "mean_seconds": mean, "p95_seconds": p95}))
        .collect();
    Ok(axum::Json(json!({"by_status": by_status, "branches": branches})).into_response())
}
