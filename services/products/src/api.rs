//! The products API (token required, as every API of the suite):
//! `GET /products/{id}` (status, each part's state and reason, thumbnail URL,
//! video facts, normalised metadata), `GET /products?status=&limit=&after=`
//! (keyset pages by id), `GET /products/{id}/thumbnail` (the JPEG, `ETag` =
//! its sha256, `If-None-Match` answered 304), `GET /pending-joins` (products
//! the creator still buffers: parts seen and missing, age, deadline), and
//! `GET /products/stats` (counts by status, per-branch latency) for the
//! dashboard.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::claim_check::ClaimStore;
use shared::event::AssetKind;
use shared::http::{Admin, ApiError, Path, Query};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub claims: ClaimStore,
}

pub fn router(state: ApiState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(stats))
        .routes(routes!(fetch))
        .routes(routes!(thumbnail))
        .routes(routes!(pending))
        .with_state(state)
}

const STATUSES: [&str; 4] = ["pending", "active", "rejected", "incomplete"];

/// Where a product is (a schema only: stored as text, see [`STATUSES`]).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum ProductStatus {
    /// The creator buffers its parts.
    Pending,
    /// Every part passed.
    Active,
    /// A part failed (`reason` says which and why).
    Rejected,
    /// A part never came before the deadline.
    Incomplete,
}

/// Where a part is (a schema only: stored as text).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum PartState {
    /// Its branch has not answered yet.
    Waiting,
    /// Its branch accepted it (`result`).
    Processed,
    /// Its branch refused it (`reason`).
    Failed,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Page {
    /// Only products in this status.
    #[param(value_type = Option<ProductStatus>)]
    status: Option<String>,
    /// Products per page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The last id of the previous page (its `next_after`).
    #[param(schema_with = shared::event::openapi::text)]
    after: Option<String>,
}

/// A product as the creator decided it.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
struct Product {
    id: String,
    seller_id: Option<String>,
    #[schema(value_type = ProductStatus)]
    status: String,
    /// Why it is rejected or incomplete.
    reason: Option<String>,
    /// The metadata as uploaded (free-form JSON, ids taken out).
    metadata: Value,
    /// The metadata as the metadata branch normalised it (`title`,
    /// `description`, `price_minor`, `currency`, `categories`).
    normalized: Option<Value>,
    uploaded_at: DateTime<Utc>,
    /// Until when the creator waits for every part.
    deadline_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// One part of a product and what its branch made of it.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
struct Part {
    /// `metadata`, `image-1`, `image-2`, ..., `video`.
    part: String,
    #[schema(value_type = AssetKind)]
    kind: String,
    #[schema(value_type = PartState)]
    state: String,
    /// Why the branch refused it.
    reason: Option<String>,
    /// The branch's result (free-form JSON by kind: an image's `width`,
    /// `height`, `format` and `thumbnail`; a video's `container`,
    /// `duration_ms`, `width`, `height`, `codec`; the normalised metadata).
    result: Option<Value>,
    arrived_at: Option<DateTime<Utc>>,
}

/// A product with its parts.
#[derive(Serialize, ToSchema)]
struct ProductDetail {
    #[serde(flatten)]
    product: Product,
    /// By part name.
    parts: Vec<Part>,
    /// The first processed image's thumbnail, once there is one.
    thumbnail_url: Option<String>,
    /// The video part's result, once processed.
    video: Option<Value>,
}

/// A page of products, by id.
#[derive(Serialize, ToSchema)]
struct Products {
    products: Vec<Product>,
    /// The `after` of the next page; null on the last one.
    next_after: Option<String>,
}

/// An id or cursor PostgreSQL text can hold (no NUL): anything else names
/// no product.
fn storable(value: &str) -> bool {
    !value.contains('\0')
}

const PRODUCT_COLUMNS: &str =
    "id, seller_id, status, reason, metadata, normalized, uploaded_at, deadline_at, finished_at";

/// A product with its parts.
///
/// Its status, each part's state and reason, the thumbnail's URL once an
/// image is processed, the video's facts and the normalised metadata.
#[utoipa::path(get, path = "/products/{id}", tag = "products", operation_id = "get_product",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The product's id")),
    responses((status = 200, description = "The product", body = ProductDetail)))]
async fn fetch(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ProductDetail>, ApiError> {
    let product: Option<Product> = match storable(&id) {
        false => None,
        true => {
            sqlx::query_as(&format!(
                "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
            ))
            .bind(&id)
            .fetch_optional(&s.pool)
            .await?
        }
    };
    let product = product.ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
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
    Ok(Json(ProductDetail {
        product,
        parts,
        thumbnail_url: thumbnail,
        video,
    }))
}

/// Products by id, a page at a time.
///
/// Keyset pages: pass the answer's `next_after` as `after` for the next
/// page; optionally only the products in one status.
#[utoipa::path(get, path = "/products", tag = "products", operation_id = "list_products",
    security(("bearer" = [])),
    params(Page),
    responses((status = 200, description = "A page of products", body = Products)))]
async fn list(
    _: Admin,
    State(s): State<ApiState>,
    Query(page): Query<Page>,
) -> Result<Json<Products>, ApiError> {
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
    if page.after.as_deref().is_some_and(|a| !storable(a)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "after must be an id, as next_after gives it",
        )
        .with("field", "after"));
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
    Ok(Json(Products {
        products,
        next_after: next.flatten(),
    }))
}

/// A product's thumbnail.
///
/// The JPEG of its first processed image (within the configured size),
/// with its sha256 as `ETag`: `If-None-Match` with it is answered 304.
#[utoipa::path(get, path = "/products/{id}/thumbnail", tag = "products", operation_id = "get_thumbnail",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The product's id"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a copy held: 304 if it is still the thumbnail")),
    responses(
        (status = 200, description = "The thumbnail", content_type = "image/jpeg", body = shared::http::openapi::Binary, headers(
            ("ETag" = String, description = "The thumbnail's sha256, quoted"),
            ("Cache-Control" = String, description = "`private, max-age=86400, immutable`"))),
        (status = 304, description = "The copy held (`If-None-Match`) is the thumbnail", headers(
            ("ETag" = String, description = "The thumbnail's sha256, quoted"),
            ("Cache-Control" = String, description = "`private, max-age=86400, immutable`")))))]
async fn thumbnail(
    _: Admin,
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let result: Option<Value> = match storable(&id) {
        false => None,
        true => sqlx::query_scalar(
            "SELECT result FROM product_parts
             WHERE product_id = $1 AND kind = 'image' AND state = 'processed' ORDER BY part LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&s.pool)
        .await?
        .flatten(),
    };
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PendingQuery {
    /// How many joins, oldest first (default 100; clamped to 1 to 1000).
    limit: Option<i64>,
}

/// A product the creator still waits for.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
struct Join {
    product_id: String,
    seen: Vec<String>,
    missing: Vec<String>,
    age_seconds: f64,
    buffered_at: DateTime<Utc>,
    deadline_at: DateTime<Utc>,
}

/// The creator's pending joins.
#[derive(Serialize, ToSchema)]
struct Pending {
    /// Every pending product (`joins` lists the oldest `limit`).
    pending: i64,
    joins: Vec<Join>,
}

/// Products the creator still buffers.
///
/// Per pending product, oldest first: the parts seen and still missing,
/// its age and its deadline.
#[utoipa::path(get, path = "/pending-joins", tag = "products", operation_id = "pending_joins",
    security(("bearer" = [])),
    params(PendingQuery),
    responses((status = 200, description = "The pending joins", body = Pending)))]
async fn pending(
    _: Admin,
    State(s): State<ApiState>,
    Query(q): Query<PendingQuery>,
) -> Result<Json<Pending>, ApiError> {
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
    Ok(Json(Pending {
        pending: total,
        joins,
    }))
}

/// Counts by status, and how long each branch takes.
#[derive(Serialize, ToSchema)]
struct Stats {
    /// Every status, with 0 for none.
    by_status: ByStatus,
    /// Slowest first (by mean).
    branches: Vec<BranchLatency>,
}

/// Products per status.
#[derive(Serialize, ToSchema)]
struct ByStatus {
    pending: i64,
    active: i64,
    rejected: i64,
    incomplete: i64,
}

/// How long a branch's results took from the upload, over the parts that
/// arrived.
#[derive(Serialize, ToSchema)]
struct BranchLatency {
    #[schema(value_type = AssetKind)]
    kind: String,
    /// Parts that arrived.
    parts: i64,
    mean_seconds: Option<f64>,
    p95_seconds: Option<f64>,
}

/// Counts by status and branch latencies (for the dashboard).
///
/// Counts by status and, per branch, how long results took from the upload
/// (mean and p95 over the parts that arrived), slowest first.
#[utoipa::path(get, path = "/products/stats", tag = "products", operation_id = "product_stats",
    security(("bearer" = [])),
    responses((status = 200, description = "Counts and latencies", body = Stats)))]
async fn stats(_: Admin, State(s): State<ApiState>) -> Result<Json<Stats>, ApiError> {
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
    let counts: BTreeMap<String, i64> = counts.into_iter().collect();
    let count = |status: &str| counts.get(status).copied().unwrap_or(0);
    let by_status = ByStatus {
        pending: count("pending"),
        active: count("active"),
        rejected: count("rejected"),
        incomplete: count("incomplete"),
    };
    let branches = branches
        .into_iter()
        .map(|(kind, parts, mean, p95)| BranchLatency {
            kind,
            parts,
            mean_seconds: mean,
            p95_seconds: p95,
        })
        .collect();
    Ok(Json(Stats {
        by_status,
        branches,
    }))
}
