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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    View,
    Click,
    AddToCart,
    Purchase,
}

/// A user interacting with a product; purchases carry their price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Interaction {
    #[schema(schema_with = super::openapi::id)]
    pub user_id: String,
    #[schema(schema_with = super::openapi::id)]
    pub product_id: String,
    pub action: Action,
    /// Required for purchases, in cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::cents_or_null)]
    pub price_cents: Option<u64>,
}

/// A user's contact data changed (from the users service's outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdated {
    #[schema(schema_with = super::openapi::id)]
    pub user_id: String,
    #[schema(schema_with = super::openapi::email)]
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::text_or_null)]
    pub name: Option<String>,
    /// The user's version after this change; a reader keeps the highest it
    /// saw (an update typed in without one counts as newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Somebody asked for a mail to be sent to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailRequested {
    #[schema(schema_with = super::openapi::id)]
    pub user_id: String,
    #[schema(schema_with = super::openapi::text)]
    pub subject: String,
    #[schema(schema_with = super::openapi::text)]
    pub body: String,
}

/// The branch of the product DAG a part belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    Image,
    Video,
    Metadata,
}

impl AssetKind {
    pub const ALL: [AssetKind; 3] = [AssetKind::Image, AssetKind::Video, AssetKind::Metadata];

    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Image => "image",
            AssetKind::Video => "video",
            AssetKind::Metadata => "metadata",
        }
    }
}

/// From the text it is stored as (`product_parts.kind`).
impl TryFrom<String> for AssetKind {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        AssetKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("unknown asset kind `{text}`"))
    }
}

/// One uploaded file of a product, in the claim-check store (content
/// addressed: the same bytes are one payload): each branch fetches only its
/// own files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadedAsset {
    /// The part's name in the join (`image-1`, `image-2`, `video`).
    #[schema(schema_with = super::openapi::id)]
    pub part: String,
    pub kind: AssetKind,
    pub token: uuid::Uuid,
    #[schema(schema_with = super::openapi::id)]
    pub sha256: String,
    pub size: u64,
    #[schema(schema_with = super::openapi::text)]
    pub content_type: String,
    /// The file name the seller gave, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::text_or_null)]
    pub name: Option<String>,
}

/// A seller uploaded a product: its metadata inline (as sent; the metadata
/// branch validates it) and its files by claim check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductUploaded {
    #[schema(schema_with = super::openapi::id)]
    pub product_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::id_or_null)]
    pub seller_id: Option<String>,
    pub metadata: serde_json::Value,
    pub assets: Vec<UploadedAsset>,
}

/// The part name of the metadata branch.
pub const METADATA_PART: &str = "metadata";

impl ProductUploaded {
    /// Every part the product waits for: the metadata, then each file.
    pub fn parts(&self) -> impl Iterator<Item = (&str, AssetKind)> {
        std::iter::once((METADATA_PART, AssetKind::Metadata))
            .chain(self.assets.iter().map(|a| (a.part.as_str(), a.kind)))
    }
}

/// One part of a product processed by its branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetProcessed {
    #[schema(schema_with = super::openapi::id)]
    pub product_id: String,
    #[schema(schema_with = super::openapi::id)]
    pub part: String,
    pub kind: AssetKind,
    /// Branch-specific output (dimensions and thumbnail, duration and codec,
    /// normalised metadata).
    pub result: serde_json::Value,
}

/// One part of a product its branch could not accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetFailed {
    #[schema(schema_with = super::openapi::id)]
    pub product_id: String,
    #[schema(schema_with = super::openapi::id)]
    pub part: String,
    pub kind: AssetKind,
    #[schema(schema_with = super::openapi::text)]
    pub reason: String,
}

/// Every part passed: the product exists (`active`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductCreated {
    #[schema(schema_with = super::openapi::id)]
    pub product_id: String,
    #[schema(schema_with = super::openapi::text)]
    pub title: String,
    /// Each part's result, by part name.
    pub parts: serde_json::Value,
}

/// A part failed (`rejected`) or never came before the deadline (`incomplete`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductFailed {
    #[schema(schema_with = super::openapi::id)]
    pub product_id: String,
    /// `rejected` or `incomplete`.
    #[schema(schema_with = super::openapi::id)]
    pub status: String,
    #[schema(schema_with = super::openapi::text)]
    pub reason: String,
    /// Incomplete: the parts that never came.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = super::openapi::ids)]
    pub missing: Vec<String>,
}

/// MapReduce: one map task, a chunk of one partition of the input topic
/// (offsets `start..end`), keyed by `task` so tasks spread over mappers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MapTask {
    #[schema(schema_with = super::openapi::id)]
    pub task: String,
    pub job_id: i64,
    pub chunk: u32,
    #[schema(schema_with = super::openapi::id)]
    pub topic: String,
    pub partition: i32,
    #[schema(minimum = 0)]
    pub start: i64,
    #[schema(minimum = 0)]
    pub end: i64,
    #[schema(schema_with = super::openapi::id)]
    pub shuffle_topic: String,
    #[schema(minimum = 1)]
    pub shuffle_partitions: i32,
    /// Sum per page within the chunk before the shuffle (off: one record per line).
    pub combiner: bool,
}

/// MapReduce: a count for one page from one chunk, keyed by the page, so
/// Kafka's partitioner is the reducers' hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PageCount {
    pub job_id: i64,
    #[schema(schema_with = super::openapi::id)]
    pub page: String,
    pub count: u64,
}

/// MapReduce: a chunk is mapped; sent to every shuffle partition after the
/// chunk's counts, in the same transaction, with the chunk's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkDone {
    #[schema(schema_with = super::openapi::id)]
    pub marker: String,
    pub job_id: i64,
    pub chunk: u32,
    pub lines: u64,
    pub rejected: u64,
    /// Shuffle records and payload bytes this chunk produced.
    pub records: u64,
    pub bytes: u64,
}

/// One page request, as a structured event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PageAccess {
    #[schema(schema_with = super::openapi::id)]
    pub page: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::id_or_null)]
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
        l.email("email", &self.email)?;
        l.count("version", self.version)?;
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
        self.seller_id
            .as_deref()
            .map_or(Ok(()), |s| l.id("seller_id", s))?;
        l.json("metadata", &self.metadata)?;
        for asset in &self.assets {
            l.id("assets.part", &asset.part)?;
            l.id("assets.sha256", &asset.sha256)?;
            l.text("assets.content_type", &asset.content_type)?;
            l.count("assets.size", Some(asset.size))?;
            asset
                .name
                .as_deref()
                .map_or(Ok(()), |n| l.text("assets.name", n))?;
        }
        Ok(())
    }
}

impl Validate for AssetProcessed {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.id("part", &self.part)?;
        l.json("result", &self.result)
    }
}

impl Validate for AssetFailed {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.id("part", &self.part)?;
        l.text("reason", &self.reason)
    }
}

impl Validate for ProductCreated {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.text("title", &self.title)?;
        l.json("parts", &self.parts)
    }
}

impl Validate for ProductFailed {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("product_id", &self.product_id)?;
        l.id("status", &self.status)?;
        l.text("reason", &self.reason)?;
        self.missing.iter().try_for_each(|m| l.id("missing", m))
    }
}

impl Validate for MapTask {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("task", &self.task)?;
        l.id("topic", &self.topic)?;
        l.id("shuffle_topic", &self.shuffle_topic)?;
        l.index("chunk", self.chunk)?;
        if self.start < 0 || self.end < self.start {
            return Err(ParseError::field(
                "end",
                "must not be before start (both >= 0)",
            ));
        }
        if self.shuffle_partitions < 1 {
            return Err(ParseError::field(
                "shuffle_partitions",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Validate for PageCount {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("page", &self.page)?;
        l.count("count", Some(self.count))
    }
}

impl Validate for ChunkDone {
    fn validate(&self, l: &Limits) -> Result<(), ParseError> {
        l.id("marker", &self.marker)?;
        l.index("chunk", self.chunk)?;
        l.count("lines", Some(self.lines))?;
        l.count("rejected", Some(self.rejected))?;
        l.count("records", Some(self.records))?;
        l.count("bytes", Some(self.bytes))
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
