//! The event's JSON Schema for `/openapi.json`: one object per type, its
//! body's fields beside `type`, `id` and `ts` (the envelope), generated
//! from the type list and the body structs.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::{Event, EventBody};

impl PartialSchema for Event {
    fn schema() -> RefOr<Schema> {
        EventBody::body_schemas()
            .into_iter()
            .fold(OneOfBuilder::new(), |one_of, (name, body)| {
                one_of.item(envelope(name, body))
            })
            .description(Some(
                "One event: `type` selects the fields; `id` (UUID) and `ts` (RFC 3339) are optional",
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
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(name))
        .description(body.description.clone())
        .property("type", tag)
        .property("id", string(KnownFormat::Uuid))
        .property("ts", string(KnownFormat::DateTime))
        .required("type")
        .build();
    object.properties.extend(body.properties);
    object.required.extend(body.required);
    object.additional_properties = body.additional_properties;
    RefOr::T(Schema::Object(object))
}

fn string(format: KnownFormat) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(format)))
}
