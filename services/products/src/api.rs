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
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::claim_check::ClaimStore;
use shared::event::AssetKind;
use shared::http::{Admin, ApiError, Limit, Path, Query};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{self, BranchLatency, Join, Part, Product, ProductStatus};

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
    let (product, parts) = store::product(&s.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
    let thumbnail = parts
        .iter()
        .any(|p| p.processed(AssetKind::Image))
        .then(|| format!("/products/{id}/thumbnail"));
    let video = parts
        .iter()
        .find(|p| p.processed(AssetKind::Video))
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
    let limit = Limit::new(50, 1000).check(page.limit)? as i64;
    if page.after.as_deref().is_some_and(|a| !store::storable(a)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "after must be an id, as next_after gives it",
        )
        .with("field", "after"));
    }
    let status = page
        .status
        .as_deref()
        .map(|text| {
            text.parse::<ProductStatus>().map_err(|_| {
                let statuses: Vec<&str> = ProductStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad_request(
                    "invalid_query",
                    format!("status `{text}` is not one of {}", statuses.join(", ")),
                )
                .with("field", "status")
            })
        })
        .transpose()?;
    let products = store::list(&s.pool, status, page.after.as_deref(), limit).await?;
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
    let thumbnail = store::thumbnail(&s.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no thumbnail for product {id}")))?;
    let etag =
        HeaderValue::from_str(&format!("\"{}\"", thumbnail.sha256)).map_err(ApiError::internal)?;
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
    let (bytes, content_type) =
        s.claims
            .fetch_typed(thumbnail.token)
            .await
            .map_err(|e| match e {
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
    /// How many joins, oldest first, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
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
    let limit = Limit::new(100, 1000).check(q.limit)? as i64;
    let (joins, total) = store::pending_joins(&s.pool, limit).await?;
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

/// Counts by status and branch latencies (for the dashboard).
///
/// Counts by status and, per branch, how long results took from the upload
/// (mean and p95 over the parts that arrived), slowest first.
#[utoipa::path(get, path = "/products/stats", tag = "products", operation_id = "product_stats",
    security(("bearer" = [])),
    responses((status = 200, description = "Counts and latencies", body = Stats)))]
async fn stats(_: Admin, State(s): State<ApiState>) -> Result<Json<Stats>, ApiError> {
    let (counts, branches) = store::stats(&s.pool).await?;
    let count = |status| counts.get(&status).copied().unwrap_or(0);
    let by_status = ByStatus {
        pending: count(ProductStatus::Pending),
        active: count(ProductStatus::Active),
        rejected: count(ProductStatus::Rejected),
        incomplete: count(ProductStatus::Incomplete),
    };
    Ok(Json(Stats {
        by_status,
        branches,
    }))
}
