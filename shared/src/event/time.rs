//! Event times as they are written: RFC 3339, read by both parsers (the
//! fast path of `fast` and the general one of `parse`).

use chrono::{DateTime, Utc};

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
