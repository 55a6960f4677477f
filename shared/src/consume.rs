//! Reading the event stream: every message becomes a typed [`Received`] event
//! or a [`Rejection`] with its reason (bound for the DLQ); no input stops a
//! consumer.

use chrono::{DateTime, Utc};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::TopicPartitionList;
use uuid::Uuid;

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

/// Parses one message. Its event time must fit the message's own
/// timestamp (when it arrived): not before 1970, not beyond the configured
/// skew after it.
pub fn classify(message: &BorrowedMessage<'_>) -> Result<Received, Rejection> {
    let payload = message.payload().ok_or_else(|| Rejection {
        code: "empty_payload",
        reason: "message has no payload".into(),
    })?;
    let rejected = |e: crate::event::ParseError| Rejection {
        code: e.code(),
        reason: e.to_string(),
    };
    let envelope = parse(payload).map_err(rejected)?;
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::from_timestamp_millis);
    envelope
        .check_time(timestamp.unwrap_or_else(Utc::now))
        .map_err(rejected)?;
    Ok(Received {
        envelope,
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp,
    })
}

/// Assigns every partition of `topic` from the beginning: a reader that joins
/// no group (tests, inspection, replays).
pub fn assign_from_start(
    consumer: &impl Consumer,
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
