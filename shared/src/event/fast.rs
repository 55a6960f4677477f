//! The fast path of [`super::parse`]: one pass, no intermediate JSON tree.
//!
//! Envelope fields (`id`, `ts`) may come first; as soon as `type` is read,
//! the rest of the object streams straight into the typed struct, with `id`
//! and `ts` lifted out on the way. When `type` comes after a body field, or
//! anything is wrong, it gives up (`None`) and the caller takes the precise
//! path: error messages come from one place, and both paths accept the same
//! input (a unit test holds them to that).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;
use uuid::Uuid;

use super::schema::{EventBody, EventType};
use super::time::Rfc3339;
use super::Event;

/// Parses an inline event, or `None` when the precise path must decide.
pub fn parse_inline(bytes: &[u8]) -> Option<Event> {
    parse_from(serde_json::Deserializer::from_slice(bytes))
}

/// [`parse_inline`] for text already known to be UTF-8 (strings are then
/// not validated one by one).
pub fn parse_inline_str(text: &str) -> Option<Event> {
    parse_from(serde_json::Deserializer::from_str(text))
}

fn parse_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Option<Event> {
    let event = de::Deserializer::deserialize_map(&mut de, EventVisitor).ok()?;
    de.end().ok()?;
    Some(event)
}

/// The type a record names, read without parsing the rest: the first
/// top-level `type`, other fields before it skipped unread. `None` when it
/// cannot tell (not a JSON object, no `type` before something unreadable, a
/// name that is no type): the precise parse then decides, and explains.
/// What a consumer skips on this answer alone is a record of a type it does
/// not read; the consumers that read the type parse it whole.
pub fn peek_type(bytes: &[u8]) -> Option<EventType> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Stops at `type` with an error of its own making: the rest is not read.
    let _ = de::Deserializer::deserialize_map(&mut de, Peek(&mut found));
    found
}

struct Peek<'a>(&'a mut Option<EventType>);

impl<'de> Visitor<'de> for Peek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.as_str() == "type" {
                let name: Key<'de> = map.next_value()?;
                *self.0 = EventType::from_name(name.as_str());
                return Err(de::Error::custom("peeked"));
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object with `type` before its body fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Event, A::Error> {
        let mut lifting = Lifting {
            inner: map,
            id: None,
            ts: None,
            seen: (false, false),
        };
        let event_type = loop {
            let key = lifting.inner.next_key::<Key<'de>>()?;
            match key.as_ref().map(Key::as_str) {
                Some(name @ ("id" | "ts")) => lifting.lift(name)?,
                Some("type") => {
                    let name: Key<'de> = lifting.inner.next_value()?;
                    break EventType::from_name(name.as_str())
                        .ok_or_else(|| de::Error::custom("unknown type"))?;
                }
                _ => return Err(de::Error::custom("a body field before `type`")),
            }
        };
        let body = EventBody::deserialize_as(
            event_type,
            de::value::MapAccessDeserializer::new(&mut lifting),
        )?;
        Ok(Event {
            id: lifting.id,
            ts: lifting.ts,
            body,
        })
    }
}

/// A map view that lifts `id` and `ts` out of the body's way.
struct Lifting<A> {
    inner: A,
    id: Option<Uuid>,
    ts: Option<DateTime<Utc>>,
    /// Whether `id` and `ts` were seen: a second one is left to the precise
    /// path, which refuses duplicate fields by name.
    seen: (bool, bool),
}

impl<'de, A: MapAccess<'de>> Lifting<A> {
    fn lift(&mut self, name: &str) -> Result<(), A::Error> {
        let seen = if name == "id" {
            &mut self.seen.0
        } else {
            &mut self.seen.1
        };
        if std::mem::replace(seen, true) {
            return Err(de::Error::custom("duplicate envelope field"));
        }
        if name == "id" {
            self.id = self.inner.next_value()?;
        } else {
            self.ts = self.inner.next_value::<Option<Rfc3339>>()?.map(|t| t.0);
        }
        Ok(())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for &mut Lifting<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.inner.next_key::<Key<'de>>()? {
            match key.as_str() {
                // A second `type`: let the precise path decide which one counts.
                "type" => return Err(de::Error::custom("duplicate `type`")),
                name @ ("id" | "ts") => self.lift(name)?,
                name => return seed.deserialize(name.into_deserializer()).map(Some),
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// An object key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
