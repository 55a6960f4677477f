//! Reading the event stream: every message becomes a typed [`Received`] event
//! or a [`Rejection`] with its reason (bound for the DLQ); no input stops a
//! consumer.

use chrono::{DateTime, Utc};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::TopicPartitionList;
use uuid::Uuid;

use crate::dlq::redrive;
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
    /// For a copy a redrive republished: where the record it copies was
    /// first written (its `redrive.origin.*` headers).
    pub copy_of: Option<Place>,
}

/// A record's place: topic, partition, offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Place {
    /// The `redrive.origin.*` headers of a message, if it is a redrive's copy.
    pub fn copied<H: Headers>(headers: Option<&H>) -> Option<Place> {
        let headers = headers?;
        let text = |name| crate::dlq::header_str(headers, name);
        Some(Place {
            topic: text(redrive::ORIGIN_TOPIC)
                .filter(|t| !t.is_empty())?
                .to_owned(),
            partition: text(redrive::ORIGIN_PARTITION)?.parse().ok()?,
            offset: text(redrive::ORIGIN_OFFSET)?.parse().ok()?,
        })
    }

    /// The id of an event without one written here (see [`derived_id`]).
    pub fn derived_id(&self) -> Uuid {
        derived_id(&self.topic, self.partition, self.offset)
    }
}

impl Received {
    /// The producer's id, or one derived from where the record was first
    /// written (stable across replays and redrives).
    pub fn id(&self) -> Uuid {
        self.given_id()
            .unwrap_or_else(|| derived_id(&self.topic, self.partition, self.offset))
    }

    /// The id the record carries: the producer's, or for a redrive's copy
    /// of an event without one, the id derived from the record it copies.
    /// So every copy of one record is the same event (a repeat the runtime
    /// skips), however many times it is redriven. `None` for an event
    /// without an id at the place it was first written: no other record
    /// can be a repeat of it.
    pub fn given_id(&self) -> Option<Uuid> {
        self.envelope
            .id()
            .or_else(|| self.copy_of.as_ref().map(Place::derived_id))
    }

    /// The event time, or the Kafka timestamp when the producer set none.
    pub fn ts(&self) -> Option<DateTime<Utc>> {
        self.envelope.ts().or(self.timestamp)
    }

    /// The time the event counts at, in the streaming and the batch half
    /// alike: its event time, but never after the record reached the topic.
    /// A producer clock running ahead (within the parser's allowed skew)
    /// would otherwise date an event to a day that has not begun where it
    /// was stored, and weigh it up for as long as it is remembered.
    pub fn counted_at(&self) -> Option<DateTime<Utc>> {
        let ts = self.ts()?;
        Some(match self.timestamp {
            Some(arrival) if ts > arrival => arrival,
            _ => ts,
        })
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
/// skew after it. Its key must be its entity (see [`key_mismatch`]).
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
    if let Some(rejection) = key_mismatch(message.key(), &envelope) {
        return Err(rejection);
    }
    Ok(Received {
        envelope,
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp,
        copy_of: Place::copied(message.headers()),
    })
}

/// A record keyed by anything but the entity in its body (or by nothing)
/// is dead-lettered as `key_mismatch`. Workers keep each entity's state
/// with the partition its key hashes to, so a user's event typed into kcat
/// with another key would split that user's state across partitions (and
/// order their events wrongly); the batch half rejects it the same way, so
/// both halves count the same events. Produce it again keyed by its entity
/// (`scripts/dlq.sh redrive` does).
fn key_mismatch(key: Option<&[u8]>, envelope: &Envelope) -> Option<Rejection> {
    let entity = envelope.key();
    if key == Some(entity.as_bytes()) {
        return None;
    }
    let field = envelope.event_type().key_field();
    let found = match key {
        None => "no key".to_owned(),
        Some(key) => {
            let key = String::from_utf8_lossy(key);
            let shown: String = key.chars().take(64).collect();
            let more = if shown.len() < key.len() { "…" } else { "" };
            format!("the key {shown:?}{more}")
        }
    };
    Some(Rejection {
        code: "key_mismatch",
        reason: format!(
            "the record has {found}, not its entity's ({field} {entity:?}): \
             produce it keyed by {entity:?} so all of that entity's events share a partition"
        ),
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

#[cfg(test)]
mod tests {
    use super::key_mismatch;
    use crate::event::parse;

    #[test]
    fn a_record_must_be_keyed_by_its_entity() {
        let event =
            parse(br#"{"type":"interaction","user_id":"u1","product_id":"p","action":"view"}"#)
                .unwrap();
        assert_eq!(key_mismatch(Some(b"u1"), &event), None);
        let wrong = key_mismatch(Some(b"u2"), &event).expect("another user's key");
        assert_eq!(wrong.code, "key_mismatch");
        assert!(wrong.reason.contains(r#"the key "u2""#), "{}", wrong.reason);
        assert!(wrong.reason.contains(r#"user_id "u1""#), "{}", wrong.reason);
        let none = key_mismatch(None, &event).expect("no key");
        assert!(
            none.reason.starts_with("the record has no key"),
            "{}",
            none.reason
        );
        let long = key_mismatch(Some("k".repeat(500).as_bytes()), &event).unwrap();
        assert!(
            long.reason.len() < 300,
            "a long key is cut: {}",
            long.reason
        );
    }
}
