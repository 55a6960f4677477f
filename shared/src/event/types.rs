//! The event types and their fields. Field names are the JSON names.

use serde::{Deserialize, Serialize};

/// Every event type the stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Interaction,
    UserUpdated,
    MailRequested,
    ProductUploaded,
    AssetProcessed,
    AssetFailed,
    ProductCreated,
    ProductFailed,
    PageAccess,
}

impl EventType {
    /// All types, in documentation order.
    pub const ALL: [EventType; 9] = [
        EventType::Interaction,
        EventType::UserUpdated,
        EventType::MailRequested,
        EventType::ProductUploaded,
        EventType::AssetProcessed,
        EventType::AssetFailed,
        EventType::ProductCreated,
        EventType::ProductFailed,
        EventType::PageAccess,
    ];

    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Interaction => "interaction",
            EventType::UserUpdated => "user_updated",
            EventType::MailRequested => "mail_requested",
            EventType::ProductUploaded => "product_uploaded",
            EventType::AssetProcessed => "asset_processed",
            EventType::AssetFailed => "asset_failed",
            EventType::ProductCreated => "product_created",
            EventType::ProductFailed => "product_failed",
            EventType::PageAccess => "page_access",
        }
    }

    /// The type named by a `type` string.
    pub fn from_name(name: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The typed body of an event; serialized with its `type` tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Interaction(Interaction),
    UserUpdated(UserUpdated),
    MailRequested(MailRequested),
    /// Boxed: by far the largest body, and rare next to interactions.
    ProductUploaded(Box<ProductUploaded>),
    AssetProcessed(AssetProcessed),
    AssetFailed(AssetFailed),
    ProductCreated(ProductCreated),
    ProductFailed(ProductFailed),
    PageAccess(PageAccess),
}

impl EventBody {
    /// The type tag of this body.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::Interaction(_) => EventType::Interaction,
            EventBody::UserUpdated(_) => EventType::UserUpdated,
            EventBody::MailRequested(_) => EventType::MailRequested,
            EventBody::ProductUploaded(_) => EventType::ProductUploaded,
            EventBody::AssetProcessed(_) => EventType::AssetProcessed,
            EventBody::AssetFailed(_) => EventType::AssetFailed,
            EventBody::ProductCreated(_) => EventType::ProductCreated,
            EventBody::ProductFailed(_) => EventType::ProductFailed,
            EventBody::PageAccess(_) => EventType::PageAccess,
        }
    }

    /// The key, taken out of the body without copying.
    pub fn into_key(self) -> String {
        match self {
            EventBody::Interaction(e) => e.user_id,
            EventBody::UserUpdated(e) => e.user_id,
            EventBody::MailRequested(e) => e.user_id,
            EventBody::ProductUploaded(e) => e.product_id,
            EventBody::AssetProcessed(e) => e.product_id,
            EventBody::AssetFailed(e) => e.product_id,
            EventBody::ProductCreated(e) => e.product_id,
            EventBody::ProductFailed(e) => e.product_id,
            EventBody::PageAccess(e) => e.page,
        }
    }

    /// The entity the event is about, used as the Kafka key so that one
    /// entity's events stay in one partition, in order.
    pub fn key(&self) -> &str {
        match self {
            EventBody::Interaction(e) => &e.user_id,
            EventBody::UserUpdated(e) => &e.user_id,
            EventBody::MailRequested(e) => &e.user_id,
            EventBody::ProductUploaded(e) => &e.product_id,
            EventBody::AssetProcessed(e) => &e.product_id,
            EventBody::AssetFailed(e) => &e.product_id,
            EventBody::ProductCreated(e) => &e.product_id,
            EventBody::ProductFailed(e) => &e.product_id,
            EventBody::PageAccess(e) => &e.page,
        }
    }
}

/// What a user did with a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    View,
    Click,
    AddToCart,
    Purchase,
}

/// A user interacting with a product; purchases carry their price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interaction {
    pub user_id: String,
    pub product_id: String,
    pub action: Action,
    /// Required for purchases, in cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_cents: Option<u64>,
}

/// A user's contact data changed (from the user service's outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdated {
    pub user_id: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Somebody asked for a mail to be sent to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailRequested {
    pub user_id: String,
    pub subject: String,
    pub body: String,
}

/// The branch of the product DAG an asset belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    Image,
    Video,
    Metadata,
}

/// One uploaded file of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadedAsset {
    pub kind: AssetKind,
    pub name: String,
    pub content_type: String,
    /// File content, base64 (standard alphabet).
    pub data: String,
}

/// A seller uploaded a product: metadata plus image and video files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductUploaded {
    pub product_id: String,
    pub seller_id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_cents: Option<u64>,
    #[serde(default)]
    pub assets: Vec<UploadedAsset>,
}

/// One DAG branch finished for a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetProcessed {
    pub product_id: String,
    pub kind: AssetKind,
    /// Branch-specific output (derived sizes, durations, normalised metadata).
    pub result: serde_json::Value,
}

/// One DAG branch failed for a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetFailed {
    pub product_id: String,
    pub kind: AssetKind,
    pub reason: String,
}

/// Every branch finished: the product exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductCreated {
    pub product_id: String,
    pub title: String,
    pub assets: serde_json::Value,
}

/// A branch failed or never reported before the deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductFailed {
    pub product_id: String,
    pub reason: String,
}

/// One page request, as a structured event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageAccess {
    pub page: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}
