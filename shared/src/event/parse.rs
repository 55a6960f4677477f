//! Parsing: bytes -> typed [`Envelope`], with errors that say which field is
//! wrong and what was expected.
//!
//! Two stages, on purpose: the envelope fields (`type`, `id`, `ts`,
//! `claim_check`) are taken out of the JSON object first, then the rest is
//! deserialized into the struct `type` names. That way an unknown type, a
//! missing field and a wrong field type each get their own precise message
//! (serde's internally tagged enums would blur them).

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::limits::Limits;
use super::schema::{EventBody, EventType};
use super::time::Rfc3339;
use super::{ClaimRef, ClaimedEvent, Envelope, Event};

/// Why a message is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("missing field `type`")]
    MissingType,
    #[error("unknown event type `{0}`; expected one of: interaction, user_updated, mail_requested, product_uploaded, asset_processed, asset_failed, product_created, product_failed, page_access, map_task, page_count, chunk_done")]
    UnknownType(String),
    #[error("missing field `{0}`")]
    MissingField(String),
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("duplicate field `{0}`")]
    DuplicateField(String),
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("a claim-check envelope where an inline event was expected")]
    UnexpectedClaimCheck,
    #[error("field `ts`: {ts} is more than {ahead_secs} s after the event arrived")]
    TsInFuture { ts: DateTime<Utc>, ahead_secs: i64 },
    #[error("field `ts`: {0} is before 1970")]
    TsTooOld(DateTime<Utc>),
}

impl ParseError {
    /// Every [`ParseError::code`].
    pub const CODES: [&'static str; 11] = [
        "invalid_json",
        "not_an_object",
        "missing_type",
        "unknown_type",
        "missing_field",
        "unknown_field",
        "duplicate_field",
        "invalid_field",
        "unexpected_claim_check",
        "ts_in_future",
        "ts_too_old",
    ];

    /// A stable machine-readable reason, for DLQ headers, metrics and HTTP errors.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::InvalidJson(_) => "invalid_json",
            ParseError::NotAnObject(_) => "not_an_object",
            ParseError::MissingType => "missing_type",
            ParseError::UnknownType(_) => "unknown_type",
            ParseError::MissingField(_) => "missing_field",
            ParseError::UnknownField(_) => "unknown_field",
            ParseError::DuplicateField(_) => "duplicate_field",
            ParseError::InvalidField { .. } => "invalid_field",
            ParseError::UnexpectedClaimCheck => "unexpected_claim_check",
            ParseError::TsInFuture { .. } => "ts_in_future",
            ParseError::TsTooOld(_) => "ts_too_old",
        }
    }

    pub(super) fn field(field: &str, message: impl Into<String>) -> Self {
        ParseError::InvalidField {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses one message into an inline event or a claim-check envelope.
pub fn parse(bytes: &[u8]) -> Result<Envelope, ParseError> {
    if let Some(event) = super::fast::parse_inline(bytes) {
        if event.body.validate(Limits::get()).is_ok() {
            return Ok(Envelope::Inline(event));
        }
    }
    parse_precisely(bytes)
}

/// The reference parser: builds a JSON tree first, so that every error can
/// name its field. The fast path defers to it whenever it cannot decide.
pub(super) fn parse_precisely(bytes: &[u8]) -> Result<Envelope, ParseError> {
    let value = strict_json(bytes)?;
    let mut map = match value {
        Value::Object(map) => map,
        other => return Err(ParseError::NotAnObject(json_kind(&other))),
    };
    let event_type = match map.remove("type") {
        None => return Err(ParseError::MissingType),
        Some(Value::String(name)) => {
            EventType::from_name(&name).ok_or(ParseError::UnknownType(name))?
        }
        Some(other) => {
            return Err(ParseError::field(
                "type",
                format!("expected a string, found {}", json_kind(&other)),
            ))
        }
    };
    let id: Option<Uuid> = take(&mut map, "id")?;
    let ts = take::<Rfc3339>(&mut map, "ts")?.map(|t| t.0);

    if map.contains_key("claim_check") {
        let claim_check: ClaimRef = take(&mut map, "claim_check")?.expect("checked above");
        let key: String = take(&mut map, "key")?.ok_or(ParseError::MissingField("key".into()))?;
        if let Some(extra) = map.keys().next() {
            return Err(ParseError::UnknownField(extra.clone()));
        }
        Limits::get().id("key", &key)?;
        return Ok(Envelope::Claimed(ClaimedEvent {
            event_type,
            id,
            ts,
            key,
            claim_check,
        }));
    }

    let mut track = serde_path_to_error::Track::new();
    let body = EventBody::deserialize_as(
        event_type,
        serde_path_to_error::Deserializer::new(Value::Object(map), &mut track),
    )
    .map_err(|e| named(track.path().to_string(), e.to_string(), ""))?;
    body.validate(Limits::get())?;
    Ok(Envelope::Inline(Event { id, ts, body }))
}

/// Removes an optional field and deserializes it; `null` counts as absent.
fn take<T: DeserializeOwned>(
    map: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<T>, ParseError> {
    match map.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => typed(value, name).map(Some),
    }
}

/// Deserializes a value, naming the path of the first offending field.
/// `prefix` is the field the value came from ("" for the event body).
fn typed<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value)
        .map_err(|err| named(err.path().to_string(), err.inner().to_string(), prefix))
}

/// The error for `message` at `path` (under `prefix`, "" for the body).
fn named(path: String, message: String, prefix: &str) -> ParseError {
    let field = match (prefix, path.as_str()) {
        (p, ".") => p.to_owned(),
        ("", path) => path.to_owned(),
        (p, path) => format!("{p}.{path}"),
    };
    if let Some(name) = quoted_after(&message, "missing field ") {
        ParseError::MissingField(join(prefix, &name))
    } else if let Some(name) = quoted_after(&message, "unknown field ") {
        ParseError::UnknownField(join(prefix, &name))
    } else if let Some(name) = quoted_after(&message, "duplicate field ") {
        ParseError::DuplicateField(join(prefix, &name))
    } else {
        ParseError::InvalidField { field, message }
    }
}

/// JSON into a tree, refusing an object that names a field twice (which
/// one would count differs between parsers; no guessing).
fn strict_json(bytes: &[u8]) -> Result<Value, ParseError> {
    struct Strict(Value);
    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor).map(Strict)
        }
    }
    struct StrictVisitor;
    impl<'de> serde::de::Visitor<'de> for StrictVisitor {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(Strict(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(Value::Array(items))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format_args!(
                        "duplicate field `{key}`"
                    )));
                }
                let Strict(value) = map.next_value()?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed =
        serde::Deserialize::deserialize(&mut de).and_then(|Strict(v)| de.end().map(|()| v));
    parsed.map_err(|e| {
        let message = e.to_string();
        match quoted_after(&message, "duplicate field ") {
            Some(name) => ParseError::DuplicateField(name),
            None => ParseError::InvalidJson(message),
        }
    })
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `name` from serde messages such as "missing field `name`".
fn quoted_after(message: &str, lead: &str) -> Option<String> {
    let rest = message.strip_prefix(lead)?.strip_prefix('`')?;
    rest.split('`').next().map(str::to_owned)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
