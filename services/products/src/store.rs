//! What the products API reads, in one place: a product and its parts, pages
//! of products, the first thumbnail, the creator's pending joins and the
//! counts behind the dashboard. The states are the enums the tables' CHECKs
//! list ([`ProductStatus`], [`PartState`]); the creator writes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::event::AssetKind;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::image::{ImageResult, Thumbnail};

shared::text_enum! {
    /// Where a product is (`products.status`).
    ProductStatus {
        /// The creator buffers its parts.
        Pending = "pending",
        /// Every part passed.
        Active = "active",
        /// A part failed (`reason` says which and why).
        Rejected = "rejected",
        /// A part never came before the deadline.
        Incomplete = "incomplete",
    }
}

shared::text_enum! {
    /// Where a part is (`product_parts.state`).
    PartState {
        /// Its branch has not answered yet.
        Waiting = "waiting",
        /// Its branch accepted it (`result`).
        Processed = "processed",
        /// Its branch refused it (`reason`).
        Failed = "failed",
    }
}

/// A product as the creator decided it.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
pub struct Product {
    pub id: String,
    pub seller_id: Option<String>,
    pub status: ProductStatus,
    /// Why it is rejected or incomplete.
    pub reason: Option<String>,
    /// The metadata as uploaded (free-form JSON, ids taken out).
    pub metadata: Value,
    /// The metadata as the metadata branch normalised it (`title`,
    /// `description`, `price_minor`, `currency`, `categories`).
    pub normalized: Option<Value>,
    pub uploaded_at: DateTime<Utc>,
    /// Until when the creator waits for every part.
    pub deadline_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One part of a product and what its branch made of it.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
pub struct Part {
    /// `metadata`, `image-1`, `image-2`, ..., `video`.
    pub part: String,
    #[sqlx(try_from = "String")]
    pub kind: AssetKind,
    pub state: PartState,
    /// Why the branch refused it.
    pub reason: Option<String>,
    /// The branch's result (by kind: an image's `width`, `height`,
    /// `format` and `thumbnail`; a video's `container`, `duration_ms`,
    /// `width`, `height`, `codec`; the normalised metadata).
    pub result: Option<Value>,
    pub arrived_at: Option<DateTime<Utc>>,
}

impl Part {
    /// Processed, of `kind`.
    pub fn processed(&self, kind: AssetKind) -> bool {
        self.kind == kind && self.state == PartState::Processed
    }
}

/// A product the creator still waits for.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
pub struct Join {
    pub product_id: String,
    pub seen: Vec<String>,
    pub missing: Vec<String>,
    pub age_seconds: f64,
    pub buffered_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
}

/// How long a branch's results took from the upload, over the parts that
/// arrived.
#[derive(Serialize, sqlx::FromRow, ToSchema)]
pub struct BranchLatency {
    #[sqlx(try_from = "String")]
    pub kind: AssetKind,
    /// Parts that arrived.
    pub parts: i64,
    pub mean_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
}

const PRODUCT_COLUMNS: &str =
    "id, seller_id, status, reason, metadata, normalized, uploaded_at, deadline_at, finished_at";

/// An id or cursor PostgreSQL text can hold (no NUL): anything else names
/// no product.
pub fn storable(value: &str) -> bool {
    !value.contains('\0')
}

/// The product `id`, with its parts by name.
pub async fn product(pool: &PgPool, id: &str) -> sqlx::Result<Option<(Product, Vec<Part>)>> {
    if !storable(id) {
        return Ok(None);
    }
    let product: Option<Product> = sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(product) = product else {
        return Ok(None);
    };
    let parts = sqlx::query_as(
        "SELECT part, kind, state, reason, result, arrived_at FROM product_parts
         WHERE product_id = $1 ORDER BY part",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((product, parts)))
}

/// Up to `limit` products after the id `after`, by id; only those in
/// `status` if given.
pub async fn list(
    pool: &PgPool,
    status: Option<ProductStatus>,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Product>> {
    sqlx::query_as(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The thumbnail of product `id`'s first processed image, if it has one.
pub async fn thumbnail(pool: &PgPool, id: &str) -> sqlx::Result<Option<Thumbnail>> {
    if !storable(id) {
        return Ok(None);
    }
    let result: Option<sqlx::types::Json<ImageResult>> = sqlx::query_scalar(
        "SELECT result FROM product_parts
         WHERE product_id = $1 AND kind = 'image' AND state = $2 AND result IS NOT NULL
         ORDER BY part LIMIT 1",
    )
    .bind(id)
    .bind(PartState::Processed)
    .fetch_optional(pool)
    .await?;
    Ok(result.map(|result| result.0.thumbnail))
}

/// The `limit` oldest pending joins, and how many are pending in all.
pub async fn pending_joins(pool: &PgPool, limit: i64) -> sqlx::Result<(Vec<Join>, i64)> {
    let joins = sqlx::query_as(
        "SELECT p.id AS product_id,
                coalesce(array_agg(pp.part ORDER BY pp.part) FILTER (WHERE pp.state <> 'waiting'), '{}') AS seen,
                coalesce(array_agg(pp.part ORDER BY pp.part) FILTER (WHERE pp.state = 'waiting'), '{}') AS missing,
                extract(epoch FROM now() - p.buffered_at)::float8 AS age_seconds, p.buffered_at, p.deadline_at
         FROM products p JOIN product_parts pp ON pp.product_id = p.id
         WHERE p.status = 'pending'
         GROUP BY p.id ORDER BY p.buffered_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM products WHERE status = 'pending'")
        .fetch_one(pool)
        .await?;
    Ok((joins, total))
}

/// Products per status (every status, 0 for none), and the branches'
/// latencies, slowest first by mean.
pub async fn stats(
    pool: &PgPool,
) -> sqlx::Result<(BTreeMap<ProductStatus, i64>, Vec<BranchLatency>)> {
    let counted: Vec<(ProductStatus, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM products GROUP BY status")
            .fetch_all(pool)
            .await?;
    let mut counts: BTreeMap<ProductStatus, i64> = ProductStatus::ALL
        .iter()
        .map(|&status| (status, 0))
        .collect();
    counts.extend(counted);
    let branches = sqlx::query_as(
        "SELECT pp.kind, count(*) AS parts,
                avg(extract(epoch FROM pp.arrived_at - p.uploaded_at))::float8 AS mean_seconds,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM pp.arrived_at - p.uploaded_at))::float8 AS p95_seconds
         FROM product_parts pp JOIN products p ON p.id = pp.product_id
         WHERE pp.arrived_at IS NOT NULL GROUP BY pp.kind ORDER BY 3 DESC NULLS LAST",
    )
    .fetch_all(pool)
    .await?;
    Ok((counts, branches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_described_states_are_the_stored_ones() {
        shared::testkit::schema_matches(ProductStatus::ALL);
        shared::testkit::schema_matches(PartState::ALL);
        assert_eq!("incomplete".parse(), Ok(ProductStatus::Incomplete));
        assert!("gone".parse::<PartState>().is_err());
    }
}
