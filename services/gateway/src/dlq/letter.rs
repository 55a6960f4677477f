//! What a dead letter says: where its record was read (and first read, for
//! a redrive's copy), why it was refused, its event's id, and the first
//! bytes of its payload and key, from the headers every DLQ writer sets
//! (`shared::dlq::header`, `shared::dlq::redrive`).

use chrono::{DateTime, TimeZone, Utc};
use rdkafka::message::{BorrowedMessage, Message};
use serde::{Deserialize, Serialize};
use shared::dlq::{header, redrive as rh};
use utoipa::ToSchema;

/// Bytes of a payload (or key) shown in a listing.
pub(crate) const PREVIEW_BYTES: usize = 256;

/// Where a record is (or was) on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (its event time for events that carried `ts`).
    pub timestamp: Option<DateTime<Utc>>,
    /// For one line of a record of several (an access log): its index there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Origin {
    /// What identifies the record (or line) whatever its timestamp.
    pub(crate) fn place(&self) -> RecordPlace {
        (self.topic.clone(), self.partition, self.offset, self.line)
    }
}

/// A record's (or line's) first origin: topic, partition, offset, line.
pub(crate) type RecordPlace = (String, i32, i64, Option<u32>);

/// How a preview's `data` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes are UTF-8: `data` is the text.
    Text,
    /// They are not: `data` is their standard base64.
    Base64,
}

/// The first bytes of a payload or key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Preview {
    /// The whole payload's size in bytes.
    pub size: usize,
    pub encoding: Encoding,
    /// At most 256 bytes of it, as text or base64.
    pub data: String,
    /// True when `data` shows less than the whole payload.
    pub truncated: bool,
}

/// The last redrive of a dead letter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LastRedrive {
    pub at: DateTime<Utc>,
    /// The `redrive-count` the copy carried.
    pub redrive_count: i64,
    /// Where the copy landed.
    pub to: Origin,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetter {
    /// Its place in the DLQ, `partition:offset`: a cursor, and an id for a redrive.
    pub id: String,
    pub partition: i32,
    pub offset: i64,
    /// Machine-readable reason (`invalid_json`, `unknown_type`, ...); `unknown` if missing.
    pub code: String,
    /// What was wrong, for a person.
    pub reason: String,
    /// When it was dead-lettered.
    pub time: Option<DateTime<Utc>>,
    /// Where the record was read when it was dead-lettered.
    pub origin: Option<Origin>,
    /// For a record redriven before: where it was first read.
    pub first_origin: Option<Origin>,
    /// The event's id: the payload's `id`, else the id consumers derive from its origin.
    pub event_id: Option<String>,
    /// True when `event_id` is derived from the origin (the payload has none).
    pub event_id_derived: bool,
    /// Times the record was redriven before it failed this time (its `redrive-count`).
    pub redrive_count: i64,
    /// Times this dead letter was redriven.
    pub redrives: i64,
    pub last_redrive: Option<LastRedrive>,
    pub key: Option<Preview>,
    pub payload: Preview,
}

/// What the headers and payload of a dead letter say.
pub(crate) struct Meta {
    pub code: String,
    pub reason: String,
    pub origin: Option<Origin>,
    pub first_origin: Option<Origin>,
    pub event_id: Option<String>,
    pub event_id_derived: bool,
    pub redrive_count: i64,
}

pub(crate) fn millis(ms: i64) -> Option<DateTime<Utc>> {
    (ms >= 0)
        .then(|| Utc.timestamp_millis_opt(ms).single())
        .flatten()
}

impl Meta {
    pub(crate) fn of<M: Message>(message: &M) -> Self {
        let text = |name: &str| {
            message
                .headers()
                .and_then(|h| shared::dlq::header_str(h, name))
                .map(str::to_owned)
        };
        let origin = |[topic, partition, offset, timestamp, line]: [&str; 5]| {
            Some(Origin {
                topic: text(topic).filter(|t| !t.is_empty())?,
                partition: text(partition)?.parse().ok()?,
                offset: text(offset)?.parse().ok()?,
                timestamp: text(timestamp)
                    .and_then(|t| t.parse().ok())
                    .and_then(millis),
                line: text(line).and_then(|l| l.parse().ok()),
            })
        };
        let at = origin([
            header::TOPIC,
            header::PARTITION,
            header::OFFSET,
            header::TIMESTAMP,
            header::LINE,
        ]);
        let first = origin([
            rh::ORIGIN_TOPIC,
            rh::ORIGIN_PARTITION,
            rh::ORIGIN_OFFSET,
            rh::ORIGIN_TIMESTAMP,
            rh::ORIGIN_LINE,
        ]);
        // A count that does not parse cannot be shown to be under the limit.
        let redrive_count =
            text(rh::COUNT).map_or(0, |c| c.trim().parse::<u32>().map_or(i64::MAX, i64::from));
        let payload_id = message.payload().and_then(payload_id);
        let derived = payload_id.is_none();
        // As consumers derive it: from where the record was first written.
        let event_id = payload_id.or_else(|| {
            first
                .as_ref()
                .or(at.as_ref())
                .map(|o| shared::event::derived_id(&o.topic, o.partition, o.offset).to_string())
        });
        Self {
            code: text(header::CODE)
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "unknown".into()),
            reason: text(header::REASON).unwrap_or_default(),
            event_id_derived: derived && event_id.is_some(),
            event_id,
            origin: at,
            first_origin: first,
            redrive_count,
        }
    }

    /// Where the record was first written: its first origin, else its origin.
    pub(crate) fn first(&self) -> Option<&Origin> {
        self.first_origin.as_ref().or(self.origin.as_ref())
    }

    pub(crate) fn letter(&self, message: &BorrowedMessage<'_>) -> DeadLetter {
        DeadLetter {
            id: format!("{}:{}", message.partition(), message.offset()),
            partition: message.partition(),
            offset: message.offset(),
            code: self.code.clone(),
            reason: self.reason.clone(),
            time: message.timestamp().to_millis().and_then(millis),
            origin: self.origin.clone(),
            first_origin: self.first_origin.clone(),
            event_id: self.event_id.clone(),
            event_id_derived: self.event_id_derived,
            redrive_count: self.redrive_count,
            redrives: 0,
            last_redrive: None,
            key: message.key().map(preview),
            payload: preview(message.payload().unwrap_or_default()),
        }
    }
}

/// `partition:offset` of a DLQ record.
pub(crate) fn parse_position(text: &str) -> Option<(i32, i64)> {
    let (p, o) = text.trim().split_once(':')?;
    let p: i32 = p.parse().ok()?;
    let o: i64 = o.parse().ok()?;
    (p >= 0 && o >= 0).then_some((p, o))
}

/// Whether `text` can be a reason's code: 1 to 256 bytes, no control characters.
pub(crate) fn is_reason_code(text: &str) -> bool {
    !text.is_empty() && text.len() <= 256 && !text.chars().any(char::is_control)
}

/// The `id` of a JSON object payload.
fn payload_id(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    let id: Id<'_> = serde_json::from_slice(payload).ok()?;
    id.id.map(|id| id.into_owned()).filter(|id| !id.is_empty())
}

/// The first [`PREVIEW_BYTES`] of `bytes`: text if they are UTF-8 (a
/// character cut at the end is left out), else base64.
pub(crate) fn preview(bytes: &[u8]) -> Preview {
    let cut = &bytes[..bytes.len().min(PREVIEW_BYTES)];
    let text = match std::str::from_utf8(cut) {
        Ok(text) => Some(text),
        Err(e) if e.error_len().is_none() && cut.len() < bytes.len() => {
            std::str::from_utf8(&cut[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    let (encoding, data) = match text {
        Some(text) => (Encoding::Text, text.to_owned()),
        None => (Encoding::Base64, base64(cut)),
    };
    Preview {
        size: bytes.len(),
        encoding,
        data,
        truncated: cut.len() < bytes.len(),
    }
}

/// Standard base64 with padding (RFC 4648), for a preview's few bytes.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn previews_are_bounded_text_or_base64() {
        let short = preview(b"{\"type\":\"x\"}");
        assert_eq!(
            (short.encoding, short.truncated, short.size),
            (Encoding::Text, false, 12)
        );
        assert_eq!(short.data, "{\"type\":\"x\"}");

        let long = format!("a{}", "é".repeat(200)); // 401 bytes; byte 256 is inside a character
        let cut = preview(long.as_bytes());
        assert_eq!(
            (cut.encoding, cut.truncated, cut.size),
            (Encoding::Text, true, 401)
        );
        assert_eq!(cut.data, format!("a{}", "é".repeat(127)));

        let binary = preview(&[0xff; 300]);
        assert_eq!(
            (binary.encoding, binary.truncated),
            (Encoding::Base64, true)
        );
        assert_eq!(binary.data.len(), PREVIEW_BYTES.div_ceil(3) * 4);
    }
}
