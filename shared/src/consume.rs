//! Reading the event stream: every message becomes a typed [`Received`] event
//! or a dead letter with its reason; the consumer never stops on bad input.

use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::TopicPartitionList;
use uuid::Uuid;

use crate::dlq::DeadLetters;
use crate::event::{derived_id, parse, Envelope};

/// A parsed event with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub envelope: Envelope,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka message timestamp.
    pub timestamp: Option<DateTime<Utc>>,
}

impl Received {
    /// The producer's id, or one derived from the origin (stable across replays).
    pub fn id(&self) -> Uuid {
        self.envelope
            .id()
            .unwrap_or_else(|| derived_id(&self.topic, self.partition, self.offset))
    }

    /// The event time, or the Kafka timestamp when the producer set none.
    pub fn ts(&self) -> Option<DateTime<Utc>> {
        self.envelope.ts().or(self.timestamp)
    }
}

/// Why a message was rejected: a stable code and a human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub reason: String,
}

/// Parses one Kafka message.
pub fn classify(message: &BorrowedMessage<'_>) -> Result<Received, Rejection> {
    let payload = message.payload().ok_or_else(|| Rejection {
        code: "empty_payload",
        reason: "message has no payload".into(),
    })?;
    let envelope = parse(payload).map_err(|e| Rejection {
        code: e.code(),
        reason: e.to_string(),
    })?;
    Ok(Received {
        envelope,
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis),
    })
}

/// A group consumer of the event stream that dead-letters what it cannot
/// parse. At-least-once: an offset is stored for commit only when the caller
/// says its effect is durable ([`EventConsumer::done`]), or once a rejected
/// message's copy is acknowledged by the DLQ.
pub struct EventConsumer {
    consumer: StreamConsumer,
    dead_letters: DeadLetters,
}

impl EventConsumer {
    /// Wraps a consumer that is already subscribed or assigned.
    pub fn new(consumer: StreamConsumer, dead_letters: DeadLetters) -> Self {
        Self {
            consumer,
            dead_letters,
        }
    }

    /// The next parsed event; rejected messages are dead-lettered on the way.
    pub async fn next(&self) -> anyhow::Result<Received> {
        loop {
            let message = self.consumer.recv().await?;
            match classify(&message) {
                Ok(received) => return Ok(received),
                Err(rejection) => {
                    self.dead_letters
                        .send(&message, rejection.code, &rejection.reason)
                        .await?;
                    self.consumer.store_offset_from_message(&message)?;
                }
            }
        }
    }

    /// Marks `received` processed: its offset will be committed.
    pub fn done(&self, received: &Received) -> anyhow::Result<()> {
        self.consumer
            .store_offset(&received.topic, received.partition, received.offset)?;
        Ok(())
    }

    /// Commits the stored offsets now.
    pub fn commit(&self) -> anyhow::Result<()> {
        match self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            Ok(())
            | Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The underlying consumer, for assignment and seeking.
    pub fn consumer(&self) -> &StreamConsumer {
        &self.consumer
    }
}

/// Assigns every partition of `topic` from the beginning: a reader that joins
/// no group (tests, inspection, replays).
pub fn assign_from_start(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    Ok(())
}
