//! Publishing validated events: claim-check what is too large, produce
//! everything concurrently (in slices of a bounded size), and report per
//! event what the broker acknowledged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rdkafka::error::KafkaError;
use serde::Serialize;
use shared::claim_check::{ClaimError, ClaimStore};
use shared::event::{ClaimedEvent, Event, EventType};
use shared::kafka_batch::{self, BatchProducer};
use shared::Settings;
use uuid::Uuid;

const CONTENT_TYPE: &str = "application/json";

/// Where an acknowledged event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Ack {
    pub id: Uuid,
    pub partition: i32,
    pub offset: i64,
    /// The claim-check token, when the body went to the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_check: Option<Uuid>,
}

/// Why a batch was not (wholly) published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker did not acknowledge some events in time. Acknowledged ones
    /// are on the topic exactly once; the failed ones may be retried with the
    /// same ids.
    #[error("the broker did not acknowledge {} event(s): {reason}", failed.len())]
    Broker {
        acknowledged: Vec<Ack>,
        failed: Vec<Uuid>,
        reason: String,
    },
    /// The claim-check store could not take a large payload; nothing was produced.
    #[error(transparent)]
    ClaimStore(#[from] ClaimError),
    /// The broker refuses messages this large (retrying cannot help).
    #[error(
        "{count} event(s) are larger than the broker accepts (message.max.bytes, {limit} bytes)"
    )]
    TooLarge { count: usize, limit: usize },
}

/// One message ready to produce.
struct Outgoing {
    id: Uuid,
    key: String,
    timestamp: Option<i64>,
    payload: Bytes,
    claim_check: Option<Uuid>,
}

/// A validated event and the bytes that represent it on the wire.
#[derive(Debug)]
pub struct Incoming {
    pub id: Uuid,
    pub ts: Option<DateTime<Utc>>,
    pub event_type: EventType,
    pub key: String,
    pub wire: Bytes,
}

impl Incoming {
    /// Keeps of a validated event what producing it needs; the parsed
    /// fields go at once (a 64 MiB body is some 600,000 events).
    pub fn new(event: Event, wire: Bytes) -> Self {
        Self {
            id: event.id.expect("the gateway assigns ids before publishing"),
            ts: event.ts,
            event_type: event.body.event_type(),
            key: event.body.into_key(),
            wire,
        }
    }
}

/// Messages handed to the producer at once: librdkafka copies each and
/// keeps a few hundred bytes of its own per message until acknowledged, so
/// a large request goes out in slices (a 60 MiB body of small events took
/// 419 MB at its peak in one piece).
const SLICE: usize = 8192;

/// Produces events to the events topic.
pub struct Publisher {
    producer: Arc<BatchProducer>,
    claims: ClaimStore,
    topic: String,
    threshold: usize,
    /// `claim_check.test_pause_before_commit_ms`.
    pause_before_commit: Duration,
    /// The producer's `message.max.bytes`: larger messages are refused.
    max_message_bytes: usize,
}

impl Publisher {
    /// A publisher to `settings.kafka.events_topic`.
    pub fn new(producer: Arc<BatchProducer>, claims: ClaimStore, settings: &Settings) -> Self {
        Self {
            producer,
            claims,
            topic: settings.kafka.events_topic.clone(),
            threshold: settings.claim_check.threshold_bytes,
            pause_before_commit: Duration::from_millis(
                settings.claim_check.test_pause_before_commit_ms,
            ),
            max_message_bytes: settings
                .kafka
                .producer
                .get("message_max_bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_000_000),
        }
    }

    /// Publishes `events` (each with an id) and waits for every acknowledgement.
    pub async fn publish(&self, events: Vec<Incoming>) -> Result<Vec<Ack>, PublishError> {
        let mut outgoing = Vec::with_capacity(events.len());
        for incoming in events {
            outgoing.push(self.prepare(incoming).await?);
        }
        // All or nothing: a message the broker would refuse fails the request
        // before anything is produced (retrying could never help).
        let too_large = outgoing
            .iter()
            .filter(|o| o.payload.len() + o.key.len() > self.max_message_bytes)
            .count();
        if too_large > 0 {
            metrics::counter!("kappa_gateway_events_rejected_total", "reason" => "too_large")
                .increment(too_large as u64);
            return Err(PublishError::TooLarge {
                count: too_large,
                limit: self.max_message_bytes,
            });
        }
        let mut results = Vec::with_capacity(outgoing.len());
        for slice in outgoing.chunks(SLICE) {
            if results.iter().any(Result::is_err) {
                // The broker failed an earlier slice: the rest is not sent
                // (failed, to retry with the same ids), not waited for again.
                results.extend(slice.iter().map(|_| Err(KafkaError::Canceled)));
                continue;
            }
            let messages: Vec<kafka_batch::Outgoing<'_>> = slice
                .iter()
                .map(|o| kafka_batch::Outgoing {
                    key: o.key.as_bytes(),
                    payload: &o.payload,
                    timestamp: o.timestamp,
                })
                .collect();
            results.extend(self.producer.send_all(&self.topic, &messages).await);
        }

        let mut acknowledged = Vec::with_capacity(outgoing.len());
        let mut failed = Vec::new();
        let mut reason = None;
        for (o, result) in outgoing.iter().zip(results) {
            match result {
                Ok((partition, offset)) => acknowledged.push(Ack {
                    id: o.id,
                    partition,
                    offset,
                    claim_check: o.claim_check,
                }),
                Err(err) => {
                    reason.get_or_insert_with(|| err.to_string());
                    failed.push(o.id);
                }
            }
        }
        let tokens: Vec<Uuid> = acknowledged.iter().filter_map(|a| a.claim_check).collect();
        if !tokens.is_empty() && !self.pause_before_commit.is_zero() {
            tokio::time::sleep(self.pause_before_commit).await; // tests: the crash window
        }
        self.claims.commit(&tokens).await?;

        metrics::counter!("kappa_gateway_events_produced_total")
            .increment(acknowledged.len() as u64);
        if failed.is_empty() {
            return Ok(acknowledged);
        }
        metrics::counter!("kappa_gateway_events_failed_total").increment(failed.len() as u64);
        Err(PublishError::Broker {
            acknowledged,
            failed,
            reason: reason.unwrap_or_default(),
        })
    }

    /// A large event goes to the claim-check store and its envelope, carrying
    /// the token, goes on the topic instead.
    async fn prepare(&self, incoming: Incoming) -> Result<Outgoing, ClaimError> {
        let Incoming {
            id,
            ts,
            event_type,
            key,
            wire,
        } = incoming;
        let timestamp = ts.map(|ts| ts.timestamp_millis());
        if wire.len() <= self.threshold {
            return Ok(Outgoing {
                id,
                key,
                timestamp,
                payload: wire,
                claim_check: None,
            });
        }
        let claim_check = self.claims.put(&wire, CONTENT_TYPE).await?;
        let token = claim_check.token;
        metrics::counter!("kappa_gateway_claim_checks_total").increment(1);
        let envelope = ClaimedEvent {
            event_type,
            id: Some(id),
            ts,
            key: key.clone(),
            claim_check,
        };
        let payload = Bytes::from(envelope.to_json());
        Ok(Outgoing {
            id,
            key,
            timestamp,
            payload,
            claim_check: Some(token),
        })
    }

    /// Waits for queued messages to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "producer flush incomplete at shutdown");
        }
    }
}
