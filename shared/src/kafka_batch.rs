//! Producing a batch of messages and learning where each one landed, at a
//! fraction of the cost of one future per message: every message carries a
//! ticket (its batch and index); librdkafka's delivery callback, run on the
//! producer's polling thread, records the outcome in the batch; the caller
//! awaits the batch once.
//!
//! librdkafka settles every message within its delivery timeout, unless its
//! polling thread is gone (seen once when the disk filled up): so the wait
//! is bounded too. Past the delivery timeout and a grace, what is unsettled
//! fails (`MessageTimedOut`) and the producer says it is stalled, which a
//! service's readiness reports.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tokio::sync::Notify;

use crate::config::KafkaConfig;

/// One message to produce.
pub struct Outgoing<'a> {
    pub key: &'a [u8],
    pub payload: &'a [u8],
    /// Message timestamp in epoch milliseconds; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

/// Where a message landed, or why it did not.
pub type Outcome = Result<(i32, i64), KafkaError>;

/// Outcomes of one batch, filled in by the delivery callback.
struct Batch {
    partitions: Vec<AtomicI32>,
    offsets: Vec<AtomicI64>,
    errors: Mutex<Vec<(usize, KafkaError)>>,
    pending: AtomicUsize,
    done: Notify,
}

impl Batch {
    fn settle(&self, index: usize, outcome: Outcome) {
        match outcome {
            Ok((partition, offset)) => {
                self.partitions[index].store(partition, Ordering::Relaxed);
                self.offsets[index].store(offset, Ordering::Relaxed);
            }
            Err(error) => self.errors.lock().expect("poisoned").push((index, error)),
        }
        // AcqRel: the last settler's wake-up publishes every store above.
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// Identifies a message's slot in its batch.
pub struct Ticket {
    batch: Arc<Batch>,
    index: usize,
}

/// The delivery callback that settles tickets.
pub struct Settle;

impl ClientContext for Settle {}

impl ProducerContext for Settle {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        ticket.batch.settle(ticket.index, outcome);
    }
}

/// How long past the delivery timeout a batch waits for its callbacks.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

/// An idempotent, `acks=all` producer that sends batches and reports per message.
pub struct BatchProducer {
    producer: ThreadedProducer<Settle>,
    /// How long a batch waits for its outcomes, at most.
    settle_within: Duration,
    /// A batch was not settled in time: the polling thread is gone.
    stalled: AtomicBool,
}

impl BatchProducer {
    /// A producer with [`crate::kafka::producer_config`].
    pub fn new(cfg: &KafkaConfig) -> anyhow::Result<Self> {
        let producer = crate::kafka::producer_config(cfg)
            .create_with_context(Settle)
            .context("creating Kafka producer")?;
        Ok(Self::with(producer, cfg.delivery_timeout() + SETTLE_GRACE))
    }

    fn with(producer: ThreadedProducer<Settle>, settle_within: Duration) -> Self {
        Self {
            producer,
            settle_within,
            stalled: AtomicBool::new(false),
        }
    }

    /// True once a batch was not settled within the delivery timeout and
    /// its grace: librdkafka no longer reports deliveries (its polling
    /// thread is gone). Sends fail from then on; readiness reports it.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Produces every message to `topic` and waits until each one is
    /// acknowledged or failed (bounded by the delivery timeout, and past it
    /// and a grace, failed as timed out). Outcomes are in input order.
    pub async fn send_all(&self, topic: &str, messages: &[Outgoing<'_>]) -> Vec<Outcome> {
        let timed_out = || KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        if self.stalled() {
            return messages.iter().map(|_| Err(timed_out())).collect();
        }
        let batch = Arc::new(Batch {
            partitions: (0..messages.len()).map(|_| AtomicI32::new(-1)).collect(),
            offsets: (0..messages.len()).map(|_| AtomicI64::new(-1)).collect(),
            errors: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(messages.len()),
            done: Notify::new(),
        });
        for (index, m) in messages.iter().enumerate() {
            let ticket = Box::new(Ticket {
                batch: batch.clone(),
                index,
            });
            let mut record = BaseRecord::with_opaque_to(topic, ticket)
                .key(m.key)
                .payload(m.payload);
            if let Some(ts) = m.timestamp {
                record = record.timestamp(ts);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // The local queue is full: let the polling thread drain it.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, back)) => {
                        batch.settle(index, Err(error));
                        drop(back);
                        break;
                    }
                }
            }
        }
        // notify_one stores a permit, so a batch settled before this await is not missed.
        let settled = messages.is_empty()
            || tokio::time::timeout(self.settle_within, batch.done.notified())
                .await
                .is_ok();
        if !settled {
            self.stalled.store(true, Ordering::Relaxed);
            tracing::error!(
                unsettled = batch.pending.load(Ordering::Relaxed),
                "the producer reported no delivery within its delivery timeout: its polling thread is gone; sends fail from now on"
            );
        }
        let mut outcomes: Vec<Outcome> = batch
            .partitions
            .iter()
            .zip(&batch.offsets)
            .map(|(p, o)| match p.load(Ordering::Relaxed) {
                // Never settled (only when not `settled`).
                -1 => Err(timed_out()),
                p => Ok((p, o.load(Ordering::Relaxed))),
            })
            .collect();
        for (index, error) in batch.errors.lock().expect("poisoned").drain(..) {
            outcomes[index] = Err(error);
        }
        outcomes
    }

    /// The underlying client, for metadata (readiness).
    pub fn client(&self) -> &rdkafka::client::Client<Settle> {
        self.producer.client()
    }

    /// Waits for queued messages (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer whose deliveries never come within the batch's bound (a
    /// broker that is not there, a delivery timeout of minutes: what a gone
    /// polling thread looks like from the caller): the batch fails as timed
    /// out instead of waiting, and so does every send after it.
    #[tokio::test]
    async fn a_batch_without_deliveries_fails_in_time_and_the_producer_is_stalled() {
        let producer: ThreadedProducer<Settle> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "300000")
            .set("log_level", "0")
            .create_with_context(Settle)
            .unwrap();
        let producer = BatchProducer::with(producer, Duration::from_millis(300));
        let message = Outgoing {
            key: b"k",
            payload: b"{}",
            timestamp: None,
        };
        let outcomes =
            tokio::time::timeout(Duration::from_secs(60), producer.send_all("t", &[message]))
                .await
                .expect("the batch's wait is bounded");
        assert!(matches!(
            outcomes[..],
            [Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            ))]
        ));
        assert!(producer.stalled());
        let again = producer
            .send_all(
                "t",
                &[Outgoing {
                    key: b"k",
                    payload: b"{}",
                    timestamp: None,
                }],
            )
            .await;
        assert!(matches!(again[..], [Err(_)]));
    }
}
