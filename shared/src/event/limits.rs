//! The bounds every entry point holds events to (the gateway and every
//! consumer, through the one parser): what a worker or a database would
//! choke on later is refused here, with the field named.
//!
//! - ids (keys and references): non-empty, at most `max_id_bytes`, no
//!   control characters (a NUL is not even storable in PostgreSQL text) and
//!   no bidirectional controls (they make a shown id read as another one);
//! - email addresses: a bare `local@domain` (see [`email_problem`]);
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
        if let Some(c) = crate::text::bidi_control(value) {
            return Err(ParseError::field(
                field,
                format!(
                    "contains the bidirectional control character U+{:04X}",
                    c as u32
                ),
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

    /// A count, size or version: what a PostgreSQL `bigint` holds (every
    /// store keeps them so), as the schema's `format: int64` says.
    pub(super) fn count(&self, field: &str, value: Option<u64>) -> Result<(), ParseError> {
        at_most(field, value, i64::MAX.unsigned_abs(), "64")
    }

    /// A chunk number: what a PostgreSQL `integer` holds, as the schema's
    /// `format: int32` says.
    pub(super) fn index(&self, field: &str, value: u32) -> Result<(), ParseError> {
        at_most(
            field,
            Some(value.into()),
            i32::MAX.unsigned_abs().into(),
            "32",
        )
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

fn at_most(field: &str, value: Option<u64>, max: u64, bits: &str) -> Result<(), ParseError> {
    match value {
        Some(v) if v > max => Err(ParseError::field(
            field,
            format!("{v} is more than {max} (a {bits}-bit signed integer)"),
        )),
        _ => Ok(()),
    }
}

/// Why `value` is not a usable email address, if it is not: a bare
/// `local@domain` and nothing else. The local part is a dot-atom (RFC 5322:
/// letters, digits and ``!#$%&'*+-/=?^_`{|}~``, dots between them), at most
/// 64 bytes; the domain is a host name (letters, digits and hyphens in
/// labels of at most 63, no label starting or ending with a hyphen) with a
/// dot and a top-level label that is not all digits; at most 254 bytes in
/// all. So no display name (`Bob <bob@example.com>`), no quoted local part,
/// no IP literal (`x@[127.0.0.1]`, `x@127.0.0.1`), no spaces or comments: the
/// address is the one the mailer sends to, as it is shown. (Deliverability
/// is the mail server's call.)
pub fn email_problem(value: &str) -> Option<&'static str> {
    const EXAMPLE: &str = "expected a bare address such as ann@example.com";
    if value.len() > 254 {
        return Some("is longer than 254 bytes");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("contains spaces or control characters");
    }
    let Some((local, domain)) = value.split_once('@') else {
        return Some(EXAMPLE);
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Some(EXAMPLE);
    }
    if local.len() > 64 {
        return Some("the part before `@` is longer than 64 bytes");
    }
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    if local
        .split('.')
        .any(|atom| atom.is_empty() || !atom.bytes().all(atext))
    {
        return Some(
            "the part before `@` must be letters, digits, ``!#$%&'*+-/=?^_`{|}~`` and single dots between them (no display name, quotes or angle brackets)",
        );
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let host_label = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(host_label) {
        return Some(
            "the domain must be a host name: letters, digits and hyphens in dot-separated labels (no IP literal or brackets)",
        );
    }
    if labels.len() < 2 {
        return Some("the domain must have a dot, such as example.com");
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("the domain must be a host name, not an IP address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{email_problem, Limits};

    #[test]
    fn only_a_bare_address_is_an_email() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let too_long = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        for refused in [
            "Bob<x@evil.com>",
            "Bob <x@evil.com>",
            "<x@evil.com>",
            "x@evil.com>",
            "x@[127.0.0.1]",
            "x@[IPv6:::1]",
            "x@127.0.0.1",
            "\"bob\"@example.com",
            "bob(comment)@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@b@example.com",
            "a@example",
            "a@example.com.",
            "a@.example.com",
            "a@-example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a@exämple.com",
            "ä@example.com",
            "a@",
            "@example.com",
            "example.com",
            "",
            long_local.as_str(),
            long_label.as_str(),
            too_long.as_str(),
        ] {
            assert!(email_problem(refused).is_some(), "{refused}");
        }
        let longest_local = format!("{}@example.com", "a".repeat(64));
        for accepted in [
            "ann@example.com",
            "first.last+tag@mail.example.co.uk",
            "o'brien@example.ie",
            "x!#$%&'*+-/=?^_`{|}~@a-b.example",
            "u1@shop.example",
            "a@1example.com",
            longest_local.as_str(),
        ] {
            assert_eq!(email_problem(accepted), None, "{accepted}");
        }
    }

    #[test]
    fn ids_refuse_bidirectional_controls() {
        let limits = Limits::default();
        for c in [
            '\u{202E}', '\u{202A}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            let error = limits.id("user_id", &format!("u1{c}x")).unwrap_err();
            assert_eq!(error.code(), "invalid_field");
            assert!(error.to_string().contains("user_id"), "{error}");
            assert!(error.to_string().contains("bidirectional"), "{error}");
        }
        assert!(limits.id("user_id", "u1").is_ok());
    }
}
