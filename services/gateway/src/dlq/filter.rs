//! Which dead letters a redrive takes: the filter as sent ([`RedriveFilter`],
//! the request's body) and as checked ([`Filter`]).

use std::collections::HashSet;

use serde::Deserialize;
use utoipa::ToSchema;

use super::letter::{is_reason_code, Meta, Origin};
use super::{DlqError, LIMIT};

/// Most entries in a redrive's `ids`.
const MAX_IDS: usize = 1000;

/// Which dead letters to redrive: every given criterion must hold, and at
/// least one must be given (an empty filter is refused, never "all").
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveFilter {
    /// Event ids (a payload's `id`, or the `event_id` a listing shows) and/or
    /// DLQ positions `partition:offset` (a listing's `id`); any may match.
    #[serde(default)]
    ids: Vec<String>,
    /// The reason's code, e.g. `invalid_json`.
    reason: Option<String>,
    /// Dead letters whose origin (or first origin) is in this range.
    origin: Option<OriginRange>,
    /// Redrive dead letters that were redriven before, too; each such
    /// redrive counts toward `dlq.max_redrives`. Default false: they are
    /// refused as `already_redriven`.
    #[serde(default)]
    again: bool,
    /// Decide and answer, but publish nothing.
    #[serde(default)]
    dry_run: bool,
    /// At most this many records are redriven (one copy each, for all their
    /// dead letters), 1 to 1000 (default 100); `more` says if the filter
    /// matched more.
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A range of origins: a topic, a partition, offsets `from_offset` (inclusive)
/// to `to_offset` (exclusive); any field may be left out.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OriginRange {
    topic: Option<String>,
    #[schema(minimum = 0)]
    partition: Option<i32>,
    #[schema(minimum = 0)]
    from_offset: Option<i64>,
    #[schema(minimum = 1)]
    to_offset: Option<i64>,
}

impl OriginRange {
    fn contains(&self, origin: &Origin) -> bool {
        self.topic.as_ref().is_none_or(|t| *t == origin.topic)
            && self.partition.is_none_or(|p| p == origin.partition)
            && self.from_offset.is_none_or(|o| origin.offset >= o)
            && self.to_offset.is_none_or(|o| origin.offset < o)
    }

    fn is_empty(&self) -> bool {
        self.topic.is_none()
            && self.partition.is_none()
            && self.from_offset.is_none()
            && self.to_offset.is_none()
    }
}

/// A checked filter.
pub(crate) struct Filter {
    ids: HashSet<String>,
    reason: Option<String>,
    origin: Option<OriginRange>,
    /// Redrive dead letters redriven before, too.
    pub again: bool,
    pub dry_run: bool,
    /// Records redriven at most.
    pub limit: usize,
}

impl Filter {
    /// The filter as sent, checked: 400 `empty_filter`, `invalid_filter`
    /// naming the field, or `invalid_limit`.
    pub(crate) fn check(filter: RedriveFilter) -> Result<Self, DlqError> {
        let field =
            |field: &str, message: String| DlqError::invalid("invalid_filter", field, message);
        let origin = filter.origin.filter(|o| !o.is_empty());
        if filter.ids.is_empty() && filter.reason.is_none() && origin.is_none() {
            return Err(DlqError::invalid(
                "empty_filter",
                "ids",
                "an empty filter would redrive every dead letter: give ids, a reason or an origin range",
            ));
        }
        if filter.ids.len() > MAX_IDS {
            return Err(field("ids", format!("at most {MAX_IDS} ids per redrive")));
        }
        if let Some(bad) = filter
            .ids
            .iter()
            .find(|id| id.trim().is_empty() || id.len() > 1024)
        {
            return Err(field(
                "ids",
                format!("an id must be 1 to 1024 bytes, got `{bad:.40}`"),
            ));
        }
        if filter.reason.as_deref().is_some_and(|r| !is_reason_code(r)) {
            return Err(field(
                "reason",
                "reason must be a reason's code (1 to 256 bytes)".into(),
            ));
        }
        if let Some(o) = &origin {
            if o.topic.as_ref().is_some_and(|t| t.is_empty()) {
                return Err(field(
                    "origin.topic",
                    "origin.topic must not be empty".into(),
                ));
            }
            if o.partition.is_some_and(|p| p < 0) {
                return Err(field(
                    "origin.partition",
                    "origin.partition must be 0 or more".into(),
                ));
            }
            if o.from_offset.is_some_and(|f| f < 0) {
                return Err(field(
                    "origin.from_offset",
                    "origin.from_offset must be 0 or more".into(),
                ));
            }
            if let Some(to) = o.to_offset {
                if to <= o.from_offset.unwrap_or(0) {
                    return Err(field(
                        "origin.to_offset",
                        "origin.to_offset must be above origin.from_offset (it is exclusive)"
                            .into(),
                    ));
                }
            }
        }
        let limit = LIMIT.check(filter.limit.map(i64::from))?;
        Ok(Self {
            ids: filter
                .ids
                .into_iter()
                .map(|id| id.trim().to_owned())
                .collect(),
            reason: filter.reason,
            origin,
            again: filter.again,
            dry_run: filter.dry_run,
            limit,
        })
    }

    /// Whether the dead letter at `partition:offset` that says `meta` is taken.
    pub(crate) fn matches(&self, meta: &Meta, partition: i32, offset: i64) -> bool {
        (self.ids.is_empty()
            || self.ids.contains(&format!("{partition}:{offset}"))
            || meta.event_id.as_ref().is_some_and(|e| self.ids.contains(e)))
            && self.reason.as_ref().is_none_or(|r| *r == meta.code)
            && self.origin.as_ref().is_none_or(|range| {
                meta.origin.as_ref().is_some_and(|o| range.contains(o))
                    || meta
                        .first_origin
                        .as_ref()
                        .is_some_and(|o| range.contains(o))
            })
    }
}
