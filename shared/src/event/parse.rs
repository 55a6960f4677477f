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

use super::types::*;
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
    #[error("unknown event type `{0}`; expected one of: interaction, user_updated, mail_requested, product_uploaded, asset_processed, asset_failed, product_created, product_failed, page_access")]
    UnknownType(String),
    #[error("missing field `{0}`")]
    MissingField(String),
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("a claim-check envelope where an inline event was expected")]
    UnexpectedClaimCheck,
}

impl ParseError {
    /// A stable machine-readable reason, for DLQ headers, metrics and HTTP errors.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::InvalidJson(_) => "invalid_json",
            ParseError::NotAnObject(_) => "not_an_object",
            ParseError::MissingType => "missing_type",
            ParseError::UnknownType(_) => "unknown_type",
            ParseError::MissingField(_) => "missing_field",
            ParseError::UnknownField(_) => "unknown_field",
            ParseError::InvalidField { .. } => "invalid_field",
            ParseError::UnexpectedClaimCheck => "unexpected_claim_check",
        }
    }

    fn field(field: &str, message: impl Into<String>) -> Self {
        ParseError::InvalidField {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses one message into an inline event or a claim-check envelope.
pub fn parse(bytes: &[u8]) -> Result<Envelope, ParseError> {
    if let Some(event) = super::fast::parse_inline(bytes) {
        if validate(&event.body).is_ok() {
            return Ok(Envelope::Inline(event));
        }
    }
    parse_precisely(bytes)
}

/// The reference parser: builds a JSON tree first, so that every error can
/// name its field. The fast path defers to it whenever it cannot decide.
pub(super) fn parse_precisely(bytes: &[u8]) -> Result<Envelope, ParseError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
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
        return Ok(Envelope::Claimed(ClaimedEvent {
            event_type,
            id,
            ts,
            key,
            claim_check,
        }));
    }

    let rest = Value::Object(map);
    let body = match event_type {
        EventType::Interaction => EventBody::Interaction(typed(rest, "")?),
        EventType::UserUpdated => EventBody::UserUpdated(typed(rest, "")?),
        EventType::MailRequested => EventBody::MailRequested(typed(rest, "")?),
        EventType::ProductUploaded => EventBody::ProductUploaded(Box::new(typed(rest, "")?)),
        EventType::AssetProcessed => EventBody::AssetProcessed(typed(rest, "")?),
        EventType::AssetFailed => EventBody::AssetFailed(typed(rest, "")?),
        EventType::ProductCreated => EventBody::ProductCreated(typed(rest, "")?),
        EventType::ProductFailed => EventBody::ProductFailed(typed(rest, "")?),
        EventType::PageAccess => EventBody::PageAccess(typed(rest, "")?),
    };
    validate(&body)?;
    Ok(Envelope::Inline(Event { id, ts, body }))
}

/// An RFC 3339 time, parsed with chrono's dedicated RFC 3339 parser (several
/// times faster than its generic `FromStr`).
pub(super) struct Rfc3339(pub DateTime<Utc>);

impl<'de> serde::Deserialize<'de> for Rfc3339 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Rfc3339;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 date-time such as 2026-11-26T10:00:00Z")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Rfc3339, E> {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| Rfc3339(t.with_timezone(&Utc)))
                    .map_err(|e| {
                        E::custom(format!(
                            "{e}; expected an RFC 3339 date-time such as 2026-11-26T10:00:00Z"
                        ))
                    })
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Rules the field types alone do not express.
pub(super) fn validate(body: &EventBody) -> Result<(), ParseError> {
    if body.key().trim().is_empty() {
        return Err(ParseError::field(
            key_field(body.event_type()),
            "must not be empty",
        ));
    }
    match body {
        EventBody::Interaction(i) => {
            if i.product_id.trim().is_empty() {
                return Err(ParseError::field("product_id", "must not be empty"));
            }
            if i.action == Action::Purchase && i.price_cents.is_none() {
                return Err(ParseError::field(
                    "price_cents",
                    "required when action is purchase",
                ));
            }
        }
        EventBody::UserUpdated(u) if !u.email.contains('@') => {
            return Err(ParseError::field("email", "expected an email address"));
        }
        _ => {}
    }
    Ok(())
}

/// The JSON field that holds the key of each type.
fn key_field(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Interaction | EventType::UserUpdated | EventType::MailRequested => "user_id",
        EventType::PageAccess => "page",
        _ => "product_id",
    }
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
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        let field = match (prefix, path.as_str()) {
            (p, ".") => p.to_owned(),
            ("", path) => path.to_owned(),
            (p, path) => format!("{p}.{path}"),
        };
        if let Some(name) = quoted_after(&message, "missing field ") {
            ParseError::MissingField(join(prefix, &name))
        } else if let Some(name) = quoted_after(&message, "unknown field ") {
            ParseError::UnknownField(join(prefix, &name))
        } else {
            ParseError::InvalidField { field, message }
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
