//! A branch of the DAG: one worker per kind (image, video, metadata), each in
//! its own consumer group, reading `product_uploaded` and producing one
//! `asset_processed` or `asset_failed` per part of its kind, in the Kafka
//! transaction that also commits the upload's offset: a crash never emits a
//! result twice, and readers (`read_committed`) never see an aborted one.
//!
//! A file's bytes come from the claim-check store by the token the upload
//! names; a missing or corrupt payload is that part's failure, the store
//! being down is retried. The CPU work (decoding, probing) runs on the
//! blocking pool, one part at a time per worker; scale out with instances.

use std::time::Instant;

use serde_json::{json, Value};
use shared::claim_check::{content_ref, ClaimError, ClaimStore};
use shared::consume::Received;
use shared::event::{
    AssetFailed, AssetKind, AssetProcessed, Envelope, Event, EventBody, EventType, ProductUploaded,
    UploadedAsset,
};
use shared::worker::{KafkaTransactions, Outputs, Refusals, Worker};
use uuid::Uuid;

use crate::image::{self, ImageResult, ImageRules, Thumbnail};
use crate::{metadata, video};

/// The content type of thumbnails.
const THUMBNAIL_TYPE: &str = "image/jpeg";

pub struct Branch {
    pub kind: AssetKind,
    pub claims: ClaimStore,
    pub topic: String,
    pub image: ImageRules,
}

impl Worker for Branch {
    type Mode = KafkaTransactions;

    const READS: &'static [EventType] = &[EventType::ProductUploaded];

    async fn apply(&mut self, out: &mut Outputs, events: &[Received]) -> anyhow::Result<Refusals> {
        for received in events {
            let Envelope::Inline(Event {
                body: EventBody::ProductUploaded(upload),
                ..
            }) = &received.envelope
            else {
                continue;
            };
            for (part, kind) in upload.parts().filter(|(_, k)| *k == self.kind) {
                let started = Instant::now();
                let outcome = match kind {
                    AssetKind::Metadata => metadata_result(upload),
                    _ => {
                        let asset = upload
                            .assets
                            .iter()
                            .find(|a| a.part == part)
                            .expect("parts() lists the upload's assets");
                        self.file(asset).await?
                    }
                };
                let ok = outcome.is_ok();
                let body = match outcome {
                    Ok(result) => EventBody::AssetProcessed(AssetProcessed {
                        product_id: upload.product_id.clone(),
                        part: part.to_owned(),
                        kind,
                        result,
                    }),
                    Err(reason) => EventBody::AssetFailed(AssetFailed {
                        product_id: upload.product_id.clone(),
                        part: part.to_owned(),
                        kind,
                        reason,
                    }),
                };
                let mut event = Event::new(body);
                // The same upload's part always gives the same result id.
                event.id = Some(Uuid::new_v5(&received.id(), part.as_bytes()));
                event.ts = Some(chrono::Utc::now());
                out.event(&self.topic, &event);
                let outcome = if ok { "processed" } else { "failed" };
                metrics::counter!("kappa_products_parts_total", "kind" => kind.as_str(), "outcome" => outcome)
                    .increment(1);
                metrics::histogram!("kappa_products_branch_seconds", "kind" => kind.as_str())
                    .record(started.elapsed().as_secs_f64());
            }
        }
        Ok(Refusals::none())
    }
}

impl Branch {
    /// The result of one file: `Ok(Ok(result))`, `Ok(Err(reason))` for a
    /// file the branch refuses, `Err` for what may pass (the store down).
    async fn file(&self, asset: &UploadedAsset) -> anyhow::Result<Result<Value, String>> {
        let bytes = match self.claims.fetch_typed(asset.token).await {
            Ok((bytes, _)) => bytes,
            Err(error @ ClaimError::Database(_)) => return Err(error.into()),
            Err(error) => return Ok(Err(error.to_string())),
        };
        if shared::claim_check::sha256_hex(&bytes) != asset.sha256 {
            return Ok(Err(format!(
                "the stored file does not match the upload's sha256 {}",
                asset.sha256
            )));
        }
        match asset.kind {
            AssetKind::Image => self.image(asset, bytes).await,
            AssetKind::Video => Ok(tokio::task::spawn_blocking(move || video::probe(&bytes))
                .await?
                .map(|probed| json!(probed))),
            AssetKind::Metadata => unreachable!("metadata travels inline"),
        }
    }

    async fn image(
        &self,
        asset: &UploadedAsset,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Result<Value, String>> {
        let rules = self.image;
        let outcome = tokio::task::spawn_blocking(move || image::process(&bytes, rules)).await?;
        let processed = match outcome {
            Ok(processed) => processed,
            Err(refused) => {
                // The reason is fixed wording for the seller; what the
                // decoder said is for operators only.
                if let Some(detail) = refused.detail() {
                    tracing::info!(
                        part = %asset.part,
                        token = %asset.token,
                        reason = %refused,
                        detail,
                        "image refused"
                    );
                }
                return Ok(Err(refused.to_string()));
            }
        };
        // Content addressed: a retried batch stores the same thumbnail again
        // under the same token, never a second copy.
        let thumbnail = content_ref(&processed.thumbnail, THUMBNAIL_TYPE);
        self.claims
            .put_content(&thumbnail, &processed.thumbnail)
            .await?;
        self.claims.commit(&[thumbnail.token]).await?;
        let result = ImageResult {
            width: processed.width,
            height: processed.height,
            format: processed.format.to_owned(),
            thumbnail: Thumbnail {
                token: thumbnail.token,
                sha256: thumbnail.sha256,
                size: thumbnail.size,
                content_type: thumbnail.content_type,
                width: processed.thumbnail_width,
                height: processed.thumbnail_height,
            },
        };
        let result = serde_json::to_value(result)?;
        Ok(Ok(result))
    }
}

/// The metadata branch's answer: the normalised fields, or each problem.
fn metadata_result(upload: &ProductUploaded) -> Result<Value, String> {
    metadata::normalize(&upload.metadata)
        .map(|normalized| json!(normalized))
        .map_err(|problems| {
            problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.reason))
                .collect::<Vec<_>>()
                .join("; ")
        })
}
