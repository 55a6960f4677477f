//! `GET /dlq`'s work: a page of dead letters after a [`Cursor`], with the
//! counts by reason of the whole DLQ as read.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rdkafka::message::Message;
use serde::Serialize;
use utoipa::ToSchema;

use super::letter::{is_reason_code, parse_position, DeadLetter, Meta};
use super::{log, scan, DeadLetterQueue, DlqError, Missing, LIMIT};

/// Where a listing goes on from: per partition, the last offset covered,
/// written `partition:offset` pairs separated by commas (`0:41,2:7`), each
/// partition once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cursor(BTreeMap<i32, i64>);

impl FromStr for Cursor {
    type Err = DlqError;

    fn from_str(text: &str) -> Result<Self, DlqError> {
        let mut cursor = BTreeMap::new();
        if text.trim().is_empty() {
            return Ok(Cursor(cursor));
        }
        for part in text.split(',') {
            let Some((p, o)) = parse_position(part) else {
                return Err(invalid(
                    "after",
                    format!("after must be `partition:offset` pairs separated by commas (the `next` of a page), got `{part}`"),
                ));
            };
            if cursor.insert(p, o).is_some() {
                return Err(invalid("after", format!("after names partition {p} twice")));
            }
        }
        Ok(Cursor(cursor))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (p, o)) in self.0.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            write!(f, "{comma}{p}:{o}")?;
        }
        Ok(())
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// 400 `invalid_parameter` naming `field`.
fn invalid(field: &str, message: impl Into<String>) -> DlqError {
    DlqError::invalid("invalid_parameter", field, message)
}

/// What a listing asks for, checked.
pub(crate) struct ListRequest {
    /// Only dead letters of this reason (code).
    reason: Option<String>,
    after: Cursor,
    limit: usize,
}

impl ListRequest {
    /// The query's parameters as given (text), checked; an empty `reason` is any.
    pub(crate) fn check(
        reason: Option<&str>,
        after: Option<&str>,
        limit: Option<&str>,
    ) -> Result<Self, DlqError> {
        let limit = LIMIT.parse(limit)?;
        let reason = match reason.filter(|r| !r.is_empty()) {
            Some(r) if !is_reason_code(r) => {
                return Err(invalid(
                    "reason",
                    "reason must be a reason's code (1 to 256 bytes)",
                ))
            }
            r => r.map(str::to_owned),
        };
        Ok(ListRequest {
            reason,
            after: after.unwrap_or("").parse()?,
            limit,
        })
    }
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// The DLQ topic.
    pub topic: String,
    /// Dead letters in the DLQ (when this request read it).
    pub total: u64,
    /// Dead letters in the DLQ by reason (code).
    pub counts: BTreeMap<String, u64>,
    /// Dead letters in the DLQ that match `reason`.
    pub matched: u64,
    /// This page: by partition, then offset.
    pub records: Vec<DeadLetter>,
    /// The `after` of the next page: per partition, the last offset this
    /// page covers. Also the cursor to poll for dead letters that arrive later.
    #[schema(value_type = String)]
    pub next: Cursor,
    /// More matching dead letters follow this page (in the DLQ as read).
    pub more: bool,
}

/// What one read of the DLQ found for a listing.
struct Read {
    /// Per partition, the offset it was read up to.
    ends: BTreeMap<i32, i64>,
    counts: BTreeMap<String, u64>,
    total: u64,
    matched: u64,
    /// Matches after the cursor (the page holds the first `limit`).
    following: u64,
    records: Vec<DeadLetter>,
}

impl DeadLetterQueue {
    /// A page of dead letters after `request.after`, read from the DLQ as it
    /// is now, each with its redrives from the log.
    pub(crate) async fn list(
        self: Arc<Self>,
        request: ListRequest,
    ) -> Result<DeadLetterPage, DlqError> {
        let request = Arc::new(request);
        let (dlq, asked) = (self.clone(), request.clone());
        let read = tokio::task::spawn_blocking(move || dlq.read_page(&asked))
            .await?
            .map_err(DlqError::Unreadable)?;
        let after = &request.after.0;
        if let Some(p) = after.keys().find(|p| !read.ends.contains_key(p)) {
            return Err(invalid(
                "after",
                format!(
                    "after names partition {p}; {} has {}",
                    self.topic,
                    read.ends.len()
                ),
            ));
        }
        let more = read.following > read.records.len() as u64;
        // The next cursor: every partition as far as it was read, except when
        // the page ended early, in its last partition and those after it.
        let mut next = after.clone();
        let stop = read
            .records
            .last()
            .filter(|_| more)
            .map(|r| (r.partition, r.offset));
        for (&p, &read_to) in &read.ends {
            let end = match stop {
                Some((last, _)) if p > last => continue,
                Some((last, offset)) if p == last => offset,
                _ => read_to - 1,
            };
            if end >= 0 {
                let at = next.entry(p).or_insert(end);
                *at = (*at).max(end);
            }
        }
        Ok(DeadLetterPage {
            topic: self.topic.clone(),
            total: read.total,
            counts: read.counts,
            matched: read.matched,
            records: read.records,
            next: Cursor(next),
            more,
        })
    }

    /// Reads the DLQ and the redrive log for a page. Blocking.
    fn read_page(&self, request: &ListRequest) -> anyhow::Result<Read> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let (mut total, mut matched) = (0u64, 0u64);
        // Per partition, the first `limit` matches after the cursor (a
        // partition's records arrive in order; partitions interleave).
        let mut firsts: BTreeMap<i32, Vec<DeadLetter>> = BTreeMap::new();
        let mut following = 0u64;
        let ends = scan(&self.kafka, &self.topic, Missing::Fail, |message| {
            let meta = Meta::of(message);
            total += 1;
            *counts.entry(meta.code.clone()).or_default() += 1;
            if request.reason.as_ref().is_some_and(|r| *r != meta.code) {
                return;
            }
            matched += 1;
            let p = message.partition();
            if request
                .after
                .0
                .get(&p)
                .is_some_and(|&o| message.offset() <= o)
            {
                return;
            }
            following += 1;
            let page = firsts.entry(p).or_default();
            if page.len() < request.limit {
                page.push(meta.letter(message));
            }
        })?;
        let mut records: Vec<DeadLetter> = firsts.into_values().flatten().collect();
        records.truncate(request.limit);
        let log = log::read(&self.kafka, &self.log_topic)?;
        for record in &mut records {
            if let Some(entry) = log.letters.get(&(record.partition, record.offset)) {
                record.redrives = entry.redrives;
                record.last_redrive = Some(entry.last.clone());
            }
        }
        Ok(Read {
            ends,
            counts,
            total,
            matched,
            following,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_name_the_field() {
        let cursor: Cursor = "0:41, 2:7".parse().unwrap();
        assert_eq!(cursor.to_string(), "0:41,2:7");
        assert_eq!("".parse::<Cursor>().unwrap(), Cursor::default());
        for bad in ["x", "0:", "-1:3", "0:-2", "1:2,1:3", "0:1;2:3"] {
            let error = bad.parse::<Cursor>().unwrap_err();
            assert!(
                matches!(&error, DlqError::Invalid { field, .. } if field == "after"),
                "{bad}: {error:?}"
            );
        }
    }
}
