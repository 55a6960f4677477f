//! The event's JSON Schema for `/openapi.json`: one object per type, its
//! body's fields beside `type`, `id` and `ts` (the envelope), generated
//! from the type list and the body structs. And the schemas of the strings
//! the parser holds to [`Limits`] (ids, text, emails, times), so that the
//! description says what is refused: services use them for their own
//! parameters and bodies too (`#[schema(schema_with = ...)]`).

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AllOfBuilder, Array, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::limits::Limits;
use super::{Event, EventBody};

/// Characters no id holds: the control characters (Unicode Cc, what
/// `char::is_control` finds) and the bidirectional controls
/// (`crate::text::is_bidi_control`). ECMA-262 escapes, as JSON Schema reads them.
const NOT_IN_IDS: &str = r"\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069";
/// What `str::trim` removes (Unicode White_Space) besides control characters.
const SPACES: &str = r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// `email_problem`'s dot-atom characters.
const ATEXT: &str = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";
/// A host-name label: 1 to 63 letters, digits and inner hyphens.
const LABEL: &str = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
/// `email_problem`'s top-level label is not all digits (not an IP address).
const TOP_NOT_ALL_DIGITS: &str = r"(?![0-9]+$)";
/// And at most 64 bytes come before `@`: a pattern of its own beside the
/// address's (`allOf`), since generators cannot draw from a lookahead that
/// spans the whole local part (schemathesis gives up on it).
const LOCAL_AT_MOST_64: &str = r"^[^@]{1,64}@";

impl PartialSchema for Event {
    fn schema() -> RefOr<Schema> {
        EventBody::body_schemas()
            .into_iter()
            .flat_map(|(name, body)| variants(name, envelope(name, body)))
            .fold(OneOfBuilder::new(), |one_of, object| one_of.item(object))
            .description(Some(
                "One event: `type` selects the fields; `id` (UUID) and `ts` (RFC 3339, from 1970 to an hour after arrival) are optional",
            ))
            .into()
    }
}

impl ToSchema for Event {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Event")
    }

    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        EventBody::referenced_schemas(out);
    }
}

/// A body's object schema with the envelope's fields in front.
fn envelope(name: &'static str, body: RefOr<Schema>) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(body)) = body else {
        return body;
    };
    let tag = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([name]));
    let uuid = nullable(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(name))
        .description(body.description.clone())
        .property("type", tag)
        .property("id", uuid)
        .property("ts", time_or_null())
        .required("type")
        .build();
    object.properties.extend(body.properties);
    object.required.extend(body.required);
    object.additional_properties = body.additional_properties;
    RefOr::T(Schema::Object(object))
}

/// The one rule across fields a `oneOf` says: an interaction is a purchase
/// with its price, or another action with a price or none (`Interaction`'s
/// validation). Every other type is one object.
fn variants(name: &'static str, schema: RefOr<Schema>) -> Vec<RefOr<Schema>> {
    let RefOr::T(Schema::Object(object)) = schema else {
        return vec![schema];
    };
    if name != "interaction" {
        return vec![RefOr::T(Schema::Object(object))];
    }
    let with_actions = |actions: &[&str]| {
        let mut variant = object.clone();
        let action = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(actions.iter().copied()));
        variant.properties.insert("action".into(), action.into());
        variant
    };
    let other = with_actions(&["view", "click", "add_to_cart"]);
    let mut purchase = with_actions(&["purchase"]);
    purchase.title = Some("interaction (purchase)".into());
    purchase
        .properties
        .insert("price_cents".into(), cents(Type::Integer).into());
    purchase.required.push("price_cents".into());
    vec![other, purchase]
        .into_iter()
        .map(|o| RefOr::T(Schema::Object(o)))
        .collect()
}

/// An amount in cents, 0 to `events.max_amount_cents`.
fn cents(schema_type: impl Into<SchemaType>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(schema_type)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(Limits::get().max_amount_cents))
}

/// `price_cents` where it may be absent or null.
pub fn cents_or_null() -> Object {
    cents(SchemaType::from_iter([Type::Integer, Type::Null]))
        .description(Some("Required for purchases, in cents"))
        .build()
}

fn nullable(schema_type: Type) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([schema_type, Type::Null]))
}

fn id_string(builder: ObjectBuilder, also_not: &str) -> Object {
    let max = Limits::get().max_id_bytes;
    let not = format!("{NOT_IN_IDS}{also_not}");
    builder
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(format!("^[^{not}]*[^{not}{SPACES}][^{not}]*$")))
        .description(Some(format!(
            "An id: at most {max} bytes (UTF-8), not only spaces, no control or bidirectional control characters"
        )))
        .build()
}

/// An id (a key or a reference), as the parser holds ids: not blank, at
/// most `events.max_id_bytes` bytes, no control or bidirectional controls.
/// (`maxLength` counts characters: the byte limit is in the description.)
pub fn id() -> Object {
    id_string(ObjectBuilder::new().schema_type(Type::String), "")
}

/// [`id`] without the characters `also_not` (a regex class's body, such as
/// `/` for an id that is a path segment).
pub fn id_without(also_not: &str) -> Object {
    id_string(ObjectBuilder::new().schema_type(Type::String), also_not)
}

/// [`id_without`], or null for absent.
pub fn id_without_or_null(also_not: &str) -> Object {
    id_string(nullable(Type::String), also_not)
}

/// [`id`], or null for absent.
pub fn id_or_null() -> Object {
    id_string(nullable(Type::String), "")
}

/// Free text: anything but NUL (PostgreSQL text cannot hold it).
pub fn text() -> Object {
    text_string(ObjectBuilder::new().schema_type(Type::String))
}

/// [`text`], or null for absent.
pub fn text_or_null() -> Object {
    text_string(nullable(Type::String))
}

fn text_string(builder: ObjectBuilder) -> Object {
    builder.pattern(Some(r"^[^\u0000]*$")).build()
}

/// A bare address, `local@domain`, as `email_problem` accepts it: a
/// dot-atom, `@`, host-name labels with a dot and a top-level label that is
/// not all digits; at most 254 bytes; and at most 64 bytes before `@`.
pub fn email() -> Schema {
    let address = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(254))
        .pattern(Some(format!(
            r"^{ATEXT}+(?:\.{ATEXT}+)*@(?:{LABEL}\.)+{TOP_NOT_ALL_DIGITS}{LABEL}$"
        )));
    let local = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(LOCAL_AT_MOST_64));
    AllOfBuilder::new()
        .item(address)
        .item(local)
        .description(Some(
            "A bare address, `local@domain`: at most 64 bytes before `@` (no display name, quotes, comments or IP literal)",
        ))
        .build()
        .into()
}

/// An RFC 3339 time from 1970 on (the event parser and the stream refuse
/// earlier ones; a later bound, such as "an hour after arrival", is the
/// operation's to say).
pub fn time() -> Object {
    time_string(ObjectBuilder::new().schema_type(Type::String))
}

/// [`time`], or null for absent.
pub fn time_or_null() -> Object {
    time_string(nullable(Type::String))
}

fn time_string(builder: ObjectBuilder) -> Object {
    builder
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        // 1970 on; on 1970-01-01 itself, an offset east of UTC would be 1969.
        .pattern(Some(
            r"^(?!1970-01-01T[^+]*\+)(?:19[7-9][0-9]|[2-9][0-9]{3})-",
        ))
        .build()
}

/// A list of [`id`]s.
pub fn ids() -> Array {
    ArrayBuilder::new().items(id()).build()
}

/// The start of a range of the stream (`http::TimeRange`): `earliest` or
/// a [`time`].
pub fn earliest_or_time() -> RefOr<Schema> {
    earliest_or(time())
}

/// [`earliest_or_time`], or null for `earliest`.
pub fn earliest_or_time_or_null() -> RefOr<Schema> {
    earliest_or(time_or_null())
}

fn earliest_or(time: Object) -> RefOr<Schema> {
    let earliest = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["earliest"]));
    OneOfBuilder::new()
        .item(earliest)
        .item(time)
        .description(Some("`earliest`, or an RFC 3339 time from 1970 on"))
        .into()
}
