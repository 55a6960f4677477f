//! Publishing validated events: claim-check what is too large, produce
//! everything concurrently, and report per event what the broker acknowledged.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::Serialize;
use shared::claim_check::{ClaimError, ClaimStore};
use shared::event::{ClaimedEvent, Event};
use shared::Settings;
use uuid::Uuid;

const CONTENT_TYPE: &str = "application/json";

/// Where an acknowledged event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// One message ready to produce.
struct Outgoing {
    id: Uuid,
    key: String,
    timestamp: Option<i64>,
    payload: Vec<u8>,
    claim_check: Option<Uuid>,
}

/// Produces events to the events topic.
pub struct Publisher {
    producer: FutureProducer,
    claims: ClaimStore,
    topic: String,
    threshold: usize,
    queue_timeout: Duration,
}

impl Publisher {
    /// A publisher to `settings.kafka.events_topic`.
    pub fn new(producer: FutureProducer, claims: ClaimStore, settings: &Settings) -> Self {
        Self {
            producer,
            claims,
            topic: settings.kafka.events_topic.clone(),
            threshold: settings.claim_check.threshold_bytes,
            queue_timeout: settings.kafka.delivery_timeout(),
        }
    }

    /// Publishes `events` (each with an id) and waits for every acknowledgement.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<Ack>, PublishError> {
        let mut outgoing = Vec::with_capacity(events.len());
        for event in events {
            outgoing.push(self.prepare(event).await?);
        }
        let sends = outgoing.iter().map(|o| {
            let mut record = FutureRecord::to(&self.topic)
                .key(&o.key)
                .payload(&o.payload);
            if let Some(ts) = o.timestamp {
                record = record.timestamp(ts);
            }
            self.producer
                .send(record, Timeout::After(self.queue_timeout))
        });
        let results = join_all(sends).await;

        let mut acknowledged = Vec::with_capacity(outgoing.len());
        let mut failed = Vec::new();
        let mut reason = None;
        for (o, result) in outgoing.iter().zip(results) {
            match result {
                Ok(delivery) => acknowledged.push(Ack {
                    id: o.id,
                    partition: delivery.partition,
                    offset: delivery.offset,
                    claim_check: o.claim_check,
                }),
                Err((err, _)) => {
                    reason.get_or_insert_with(|| err.to_string());
                    failed.push(o.id);
                }
            }
        }
        let tokens: Vec<Uuid> = acknowledged.iter().filter_map(|a| a.claim_check).collect();
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

    /// Serializes one event; a large one goes to the claim-check store and
    /// its envelope carries the token.
    async fn prepare(&self, event: Event) -> Result<Outgoing, ClaimError> {
        let id = event.id.expect("the gateway assigns ids before publishing");
        let key = event.key().to_owned();
        let timestamp = event.ts.map(|ts| ts.timestamp_millis());
        let json = event.to_json();
        if json.len() <= self.threshold {
            return Ok(Outgoing {
                id,
                key,
                timestamp,
                payload: json,
                claim_check: None,
            });
        }
        let claim_check = self.claims.put(&json, CONTENT_TYPE).await?;
        let token = claim_check.token;
        metrics::counter!("kappa_gateway_claim_checks_total").increment(1);
        let envelope = ClaimedEvent {
            event_type: event.body.event_type(),
            id: Some(id),
            ts: event.ts,
            key: key.clone(),
            claim_check,
        };
        Ok(Outgoing {
            id,
            key,
            timestamp,
            payload: envelope.to_json(),
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
