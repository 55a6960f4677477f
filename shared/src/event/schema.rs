//! The one list of event types: each line names the type, its `type`
//! string, its body struct and the field that keys it. Everything that
//! depends on the list (the type enum, the body enum, parsing by type, keys,
//! validation) is generated from it, so adding a type touches this list and
//! its struct in `types.rs`, nothing else.

use serde::{Deserialize, Deserializer, Serialize};

use super::limits::Limits;
use super::types::*;
use super::ParseError;

macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident($body:ty) = $name:literal, key $key:ident; )*) => {
        /// Every event type the stream carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum EventType {
            $( #[serde(rename = $name)] $variant, )*
        }

        impl EventType {
            /// All types, in documentation order.
            pub const ALL: [EventType; [$($name),*].len()] = [$(EventType::$variant),*];
            /// How many types there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The `type` string.
            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }

            /// The type named by a `type` string.
            pub fn from_name(name: &str) -> Option<EventType> {
                match name { $($name => Some(EventType::$variant),)* _ => None }
            }

            /// The JSON field that holds this type's key.
            pub fn key_field(self) -> &'static str {
                match self { $(EventType::$variant => stringify!($key),)* }
            }
        }

        /// The typed body of an event; serialized with its `type` tag.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum EventBody {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($body), )*
        }

        impl EventBody {
            /// The type tag of this body.
            pub fn event_type(&self) -> EventType {
                match self { $(EventBody::$variant(_) => EventType::$variant,)* }
            }

            /// The entity the event is about, used as the Kafka key so that
            /// one entity's events stay in one partition, in order.
            pub fn key(&self) -> &str {
                match self { $(EventBody::$variant(e) => &e.$key,)* }
            }

            /// The key, taken out of the body without copying.
            pub fn into_key(self) -> String {
                match self { $(EventBody::$variant(e) => e.$key,)* }
            }

            /// Deserializes the body of an event of type `event_type`.
            pub(super) fn deserialize_as<'de, D: Deserializer<'de>>(
                event_type: EventType,
                deserializer: D,
            ) -> Result<EventBody, D::Error> {
                match event_type {
                    $(EventType::$variant => <$body>::deserialize(deserializer).map(EventBody::$variant),)*
                }
            }

            /// Each type's `type` string and body schema (for `/openapi.json`).
            pub(super) fn body_schemas() -> Vec<(&'static str, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)> {
                vec![$(($name, <$body as utoipa::PartialSchema>::schema()),)*]
            }

            /// The schemas the bodies refer to.
            pub(super) fn referenced_schemas(out: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
                $(<$body as utoipa::ToSchema>::schemas(out);)*
            }

            /// The rules the field types alone do not express.
            pub(super) fn validate(&self, limits: &Limits) -> Result<(), ParseError> {
                match self { $(EventBody::$variant(e) => e.validate(limits),)* }
            }
        }
    };
}

event_types! {
    Interaction(Interaction) = "interaction", key user_id;
    UserUpdated(UserUpdated) = "user_updated", key user_id;
    MailRequested(MailRequested) = "mail_requested", key user_id;
    /// Boxed: by far the largest body, and rare next to interactions.
    ProductUploaded(Box<ProductUploaded>) = "product_uploaded", key product_id;
    AssetProcessed(AssetProcessed) = "asset_processed", key product_id;
    AssetFailed(AssetFailed) = "asset_failed", key product_id;
    ProductCreated(ProductCreated) = "product_created", key product_id;
    ProductFailed(ProductFailed) = "product_failed", key product_id;
    PageAccess(PageAccess) = "page_access", key page;
    MapTask(MapTask) = "map_task", key task;
    PageCount(PageCount) = "page_count", key page;
    ChunkDone(ChunkDone) = "chunk_done", key marker;
}
