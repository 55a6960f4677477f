//! The bounds every entry point holds events to (the gateway and every
//! consumer, through the one parser): what a worker or a database would
//! choke on later is refused here, with the field named.
//!
//! - ids (keys and references): non-empty, at most `max_id_bytes`, no
//!   control characters (a NUL is not even storable in PostgreSQL text);
//! - any text: no NUL;
//! - amounts in cents: at most `max_amount_cents`, so that sums of many
//!   stay far inside what every store can add (sums use checked arithmetic);
//! - event times: from 1970 to the arrival time plus `max_future_secs`
//!   (Kafka refuses timestamps more than an hour ahead by default).

use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::ParseError;

/// The `[events]` configuration section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_id_bytes: usize,
    pub max_amount_cents: u64,
    pub max_future_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_id_bytes: 256,
            max_amount_cents: 1_000_000_000_000,
            max_future_secs: 3600,
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

impl Limits {
    /// The process's limits: set once at start-up from configuration
    /// (`shared::service::main`), the defaults until then.
    pub fn get() -> &'static Limits {
        LIMITS.get_or_init(Limits::default)
    }

    /// Sets the process's limits; the first call wins.
    pub fn install(limits: Limits) {
        let _ = LIMITS.set(limits);
    }

    pub(super) fn id(&self, field: &str, value: &str) -> Result<(), ParseError> {
        if value.trim().is_empty() {
            return Err(ParseError::field(field, "must not be empty"));
        }
        if value.len() > self.max_id_bytes {
            return Err(ParseError::field(
                field,
                format!(
                    "is {} bytes long; at most {} bytes",
                    value.len(),
                    self.max_id_bytes
                ),
            ));
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(ParseError::field(
                field,
                format!("contains the control character U+{:04X}", c as u32),
            ));
        }
        Ok(())
    }

    pub(super) fn text(&self, field: &str, value: &str) -> Result<(), ParseError> {
        if value.contains('\0') {
            return Err(ParseError::field(
                field,
                "contains a NUL character (U+0000)",
            ));
        }
        Ok(())
    }

    /// Every string inside a JSON value.
    pub(super) fn json(&self, field: &str, value: &serde_json::Value) -> Result<(), ParseError> {
        use serde_json::Value;
        match value {
            Value::String(s) => self.text(field, s),
            Value::Array(items) => items.iter().try_for_each(|v| self.json(field, v)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                self.text(field, k)?;
                self.json(field, v)
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn email(&self, field: &str, value: &str) -> Result<(), ParseError> {
        email_problem(value).map_or(Ok(()), |problem| Err(ParseError::field(field, problem)))
    }

    pub(super) fn amount(&self, field: &str, cents: Option<u64>) -> Result<(), ParseError> {
        match cents {
            Some(c) if c > self.max_amount_cents => Err(ParseError::field(
                field,
                format!("{c} is more than the {} allowed", self.max_amount_cents),
            )),
            _ => Ok(()),
        }
    }

    /// Checks an event time against the time the event arrived (the Kafka
    /// message timestamp on the stream, the clock at the gateway).
    pub fn time(&self, ts: DateTime<Utc>, arrival: DateTime<Utc>) -> Result<(), ParseError> {
        if ts < DateTime::UNIX_EPOCH {
            return Err(ParseError::TsTooOld(ts));
        }
        let latest = arrival + TimeDelta::seconds(self.max_future_secs);
        if ts > latest {
            return Err(ParseError::TsInFuture {
                ts,
                ahead_secs: self.max_future_secs,
            });
        }
        Ok(())
    }
}

/// Why `value` is not a usable email address, if it is not: one `@` between
/// a non-empty local part and a domain with a dot, at most 254 bytes, no
/// spaces or control characters. (Deliverability is the mail server's call.)
pub fn email_problem(value: &str) -> Option<&'static str> {
    if value.len() > 254 {
        return Some("is longer than 254 bytes");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or control characters");
    }
    let Some((local, domain)) = value.split_once('@') else {
        return Some("expected an email address such as ann@example.com");
    };
    if local.is_empty() || domain.contains('@') {
        return Some("expected an email address such as ann@example.com");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return Some("the domain must have a dot, such as example.com");
    }
    None
}
