//! The event bodies and their fields (field names are the JSON names), each
//! with the rules its field types alone do not express.

use serde::{Deserialize, Serialize};

use super::limits::Limits;
use super::ParseError;

/// Rules a body's fields must follow beyond their types.
pub(super) trait Validate {
    fn validate(&self, limits: &Limits) -> Result<(), ParseError>;
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

impl Validate for Interaction {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("user_id", &self.user_id)?;
        l.id("product_id", &self.product_id)?;
        l.amount("price_cents", self.price_cents)?;
        if self.action == Action::Purchase && self.price_cents.is_none() {
            return Err(ParseError::field(
                "price_cents",
                "required when action is purchase",
            ));
        }
        Ok(())
    }
}

impl Validate for UserUpdated {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("user_id", &self.user_id)?;
        l.text("email", &self.email)?;
        if !self.email.contains('@') {
            return Err(ParseError::field("email", "expected an email address"));
        }
        self.name.as_deref().map_or(Ok(()), |n| l.text("name", n))
    }
}

impl Validate for MailRequested {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("user_id", &self.user_id)?;
        l.text("subject", &self.subject)?;
        l.text("body", &self.body)
    }
}

impl Validate for ProductUploaded {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.id("seller_id", &self.seller_id)?;
        l.text("title", &self.title)?;
        self.description
            .as_deref()
            .map_or(Ok(()), |d| l.text("description", d))?;
        l.amount("price_cents", self.price_cents)?;
        for asset in &self.assets {
            l.text("assets.name", &asset.name)?;
            l.text("assets.content_type", &asset.content_type)?;
        }
        Ok(())
    }
}

impl Validate for AssetProcessed {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.json("result", &self.result)
    }
}

impl Validate for AssetFailed {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.text("reason", &self.reason)
    }
}

impl Validate for ProductCreated {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.text("title", &self.title)?;
        l.json("assets", &self.assets)
    }
}

impl Validate for ProductFailed {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.text("reason", &self.reason)
    }
}

impl Validate for PageAccess {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("page", &self.page)?;
        self.user_id
            .as_deref()
            .map_or(Ok(()), |u| l.id("user_id", u))
    }
}
