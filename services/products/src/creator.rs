//! The product creator: event buffering. Per product, the parts the upload
//! expects against the branch results that have arrived, in Postgres, in the
//! same transaction as the creator's offsets (the runtime's Postgres mode):
//! a crash loses no buffered part and applies none twice. When the last part
//! is in, the product is decided (`active` when every part passed,
//! `rejected` with each failed part's reason) and its event is written to
//! the `products_outbox` in that same transaction; the relay publishes it.
//! A product still waiting at its deadline becomes `incomplete` (the
//! sweeper, [`sweep`]), listing the parts that never came.
//!
//! Every event of a product is keyed by its id, so one creator instance
//! owns it, and results come after their upload in the partition. A result
//! for a part already decided, a duplicate, or one arriving after the
//! product was decided changes nothing (counted). A second, different
//! upload of an existing product id is refused (the DLQ); the same upload
//! delivered again is a no-op.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use shared::consume::Received;
use shared::event::{
    AssetKind, Envelope, Event, EventBody, EventType, ProductCreated, ProductFailed,
    ProductUploaded,
};
use shared::shutdown::CancellationToken;
use shared::worker::{Postgres, Refusals, Refused, Worker};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{PartState, ProductStatus};

use std::sync::Arc;

/// Products decided per sweep transaction.
const SWEEP_BATCH: i64 = 100;

pub struct Creator {
    /// How long a product waits for its parts.
    pub deadline: Duration,
    /// Wakes the outbox relay (it also polls).
    pub wake: Arc<Notify>,
}

impl Worker for Creator {
    type Mode = Postgres;

    const READS: &'static [EventType] = &[
        EventType::ProductUploaded,
        EventType::AssetProcessed,
        EventType::AssetFailed,
    ];

    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> anyhow::Result<Refusals> {
        let mut decided = false;
        let mut refusals = Refusals::none();
        for received in events {
            let Envelope::Inline(event) = &received.envelope else {
                continue;
            };
            let ts = received.ts().unwrap_or_else(Utc::now);
            let product = match &event.body {
                EventBody::ProductUploaded(upload) => {
                    if let Err(refused) = self.buffer(tx, received.id(), ts, upload).await? {
                        refusals.refuse(received, refused);
                    }
                    continue;
                }
                EventBody::AssetProcessed(r) => {
                    arrive(tx, &r.product_id, &r.part, r.kind, Ok(&r.result), ts).await?
                }
                EventBody::AssetFailed(r) => {
                    arrive(tx, &r.product_id, &r.part, r.kind, Err(&r.reason), ts).await?
                }
                _ => continue,
            };
            if let Some(product) = product {
                decided |= complete(tx, product).await?;
            }
        }
        if decided {
            self.wake.notify_one();
        }
        Ok(refusals)
    }
}

impl Creator {
    /// Buffers a new product with every part waiting; refuses (writing
    /// nothing) a different upload of a product id that exists.
    async fn buffer(
        &self,
        tx: &mut PgConnection,
        event_id: Uuid,
        uploaded_at: DateTime<Utc>,
        upload: &ProductUploaded,
    ) -> anyhow::Result<Result<(), Refused>> {
        let inserted = sqlx::query(
            "INSERT INTO products (id, seller_id, status, metadata, upload_event, uploaded_at, deadline_at)
             VALUES ($1, $2, 'pending', $3, $4, $5, now() + $6 * interval '1 millisecond')
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&upload.product_id)
        .bind(&upload.seller_id)
        .bind(&upload.metadata)
        .bind(event_id)
        .bind(uploaded_at)
        .bind(self.deadline.as_millis() as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let (existing,): (Uuid,) =
                sqlx::query_as("SELECT upload_event FROM products WHERE id = $1")
                    .bind(&upload.product_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if existing == event_id {
                metrics::counter!("kappa_products_ignored_total", "why" => "upload_again")
                    .increment(1);
                return Ok(Ok(()));
            }
            return Ok(Err(Refused::new(
                "product_exists",
                format!(
                    "product {} was uploaded before (event {existing})",
                    upload.product_id
                ),
            )));
        }
        let (parts, kinds, assets): (Vec<&str>, Vec<&str>, Vec<Option<Value>>) = upload
            .parts()
            .map(|(part, kind)| {
                let asset = upload.assets.iter().find(|a| a.part == part);
                (part, kind.as_str(), asset.map(|a| json!(a)))
            })
            .fold(
                (vec![], vec![], vec![]),
                |(mut p, mut k, mut a), (part, kind, asset)| {
                    p.push(part);
                    k.push(kind);
                    a.push(asset);
                    (p, k, a)
                },
            );
        sqlx::query(
            "INSERT INTO product_parts (product_id, part, kind, asset)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::jsonb[])",
        )
        .bind(&upload.product_id)
        .bind(&parts)
        .bind(&kinds)
        .bind(&assets)
        .execute(&mut *tx)
        .await
        .context("buffering the parts")?;
        metrics::counter!("kappa_products_buffered_total").increment(1);
        Ok(Ok(()))
    }
}

/// Records one branch result if its part is still waiting on a pending
/// product; returns the product to check for completion.
async fn arrive<'a>(
    tx: &mut PgConnection,
    product_id: &'a str,
    part: &str,
    kind: AssetKind,
    outcome: Result<&Value, &String>,
    ts: DateTime<Utc>,
) -> anyhow::Result<Option<&'a str>> {
    let (state, result, reason) = match outcome {
        Ok(result) => (PartState::Processed, Some(result), None),
        Err(reason) => (PartState::Failed, None, Some(reason)),
    };
    // The branch's latency: the upload's time to the result's.
    let waited: Option<(Option<f64>,)> = sqlx::query_as(
        "UPDATE product_parts pp SET state = $3, result = $4, reason = $5, arrived_at = $6
         FROM products p
         WHERE pp.product_id = $1 AND pp.part = $2 AND pp.kind = $7 AND pp.state = 'waiting'
           AND p.id = pp.product_id AND p.status = 'pending'
         RETURNING extract(epoch FROM $6 - p.uploaded_at)::float8",
    )
    .bind(product_id)
    .bind(part)
    .bind(state)
    .bind(result)
    .bind(reason)
    .bind(ts)
    .bind(kind.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((waited,)) = waited else {
        // A duplicate, a late result, or one for a product or part unknown here.
        tracing::info!(
            product_id,
            part,
            "result changes nothing (duplicate, late or unknown)"
        );
        metrics::counter!("kappa_products_ignored_total", "why" => "result_not_waiting")
            .increment(1);
        return Ok(None);
    };
    metrics::histogram!("kappa_products_part_seconds", "kind" => kind.as_str())
        .record(waited.unwrap_or(0.0).max(0.0));
    Ok(Some(product_id))
}

/// Decides `product` if no part is waiting any more; true when it did.
async fn complete(tx: &mut PgConnection, product_id: &str) -> anyhow::Result<bool> {
    let parts: Vec<(String, PartState, Option<Value>, Option<String>)> = sqlx::query_as(
        "SELECT part, state, result, reason FROM product_parts WHERE product_id = $1 ORDER BY part",
    )
    .bind(product_id)
    .fetch_all(&mut *tx)
    .await?;
    if parts
        .iter()
        .any(|(_, state, _, _)| *state == PartState::Waiting)
    {
        return Ok(false);
    }
    let failures: Vec<String> = parts
        .iter()
        .filter(|(_, state, _, _)| *state == PartState::Failed)
        .map(|(part, _, _, reason)| format!("{part}: {}", reason.as_deref().unwrap_or("failed")))
        .collect();
    let normalized = parts
        .iter()
        .find(|(part, ..)| part == shared::event::METADATA_PART)
        .and_then(|(_, _, result, _)| result.clone());
    let (status, reason, body) = if failures.is_empty() {
        let results: Map<String, Value> = parts
            .into_iter()
            .map(|(part, _, result, _)| (part, result.unwrap_or(Value::Null)))
            .collect();
        let title = normalized
            .as_ref()
            .and_then(|n| n["title"].as_str())
            .unwrap_or_default()
            .to_owned();
        let body = EventBody::ProductCreated(ProductCreated {
            product_id: product_id.to_owned(),
            title,
            parts: Value::Object(results),
        });
        (ProductStatus::Active, None, body)
    } else {
        let reason = failures.join("; ");
        let body = EventBody::ProductFailed(ProductFailed {
            product_id: product_id.to_owned(),
            status: ProductStatus::Rejected.to_string(),
            reason: reason.clone(),
            missing: Vec::new(),
        });
        (ProductStatus::Rejected, Some(reason), body)
    };
    decide(
        tx,
        product_id,
        status,
        reason.as_deref(),
        normalized.as_ref(),
        body,
    )
    .await
}

/// Sets the final status once (only from `pending`) and writes the event to
/// the outbox in the same transaction; false when it was already decided.
async fn decide(
    tx: &mut PgConnection,
    product_id: &str,
    status: ProductStatus,
    reason: Option<&str>,
    normalized: Option<&Value>,
    body: EventBody,
) -> anyhow::Result<bool> {
    let updated = sqlx::query(
        "UPDATE products SET status = $2, reason = $3, normalized = $4, finished_at = now()
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(product_id)
    .bind(status)
    .bind(reason)
    .bind(normalized)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    let mut event = Event::new(body);
    // One decision per product, whoever makes it: the outbox's unique id.
    event.id = Some(Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("product-decided/{product_id}").as_bytes(),
    ));
    event.ts = Some(Utc::now());
    sqlx::query(
        "INSERT INTO products_outbox (event_id, product_id, payload) VALUES ($1, $2, $3)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.id)
    .bind(product_id)
    .bind(String::from_utf8(event.to_json()).expect("events are UTF-8 JSON"))
    .execute(&mut *tx)
    .await?;
    let (seconds,): (Option<f64>,) = sqlx::query_as(
        "SELECT extract(epoch FROM finished_at - buffered_at)::float8 FROM products WHERE id = $1",
    )
    .bind(product_id)
    .fetch_one(&mut *tx)
    .await?;
    metrics::counter!("kappa_products_decided_total", "status" => status.as_str()).increment(1);
    metrics::histogram!("kappa_products_join_seconds").record(seconds.unwrap_or(0.0));
    Ok(true)
}

/// Every `interval` until `shutdown`: products past their deadline become
/// `incomplete`, listing the parts that never came. Rows are claimed with
/// `FOR UPDATE SKIP LOCKED`, so a creator applying a result to the same
/// product at that moment either decides it first or finds it decided.
pub async fn sweep(
    pool: PgPool,
    interval: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        match sweep_once(&pool).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(products = n, "deadline passed: products incomplete");
                wake.notify_one();
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "the deadline sweep failed; retrying"
            ),
        }
    }
}

/// One sweep transaction; the number of products it decided.
pub async fn sweep_once(pool: &PgPool) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let due: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM products WHERE status = 'pending' AND deadline_at <= now()
         ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(SWEEP_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut decided = 0;
    for (product_id,) in &due {
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT part FROM product_parts WHERE product_id = $1 AND state = 'waiting' ORDER BY part",
        )
        .bind(product_id)
        .fetch_all(&mut *tx)
        .await?;
        let reason = format!("no result before the deadline for: {}", missing.join(", "));
        let body = EventBody::ProductFailed(ProductFailed {
            product_id: product_id.clone(),
            status: ProductStatus::Incomplete.to_string(),
            reason: reason.clone(),
            missing,
        });
        if decide(
            &mut tx,
            product_id,
            ProductStatus::Incomplete,
            Some(&reason),
            None,
            body,
        )
        .await?
        {
            decided += 1;
        }
    }
    tx.commit().await?;
    Ok(decided)
}
