//! The event envelope: one self-describing JSON object per Kafka message.
//!
//! ```json
//! {"type":"interaction","user_id":"u1","product_id":"p7","action":"view","ts":"2026-11-26T10:00:00Z"}
//! ```
//!
//! `type` selects the schema; `id` (uuid) and `ts` (RFC 3339) are optional. A
//! message is parsed once into a typed [`Event`] (or a [`ClaimedEvent`] when its
//! body lives in the claim-check store); everything downstream takes the typed
//! value. Parse errors name the field and what was expected.

mod fast;
mod limits;
pub mod openapi;
mod parse;
mod schema;
mod time;
mod types;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use fast::peek_type;
pub use limits::{email_problem, Limits};
pub use parse::{parse, ParseError};
pub use schema::{EventBody, EventType};
pub use types::{
    Action, AssetFailed, AssetKind, AssetProcessed, ChunkDone, Interaction, MailRequested, MapTask,
    PageAccess, PageCount, ProductCreated, ProductFailed, ProductUploaded, UploadedAsset,
    UserUpdated, METADATA_PART,
};

/// An event with its body inline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Producer-chosen id; when absent, consumers derive one from the origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Event time; when absent, the Kafka message timestamp stands in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// Parses an inline event; a claim-check envelope is an error here.
    pub fn parse(bytes: &[u8]) -> Result<Event, ParseError> {
        match parse(bytes)? {
            Envelope::Inline(event) => Ok(event),
            Envelope::Claimed(_) => Err(ParseError::UnexpectedClaimCheck),
        }
    }

    /// [`Event::parse`] for text already validated as UTF-8 (faster on bulk input).
    pub fn parse_str(text: &str) -> Result<Event, ParseError> {
        match fast::parse_inline_str(text) {
            Some(event) if event.body.validate(Limits::get()).is_ok() => Ok(event),
            _ => Event::parse(text.as_bytes()),
        }
    }

    /// Wraps a body without id or time.
    pub fn new(body: EventBody) -> Self {
        Self {
            id: None,
            ts: None,
            body,
        }
    }

    /// The message key: the entity this event is about.
    pub fn key(&self) -> &str {
        self.body.key()
    }

    /// The canonical JSON form, as written to the topic.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event always serializes")
    }
}

/// Where a claim-checked payload is and how to verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRef {
    pub token: Uuid,
    /// Hex sha256 of the stored bytes.
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
}

/// An event whose body is in the claim-check store: the envelope keeps what
/// routing and counting need (type, key, id, time), the token replaces the rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimedEvent {
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<DateTime<Utc>>,
    pub key: String,
    pub claim_check: ClaimRef,
}

impl ClaimedEvent {
    /// The canonical JSON form, as written to the topic.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a claimed event always serializes")
    }
}

/// A parsed message: inline, or a claim-check token to resolve.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    Inline(Event),
    Claimed(ClaimedEvent),
}

impl Envelope {
    /// The event's type, known without fetching a claim-checked payload.
    pub fn event_type(&self) -> EventType {
        match self {
            Envelope::Inline(e) => e.body.event_type(),
            Envelope::Claimed(c) => c.event_type,
        }
    }

    /// The entity key.
    pub fn key(&self) -> &str {
        match self {
            Envelope::Inline(e) => e.key(),
            Envelope::Claimed(c) => &c.key,
        }
    }

    /// The producer-chosen id, if any.
    pub fn id(&self) -> Option<Uuid> {
        match self {
            Envelope::Inline(e) => e.id,
            Envelope::Claimed(c) => c.id,
        }
    }

    /// The event time, if the producer set one.
    pub fn ts(&self) -> Option<DateTime<Utc>> {
        match self {
            Envelope::Inline(e) => e.ts,
            Envelope::Claimed(c) => c.ts,
        }
    }

    /// Checks the event time against when the event arrived (see [`Limits::time`]).
    pub fn check_time(&self, arrival: DateTime<Utc>) -> Result<(), ParseError> {
        self.ts()
            .map_or(Ok(()), |ts| Limits::get().time(ts, arrival))
    }
}

/// Namespace for ids derived from a message's origin.
const ORIGIN_NAMESPACE: Uuid = Uuid::from_u128(0x6b61_7070_612d_6a6f_6273_2d6f_7269_6769);

/// The id of an event that carried none: stable for its topic, partition and
/// offset, so a replay derives the same id again.
pub fn derived_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    Uuid::new_v5(
        &ORIGIN_NAMESPACE,
        format!("{topic}/{partition}/{offset}").as_bytes(),
    )
}

#[cfg(test)]
mod tests;
