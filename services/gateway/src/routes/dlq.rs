//! `GET /dlq`, `POST /dlq/redrive`: the dead-letter queue as a tool.
//!
//! Both read the DLQ topic from its earliest offsets up to the end offsets
//! of the moment (a snapshot), with a short-lived reader that is assigned the
//! partitions and joins no group. The list pages through it with a cursor
//! of per-partition offsets and counts every dead letter by reason (its
//! code). A redrive republishes the original record of the matching dead
//! letters (payload, key, its own headers, its event time; a `key_mismatch`
//! is keyed by its entity instead) to its origin topic with a `redrive-count` header and its first origin
//! (`redrive.origin.*`, see [`shared::dlq::redrive`]); the DLQ writers
//! carry those headers into the next dead letter if the copy fails again,
//! so `dlq.max_redrives` holds across loops.
//!
//! One record, one copy: every consumer group that refuses a record writes
//! a dead letter of its own, and a page-count job writes one per bad line
//! each time it reads it; a redrive republishes each record (each line:
//! its first origin) once, whatever number of dead letters stand for it,
//! and marks them all redriven. A copy of an event without an id is given
//! the id derived from its first origin by every consumer
//! ([`shared::consume::Received::given_id`]), so a copy redriven again is a
//! repeat they skip, and a record that fails again comes back as one copy,
//! never as many as there were dead letters.
//!
//! Which dead letters were redriven is kept on the broker, in the redrive
//! log `<dlq topic>.redrives` (one partition, kept forever; created by the
//! first redrive): one record per redrive, keyed by the dead letter's place, written
//! in the same Kafka transaction as the copies. So a redrive is atomic (the
//! copies and their log records are committed together, or neither), and
//! the same dead letter is redriven once, again only when asked (`again`),
//! each time counting toward the maximum. Redrives are serialized: one at a
//! time per process, and across gateways by the transactional id
//! (`kappa-dlq-redrive-<dlq topic>`), which fences a concurrent one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use chrono::{DateTime, TimeZone, Utc};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use shared::config::{KafkaConfig, Settings};
use shared::dlq::{header, redrive as rh};
use shared::http::{Admin, ApiError, Json, Query};
use shared::kafka::bounded::{self, Limits};
use shared::kafka::ReaderContext;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;

/// Bytes of a payload (or key) shown in a listing.
pub(crate) const PREVIEW_BYTES: usize = 256;
/// Records per page (or per redrive) unless asked otherwise, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Most entries in a redrive's `ids`.
const MAX_IDS: usize = 1000;
/// Refused dead letters listed in a redrive's answer (all are counted).
const MAX_REFUSED_LISTED: usize = 1000;
/// A read of the DLQ that receives nothing for this long fails (503).
const STALL: Duration = Duration::from_secs(15);
/// How long a transaction call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a redrive refuses a dead letter (the `why` of an answer and of
/// `kappa_dlq_redrive_refused_total`).
const REFUSALS: [&str; 4] = [
    "max_redrives",
    "already_redriven",
    "no_origin",
    "origin_topic_not_allowed",
];

/// What the DLQ routes share.
pub(crate) struct DeadLetterQueue {
    kafka: KafkaConfig,
    topic: String,
    /// The redrive log, `<topic>.redrives`.
    log_topic: String,
    log_ready: AtomicBool,
    max_redrives: u32,
    /// Topics a redrive may write to: the stream's own (a dead letter names
    /// its origin in headers anyone can write, so it is not trusted blindly).
    targets: Vec<String>,
    /// One redrive at a time in this process (across processes, the
    /// transactional id fences).
    redriving: tokio::sync::Mutex<()>,
}

impl DeadLetterQueue {
    /// The DLQ of `settings.kafka.dlq_topic`. Touches no broker: the
    /// gateway starts without one.
    pub(crate) fn new(settings: &Settings) -> Self {
        for why in REFUSALS {
            shared::catalogue::zero(
                "kappa_dlq_redrive_refused_total",
                &[("why", why.to_owned())],
            );
        }
        let topic = settings.kafka.dlq_topic.clone();
        Self {
            kafka: settings.kafka.clone(),
            log_topic: log_topic(&topic),
            topic,
            log_ready: AtomicBool::new(false),
            max_redrives: settings.dlq.max_redrives,
            targets: vec![
                settings.kafka.events_topic.clone(),
                settings.kafka.access_logs_topic.clone(),
            ],
            redriving: tokio::sync::Mutex::new(()),
        }
    }

    /// Creates the redrive log unless it exists (once per process).
    async fn ensure_log(&self) -> Result<(), ApiError> {
        if self.log_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        shared::kafka::ensure_topic(&self.kafka, &self.log_topic, 1, -1)
            .await
            .map_err(unreadable)?;
        self.log_ready.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The redrive log of the DLQ `topic`.
fn log_topic(topic: &str) -> String {
    format!("{topic}.redrives")
}

// ---------------------------------------------------------------- answers

/// Where a record is (or was) on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (its event time for events that carried `ts`).
    pub timestamp: Option<DateTime<Utc>>,
    /// For one line of a record of several (an access log): its index there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Origin {
    /// What identifies the record (or line) whatever its timestamp.
    fn place(&self) -> RecordPlace {
        (self.topic.clone(), self.partition, self.offset, self.line)
    }
}

/// A record's (or line's) first origin: topic, partition, offset, line.
type RecordPlace = (String, i32, i64, Option<u32>);

/// How a preview's `data` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes are UTF-8: `data` is the text.
    Text,
    /// They are not: `data` is their standard base64.
    Base64,
}

/// The first bytes of a payload or key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Preview {
    /// The whole payload's size in bytes.
    pub size: usize,
    pub encoding: Encoding,
    /// At most 256 bytes of it, as text or base64.
    pub data: String,
    /// True when `data` shows less than the whole payload.
    pub truncated: bool,
}

/// The last redrive of a dead letter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LastRedrive {
    pub at: DateTime<Utc>,
    /// The `redrive-count` the copy carried.
    pub redrive_count: i64,
    /// Where the copy landed.
    pub to: Origin,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetter {
    /// Its place in the DLQ, `partition:offset`: a cursor, and an id for a redrive.
    pub id: String,
    pub partition: i32,
    pub offset: i64,
    /// Machine-readable reason (`invalid_json`, `unknown_type`, ...); `unknown` if missing.
    pub code: String,
    /// What was wrong, for a person.
    pub reason: String,
    /// When it was dead-lettered.
    pub time: Option<DateTime<Utc>>,
    /// Where the record was read when it was dead-lettered.
    pub origin: Option<Origin>,
    /// For a record redriven before: where it was first read.
    pub first_origin: Option<Origin>,
    /// The event's id: the payload's `id`, else the id consumers derive from its origin.
    pub event_id: Option<String>,
    /// True when `event_id` is derived from the origin (the payload has none).
    pub event_id_derived: bool,
    /// Times the record was redriven before it failed this time (its `redrive-count`).
    pub redrive_count: i64,
    /// Times this dead letter was redriven.
    pub redrives: i64,
    pub last_redrive: Option<LastRedrive>,
    pub key: Option<Preview>,
    pub payload: Preview,
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
    pub next: String,
    /// More matching dead letters follow this page (in the DLQ as read).
    pub more: bool,
}

// ---------------------------------------------------------------- GET /dlq

/// `GET /dlq` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only dead letters with this reason: their code, e.g. `invalid_json`
    /// (at most 256 bytes, no control characters; empty: any reason).
    #[param(max_length = 256, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    reason: Option<String>,
    /// The cursor: the `next` of the previous page, `partition:offset`
    /// pairs separated by commas (`0:41,2:7`), each partition once; a page
    /// holds what follows them. Partitions not named start at their
    /// earliest offset.
    #[param(pattern = r"^(?:\+?[0-9]{1,9}:\+?[0-9]{1,18}(?:,\+?[0-9]{1,9}:\+?[0-9]{1,18})*)?$")]
    after: Option<String>,
    /// Dead letters per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// 400 naming `field`.
fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_parameter", message).with("field", field)
}

fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.trim().parse::<usize>() {
        Ok(n @ 1..=MAX_LIMIT) => Ok(n),
        _ => Err(invalid(
            "limit",
            format!("limit must be a whole number from 1 to {MAX_LIMIT}, got `{text}`"),
        )),
    }
}

fn parse_reason(field: &str, reason: Option<&str>) -> Result<Option<String>, ApiError> {
    match reason {
        None => Ok(None),
        Some(r) if r.is_empty() || r.len() > 256 || r.chars().any(char::is_control) => {
            Err(invalid(
                field,
                format!("{field} must be a reason's code (1 to 256 bytes)"),
            ))
        }
        Some(r) => Ok(Some(r.to_owned())),
    }
}

/// `partition:offset` of a DLQ record.
fn parse_position(text: &str) -> Option<(i32, i64)> {
    let (p, o) = text.trim().split_once(':')?;
    let p: i32 = p.parse().ok()?;
    let o: i64 = o.parse().ok()?;
    (p >= 0 && o >= 0).then_some((p, o))
}

/// A cursor: per partition, the last offset covered.
pub(crate) fn parse_cursor(text: &str) -> Result<BTreeMap<i32, i64>, ApiError> {
    let mut cursor = BTreeMap::new();
    if text.trim().is_empty() {
        return Ok(cursor);
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
    Ok(cursor)
}

pub(crate) fn format_cursor(cursor: &BTreeMap<i32, i64>) -> String {
    let mut out = String::new();
    for (p, o) in cursor {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{p}:{o}");
    }
    out
}

/// Lists the dead-letter queue, a page at a time, with counts by reason.
///
/// Reads the DLQ topic from its earliest offsets up to its end offsets at
/// the time of the request. Each dead letter comes with its reason and code,
/// its origin (topic, partition, offset, time), the first 256 bytes of its
/// payload and key (text if UTF-8, else base64), its `redrive-count` and
/// whether it was redriven from here. Records are ordered by partition,
/// then offset; pass `next` as `after` for the next page (or, later, for
/// what arrived since).
#[utoipa::path(get, path = "/dlq", tag = "gateway", operation_id = "list_dead_letters",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of dead letters and the counts by reason", body = DeadLetterPage),
        (status = 503, description = "The DLQ topic or the redrive log could not be read; retry", body = shared::http::openapi::ErrorBody)))]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<DeadLetterPage>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let reason = parse_reason("reason", query.reason.as_deref().filter(|r| !r.is_empty()))?;
    let after = parse_cursor(query.after.as_deref().unwrap_or(""))?;
    let dlq = state.dlq.clone();
    let (ends, counts, total, matched, following, records) = {
        let dlq = dlq.clone();
        let after = after.clone();
        tokio::task::spawn_blocking(move || {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let (mut total, mut matched) = (0u64, 0u64);
            // Per partition, the first `limit` matches after the cursor (a
            // partition's records arrive in order; partitions interleave).
            let mut firsts: BTreeMap<i32, Vec<DeadLetter>> = BTreeMap::new();
            let mut following = 0u64;
            let ends = scan(&dlq.kafka, &dlq.topic, Missing::Fail, |message| {
                let meta = Meta::of(message);
                total += 1;
                *counts.entry(meta.code.clone()).or_default() += 1;
                if reason.as_ref().is_some_and(|r| *r != meta.code) {
                    return;
                }
                matched += 1;
                let p = message.partition();
                if after.get(&p).is_some_and(|&o| message.offset() <= o) {
                    return;
                }
                following += 1;
                let page = firsts.entry(p).or_default();
                if page.len() < limit {
                    page.push(meta.letter(message));
                }
            })?;
            let mut records: Vec<DeadLetter> = firsts.into_values().flatten().collect();
            records.truncate(limit);
            let log = read_log(&dlq.kafka, &dlq.log_topic)?;
            for record in &mut records {
                if let Some(entry) = log.letters.get(&(record.partition, record.offset)) {
                    record.redrives = entry.redrives;
                    record.last_redrive = Some(entry.last.clone());
                }
            }
            anyhow::Ok((ends, counts, total, matched, following, records))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(unreadable)?
    };
    if let Some(p) = after.keys().find(|p| !ends.contains_key(p)) {
        return Err(invalid(
            "after",
            format!(
                "after names partition {p}; {} has {}",
                dlq.topic,
                ends.len()
            ),
        ));
    }

    let more = following > records.len() as u64;
    // The next cursor: every partition as far as it was read, except when
    // the page ended early, in its last partition and those after it.
    let mut next = after.clone();
    let stop = records
        .last()
        .filter(|_| more)
        .map(|r| (r.partition, r.offset));
    for (&p, &read_to) in &ends {
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
    Ok(axum::Json(DeadLetterPage {
        topic: dlq.topic.clone(),
        total,
        counts,
        matched,
        records,
        next: format_cursor(&next),
        more,
    }))
}

fn unreadable(error: anyhow::Error) -> ApiError {
    ApiError::unavailable(
        "dlq_unavailable",
        "the dead-letter topic could not be read; retry shortly",
    )
    .caused_by(format!("{error:#}"))
}

// ---------------------------------------------------------------- POST /dlq/redrive

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
struct Filter {
    ids: HashSet<String>,
    reason: Option<String>,
    origin: Option<OriginRange>,
    again: bool,
    dry_run: bool,
    limit: usize,
}

impl Filter {
    fn check(filter: RedriveFilter) -> Result<Self, ApiError> {
        let field = |field: &str, message: String| {
            ApiError::bad_request("invalid_filter", message).with("field", field)
        };
        let origin = filter.origin.filter(|o| !o.is_empty());
        if filter.ids.is_empty() && filter.reason.is_none() && origin.is_none() {
            return Err(ApiError::bad_request(
                "empty_filter",
                "an empty filter would redrive every dead letter: give ids, a reason or an origin range",
            )
            .with("field", "ids"));
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
        let reason = parse_reason("reason", filter.reason.as_deref()).map_err(|_| {
            field(
                "reason",
                "reason must be a reason's code (1 to 256 bytes)".into(),
            )
        })?;
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
        let limit = match filter.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT as u32).contains(&n) => n as usize,
            Some(n) => {
                return Err(field(
                    "limit",
                    format!("limit must be from 1 to {MAX_LIMIT}, got {n}"),
                ))
            }
        };
        Ok(Self {
            ids: filter
                .ids
                .into_iter()
                .map(|id| id.trim().to_owned())
                .collect(),
            reason,
            origin,
            again: filter.again,
            dry_run: filter.dry_run,
            limit,
        })
    }

    fn matches(&self, meta: &Meta, partition: i32, offset: i64) -> bool {
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

/// A record a redrive republished (or, in a dry run, would), once for all
/// its dead letters the filter matched.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redriven {
    /// The place in the DLQ of the first of its dead letters, `partition:offset`.
    pub id: String,
    /// Every dead letter of the record the copy stands for (each consumer
    /// group that refused it wrote one), `id` first; all are marked redriven.
    pub dead_letters: Vec<String>,
    pub code: String,
    pub event_id: Option<String>,
    /// Where the record was first read (the copy's `redrive.origin.*`).
    pub origin: Origin,
    /// The copy's `redrive-count`.
    pub redrive_count: i64,
    /// True when this dead letter had been redriven before (`again`).
    pub again: bool,
    /// True when the copy is keyed by its entity instead of the original
    /// key (a `key_mismatch` dead letter).
    pub rekeyed: bool,
    /// Where the copy landed; null in a dry run.
    pub to: Option<Origin>,
}

/// A dead letter a redrive refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct Refused {
    /// Its place in the DLQ, `partition:offset`.
    pub id: String,
    pub code: String,
    pub event_id: Option<String>,
    pub origin: Option<Origin>,
    /// `max_redrives`, `already_redriven`, `no_origin` or `origin_topic_not_allowed`.
    pub why: String,
    pub message: String,
    /// Redrives counted against the maximum so far: the record's
    /// `redrive-count` plus this dead letter's own redrives.
    pub redrive_count: i64,
    pub last_redrive: Option<LastRedrive>,
}

/// What a redrive did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveAnswer {
    pub dry_run: bool,
    /// Dead letters the filter matched in the DLQ (when this request read it).
    pub matched: u64,
    /// `dlq.max_redrives`.
    pub max_redrives: u32,
    pub redriven: Vec<Redriven>,
    /// Refused dead letters (the first 1000; `refused_counts` counts all).
    pub refused: Vec<Refused>,
    /// Refused dead letters by `why`.
    pub refused_counts: BTreeMap<String, u64>,
    /// The filter matched more records that could be redriven than
    /// `limit`: send it again for the next ones.
    pub more: bool,
}

/// A record that may be redriven, with what its copy needs.
struct Candidate {
    /// Its first dead letter the filter matched.
    message: OwnedMessage,
    /// The copy's key.
    key: Option<Vec<u8>>,
    redriven: Redriven,
}

/// The reason code of a record keyed by anything but its entity
/// (`shared::consume`): its copy is keyed by the entity, or it would fail
/// the same way again.
const KEY_MISMATCH: &str = "key_mismatch";

/// The key a dead letter's copy is produced with: the original, except for
/// a `key_mismatch` (the event's entity, when the payload parses).
fn copy_key(code: &str, message: &BorrowedMessage<'_>) -> (Option<Vec<u8>>, bool) {
    let original = message.key().map(<[u8]>::to_vec);
    if code != KEY_MISMATCH {
        return (original, false);
    }
    match message.payload().map(shared::event::parse) {
        Some(Ok(envelope)) => {
            let entity = envelope.key().as_bytes().to_vec();
            let rekeyed = original.as_deref() != Some(entity.as_slice());
            (Some(entity), rekeyed)
        }
        _ => (original, false),
    }
}

/// Republishes the original records of the dead letters a filter matches.
///
/// Each matching dead letter's original record goes back to its origin topic:
/// the same payload and key (a `key_mismatch` is keyed by its entity: the
/// key was what was wrong), its own headers, its event time, plus
/// `redrive-count` (the record's count + 1) and where it was first read
/// (`redrive.origin.topic|partition|offset|timestamp`) and redriven from
/// (`redrive.dlq.topic|partition|offset`). Refused, and listed with the
/// reason: a dead letter whose record was redriven `dlq.max_redrives` times
/// already; one redriven from here before, unless `again` is set (then it
/// counts toward the maximum); one without an origin, or whose origin is not
/// the stream's topic. An empty filter is a 400. The copies and the redrive
/// log's records are one Kafka transaction: all are published, or none.
#[utoipa::path(post, path = "/dlq/redrive", tag = "gateway", operation_id = "redrive_dead_letters",
    security(("bearer" = [])),
    request_body = RedriveFilter,
    responses(
        (status = 200, description = "What was redriven and what was refused, and why", body = RedriveAnswer),
        (status = 503, description = "The DLQ could not be read or the transaction failed (broker down, or a redrive ran at the same time on another gateway): nothing was redriven; send the filter again", body = shared::http::openapi::ErrorBody)))]
pub async fn redrive(
    _: Admin,
    State(state): State<AppState>,
    Json(filter): Json<RedriveFilter>,
) -> Result<axum::Json<RedriveAnswer>, ApiError> {
    let filter = Filter::check(filter)?;
    let dlq = state.dlq.clone();
    dlq.ensure_log().await?;
    // On a task of its own: a client that hangs up does not cancel a
    // redrive halfway (an open transaction would wait for its timeout).
    tokio::spawn(async move { dlq.redrive(filter).await })
        .await
        .map_err(ApiError::internal)?
}

/// Why a dead letter is not redriven.
struct Refusal {
    why: &'static str,
    message: String,
    count: i64,
}

impl Refusal {
    fn of(self, meta: &Meta, partition: i32, offset: i64, entry: Option<&LogEntry>) -> Refused {
        Refused {
            id: format!("{partition}:{offset}"),
            code: meta.code.clone(),
            event_id: meta.event_id.clone(),
            origin: meta.origin.clone(),
            why: self.why.to_owned(),
            message: self.message,
            redrive_count: self.count,
            last_redrive: entry.map(|e| e.last.clone()),
        }
    }
}

/// A transactional producer with the redrive's id: earlier transactions of
/// that id (another gateway's redrive, one left open) are fenced and aborted.
fn transactional(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<FutureProducer> {
    let producer: FutureProducer = shared::kafka::producer_config(kafka)
        .set("transactional.id", format!("kappa-dlq-redrive-{topic}"))
        .set("transaction.timeout.ms", "60000")
        .create()
        .context("creating the redrive's transactional producer")?;
    producer
        .init_transactions(TXN_TIMEOUT)
        .context("initialising transactions")?;
    Ok(producer)
}

/// 503: the redrive's transaction did not commit; nothing is visible.
fn not_committed(error: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(
        "redrive_failed",
        "the redrive could not be committed (the broker is unavailable, or a redrive ran at the same time on another gateway); nothing was redriven: send the filter again",
    )
    .caused_by(error)
}

impl DeadLetterQueue {
    /// Whether a dead letter may be redriven: its first origin and the
    /// copy's `redrive-count` if so. `published` is the highest count of the
    /// copies of its record redriven so far (from any of its dead letters).
    fn judge(
        &self,
        meta: &Meta,
        entry: Option<&LogEntry>,
        published: i64,
        again: bool,
    ) -> Result<(Origin, i64), Refusal> {
        let prior = entry.map_or(0, |e| e.redrives);
        let count = meta.redrive_count.saturating_add(prior).max(published);
        let Some(first) = meta.first().cloned() else {
            return Err(Refusal {
                why: "no_origin",
                message: "the dead letter names no origin topic, partition and offset".into(),
                count,
            });
        };
        if !self.targets.contains(&first.topic) {
            return Err(Refusal {
                why: "origin_topic_not_allowed",
                message: format!(
                    "its origin topic {} is not one a redrive writes to ({})",
                    first.topic,
                    self.targets.join(", ")
                ),
                count,
            });
        }
        // Redriven since it failed: this dead letter (or another consumer's
        // of the same record) was redriven after it was written.
        if (prior > 0 || published > meta.redrive_count) && !again {
            return Err(Refusal {
                why: "already_redriven",
                message: format!(
                    "its record was redriven {count} time(s) already, the last after this dead letter was written; set `again` to redrive it once more (it counts toward the maximum of {})",
                    self.max_redrives
                ),
                count,
            });
        }
        if count >= i64::from(self.max_redrives) {
            return Err(Refusal {
                why: "max_redrives",
                message: format!(
                    "the record was redriven {count} time(s); the maximum is {} (dlq.max_redrives)",
                    self.max_redrives
                ),
                count,
            });
        }
        Ok((first, count + 1))
    }

    /// The whole redrive: fence, read the log, choose, publish, commit.
    async fn redrive(
        self: Arc<Self>,
        filter: Filter,
    ) -> Result<axum::Json<RedriveAnswer>, ApiError> {
        let _one_at_a_time = self.redriving.lock().await;
        let filter = Arc::new(filter);
        let this = self.clone();
        let chosen = filter.clone();
        let (producer, matched, candidates, mut refused, more) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                // Fence first: once this returns, every earlier redrive is
                // committed (and in the log) or aborted.
                let producer = (!chosen.dry_run)
                    .then(|| transactional(&this.kafka, &this.topic))
                    .transpose()?;
                let log = read_log(&this.kafka, &this.log_topic)?;
                let (mut matched, mut more) = (0u64, false);
                let (mut candidates, mut refused) = (Vec::<Candidate>::new(), Vec::new());
                // The candidate of each record (its first origin).
                let mut records: HashMap<RecordPlace, usize> = HashMap::new();
                scan(&this.kafka, &this.topic, Missing::Fail, |message| {
                    let meta = Meta::of(message);
                    let (p, o) = (message.partition(), message.offset());
                    if !chosen.matches(&meta, p, o) {
                        return;
                    }
                    matched += 1;
                    let entry = log.letters.get(&(p, o));
                    let published = meta
                        .first()
                        .and_then(|first| log.records.get(&first.place()))
                        .copied()
                        .unwrap_or(0);
                    // Its record was redriven since this dead letter was written.
                    let again = entry.is_some() || published > meta.redrive_count;
                    let (first, count) = match this.judge(&meta, entry, published, chosen.again) {
                        Ok(judged) => judged,
                        Err(refusal) => return refused.push(refusal.of(&meta, p, o, entry)),
                    };
                    // Another dead letter of a record already chosen: the
                    // same copy stands for it.
                    if let Some(&at) = records.get(&first.place()) {
                        let copy = &mut candidates[at].redriven;
                        copy.dead_letters.push(format!("{p}:{o}"));
                        copy.redrive_count = copy.redrive_count.max(count);
                        copy.again |= again;
                        return;
                    }
                    if candidates.len() >= chosen.limit {
                        more = true;
                        return;
                    }
                    let (key, rekeyed) = copy_key(&meta.code, message);
                    records.insert(first.place(), candidates.len());
                    candidates.push(Candidate {
                        message: message.detach(),
                        key,
                        redriven: Redriven {
                            id: format!("{p}:{o}"),
                            dead_letters: vec![format!("{p}:{o}")],
                            code: meta.code.clone(),
                            event_id: meta.event_id.clone(),
                            origin: first,
                            redrive_count: count,
                            again,
                            rekeyed,
                            to: None,
                        },
                    });
                })?;
                Ok((producer, matched, candidates, refused, more))
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(unreadable)?;

        let redriven = match producer {
            None => candidates.into_iter().map(|c| c.redriven).collect(),
            Some(producer) => {
                let producer = Arc::new(producer);
                let published = self.publish(producer.clone(), candidates).await;
                // Closing a client waits for its threads: not on an async worker.
                tokio::task::spawn_blocking(move || drop(producer));
                published?
            }
        };
        let mut refused_counts: BTreeMap<String, u64> = BTreeMap::new();
        for r in &refused {
            *refused_counts.entry(r.why.clone()).or_default() += 1;
            if !filter.dry_run {
                metrics::counter!("kappa_dlq_redrive_refused_total", "why" => r.why.clone())
                    .increment(1);
            }
        }
        if !filter.dry_run {
            for r in &redriven {
                // The code is the record's header: a label only if known.
                metrics::counter!("kappa_dlq_redriven_total", "code" => shared::dlq::codes::bounded(&r.code))
                    .increment(1);
            }
        }
        refused.truncate(MAX_REFUSED_LISTED);
        Ok(axum::Json(RedriveAnswer {
            dry_run: filter.dry_run,
            matched,
            max_redrives: self.max_redrives,
            redriven,
            refused,
            refused_counts,
            more,
        }))
    }

    /// Publishes the copies and their log records in one transaction.
    async fn publish(
        &self,
        producer: Arc<FutureProducer>,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Redriven>, ApiError> {
        let begin = producer.clone();
        tokio::task::spawn_blocking(move || begin.begin_transaction())
            .await
            .map_err(ApiError::internal)?
            .map_err(not_committed)?;
        let sent = self.copies(&producer, candidates).await;
        let outcome = match sent {
            Ok(redriven) => {
                let commit = producer.clone();
                tokio::task::spawn_blocking(move || commit.commit_transaction(TXN_TIMEOUT))
                    .await
                    .map_err(ApiError::internal)?
                    .map(|()| redriven)
                    .map_err(not_committed)
            }
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            let abort = producer.clone();
            let _ = tokio::task::spawn_blocking(move || abort.abort_transaction(TXN_TIMEOUT)).await;
        }
        outcome
    }

    /// Inside the transaction: the copies, then (knowing where they landed)
    /// one log record each.
    async fn copies(
        &self,
        producer: &FutureProducer,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Redriven>, ApiError> {
        let mut sent = Vec::with_capacity(candidates.len());
        for Candidate {
            message,
            key,
            redriven,
        } in candidates
        {
            let first = &redriven.origin;
            let headers = copy_headers(&message, first, redriven.redrive_count, &self.topic);
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&first.topic)
                .payload(message.payload().unwrap_or_default())
                .headers(headers);
            if let Some(key) = &key {
                record = record.key(key.as_slice());
            }
            if let Some(ts) = first.timestamp {
                record = record.timestamp(ts.timestamp_millis());
            }
            let delivery = producer
                .send_result(record)
                .map_err(|(error, _)| not_committed(error))?;
            sent.push((redriven, delivery));
        }
        let mut redriven = Vec::with_capacity(sent.len());
        let mut logged = Vec::with_capacity(sent.len());
        for (mut copy, delivery) in sent {
            let delivery = match delivery.await {
                Ok(Ok(delivery)) => delivery,
                Ok(Err((error, _))) => return Err(not_committed(error)),
                Err(cancelled) => return Err(not_committed(cancelled)),
            };
            copy.to = Some(Origin {
                topic: copy.origin.topic.clone(),
                partition: delivery.partition,
                offset: delivery.offset,
                timestamp: copy.origin.timestamp,
                line: None,
            });
            let entry = LogRecord {
                redrive_count: copy.redrive_count,
                to: copy.to.clone().expect("just set"),
                at: Utc::now(),
                origin: Some(copy.origin.clone()),
            };
            let value = serde_json::to_vec(&entry).map_err(ApiError::internal)?;
            // One log record per dead letter the copy stands for.
            for letter in &copy.dead_letters {
                let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.log_topic)
                    .key(letter.as_str())
                    .payload(value.as_slice());
                let delivery = producer
                    .send_result(record)
                    .map_err(|(error, _)| not_committed(error))?;
                logged.push(delivery);
            }
            redriven.push(copy);
        }
        for delivery in logged {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(not_committed(error)),
                Err(cancelled) => return Err(not_committed(cancelled)),
            }
        }
        Ok(redriven)
    }
}

/// The copy's headers: the record's own (not `dlq.*`, not an older
/// redrive's), then the redrive's.
fn copy_headers(
    message: &OwnedMessage,
    first: &Origin,
    count: i64,
    dlq_topic: &str,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(own) = message.headers() {
        for h in own.iter() {
            if h.key.starts_with("dlq.") || h.key.starts_with("redrive.") || h.key == rh::COUNT {
                continue;
            }
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let timestamp = first
        .timestamp
        .map_or(-1, |t| t.timestamp_millis())
        .to_string();
    for (key, value) in [
        (rh::COUNT, count.to_string()),
        (rh::ORIGIN_TOPIC, first.topic.clone()),
        (rh::ORIGIN_PARTITION, first.partition.to_string()),
        (rh::ORIGIN_OFFSET, first.offset.to_string()),
        (rh::ORIGIN_TIMESTAMP, timestamp),
        (rh::DLQ_TOPIC, dlq_topic.to_owned()),
        (rh::DLQ_PARTITION, message.partition().to_string()),
        (rh::DLQ_OFFSET, message.offset().to_string()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    if let Some(line) = first.line {
        headers = headers.insert(Header {
            key: rh::ORIGIN_LINE,
            value: Some(line.to_string().as_bytes()),
        });
    }
    headers
}

// ---------------------------------------------------------------- the redrive log

/// A record of the redrive log (its key: the dead letter's `partition:offset`).
#[derive(Debug, Serialize, Deserialize)]
struct LogRecord {
    /// The copy's `redrive-count`.
    redrive_count: i64,
    /// Where the copy landed.
    to: Origin,
    at: DateTime<Utc>,
    /// The first origin of the record the copy is of.
    #[serde(default)]
    origin: Option<Origin>,
}

/// What the log says of one dead letter.
#[derive(Debug, Clone)]
struct LogEntry {
    /// Times it was redriven.
    redrives: i64,
    last: LastRedrive,
}

/// What the redrive log says.
#[derive(Default)]
struct Log {
    /// Per dead letter (`partition`, `offset`), its redrives.
    letters: HashMap<(i32, i64), LogEntry>,
    /// Per record (its first origin), the highest `redrive-count` of its copies.
    records: HashMap<RecordPlace, i64>,
}

/// Reads the redrive log. Records that do not parse are skipped. Blocking.
fn read_log(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Log> {
    let mut log = Log::default();
    // No log yet: nothing was redriven.
    scan(kafka, topic, Missing::Empty, |message| {
        let Some(at) = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(parse_position)
        else {
            return;
        };
        let Some(record) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<LogRecord>(p).ok())
        else {
            return;
        };
        if let Some(origin) = &record.origin {
            let highest = log.records.entry(origin.place()).or_default();
            *highest = (*highest).max(record.redrive_count);
        }
        let last = LastRedrive {
            at: record.at,
            redrive_count: record.redrive_count,
            to: record.to,
        };
        let entry = log.letters.entry(at).or_insert(LogEntry {
            redrives: 0,
            last: last.clone(),
        });
        entry.redrives += 1;
        entry.last = last;
    })?;
    Ok(log)
}

// ---------------------------------------------------------------- reading the DLQ

/// What the headers and payload of a dead letter say.
struct Meta {
    code: String,
    reason: String,
    origin: Option<Origin>,
    first_origin: Option<Origin>,
    event_id: Option<String>,
    event_id_derived: bool,
    redrive_count: i64,
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    (ms >= 0)
        .then(|| Utc.timestamp_millis_opt(ms).single())
        .flatten()
}

impl Meta {
    fn of<M: Message>(message: &M) -> Self {
        let text = |name: &str| {
            message
                .headers()
                .and_then(|h| shared::dlq::header_str(h, name))
                .map(str::to_owned)
        };
        let origin = |[topic, partition, offset, timestamp, line]: [&str; 5]| {
            Some(Origin {
                topic: text(topic).filter(|t| !t.is_empty())?,
                partition: text(partition)?.parse().ok()?,
                offset: text(offset)?.parse().ok()?,
                timestamp: text(timestamp)
                    .and_then(|t| t.parse().ok())
                    .and_then(millis),
                line: text(line).and_then(|l| l.parse().ok()),
            })
        };
        let at = origin([
            header::TOPIC,
            header::PARTITION,
            header::OFFSET,
            header::TIMESTAMP,
            header::LINE,
        ]);
        let first = origin([
            rh::ORIGIN_TOPIC,
            rh::ORIGIN_PARTITION,
            rh::ORIGIN_OFFSET,
            rh::ORIGIN_TIMESTAMP,
            rh::ORIGIN_LINE,
        ]);
        // A count that does not parse cannot be shown to be under the limit.
        let redrive_count =
            text(rh::COUNT).map_or(0, |c| c.trim().parse::<u32>().map_or(i64::MAX, i64::from));
        let payload_id = message.payload().and_then(payload_id);
        let derived = payload_id.is_none();
        // As consumers derive it: from where the record was first written.
        let event_id = payload_id.or_else(|| {
            first
                .as_ref()
                .or(at.as_ref())
                .map(|o| shared::event::derived_id(&o.topic, o.partition, o.offset).to_string())
        });
        Self {
            code: text(header::CODE)
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "unknown".into()),
            reason: text(header::REASON).unwrap_or_default(),
            event_id_derived: derived && event_id.is_some(),
            event_id,
            origin: at,
            first_origin: first,
            redrive_count,
        }
    }

    /// Where the record was first written: its first origin, else its origin.
    fn first(&self) -> Option<&Origin> {
        self.first_origin.as_ref().or(self.origin.as_ref())
    }

    fn letter(&self, message: &BorrowedMessage<'_>) -> DeadLetter {
        DeadLetter {
            id: format!("{}:{}", message.partition(), message.offset()),
            partition: message.partition(),
            offset: message.offset(),
            code: self.code.clone(),
            reason: self.reason.clone(),
            time: message.timestamp().to_millis().and_then(millis),
            origin: self.origin.clone(),
            first_origin: self.first_origin.clone(),
            event_id: self.event_id.clone(),
            event_id_derived: self.event_id_derived,
            redrive_count: self.redrive_count,
            redrives: 0,
            last_redrive: None,
            key: message.key().map(preview),
            payload: preview(message.payload().unwrap_or_default()),
        }
    }
}

/// The `id` of a JSON object payload.
fn payload_id(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
    }
    let id: Id<'_> = serde_json::from_slice(payload).ok()?;
    id.id.map(|id| id.into_owned()).filter(|id| !id.is_empty())
}

/// The first [`PREVIEW_BYTES`] of `bytes`: text if they are UTF-8 (a
/// character cut at the end is left out), else base64.
pub(crate) fn preview(bytes: &[u8]) -> Preview {
    let cut = &bytes[..bytes.len().min(PREVIEW_BYTES)];
    let text = match std::str::from_utf8(cut) {
        Ok(text) => Some(text),
        Err(e) if e.error_len().is_none() && cut.len() < bytes.len() => {
            std::str::from_utf8(&cut[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    let (encoding, data) = match text {
        Some(text) => (Encoding::Text, text.to_owned()),
        None => (Encoding::Base64, base64(cut)),
    };
    Preview {
        size: bytes.len(),
        encoding,
        data,
        truncated: cut.len() < bytes.len(),
    }
}

/// Standard base64 with padding (RFC 4648), for a preview's few bytes.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A reader of the DLQ: assigned its partitions, in no group, committing nothing.
fn reader(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer<ReaderContext>> {
    shared::kafka::reader_config(kafka, "kappa-dlq-tool", &[])
        .create_with_context(ReaderContext::new("dlq"))
        .context("creating the DLQ reader")
}

/// What [`scan`] makes of a topic that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    Fail,
    Empty,
}

/// Reads every record of `topic` from the earliest offsets up to the end
/// offsets as they are now (or the end of what is committed, if a
/// transaction is open), handing each to `visit` (partitions interleave,
/// each in order). Returns, per partition, the offset it was read up to.
/// Blocking: run it on a blocking thread.
fn scan(
    kafka: &KafkaConfig,
    topic: &str,
    missing: Missing,
    visit: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer = reader(kafka)?;
    let spans = bounded::to_end(&consumer, topic, &BTreeMap::new())?;
    if spans.is_empty() && missing == Missing::Empty {
        return Ok(BTreeMap::new());
    }
    anyhow::ensure!(
        !spans.is_empty(),
        "the topic {topic} has no partitions (does it exist?)"
    );
    let limits = Limits {
        stall: Some(STALL),
        committed_only: true,
        ..Limits::default()
    };
    Ok(bounded::read(&consumer, topic, &spans, limits, visit)?.next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn previews_are_bounded_text_or_base64() {
        let short = preview(b"{\"type\":\"x\"}");
        assert_eq!(
            (short.encoding, short.truncated, short.size),
            (Encoding::Text, false, 12)
        );
        assert_eq!(short.data, "{\"type\":\"x\"}");

        let long = format!("a{}", "é".repeat(200)); // 401 bytes; byte 256 is inside a character
        let cut = preview(long.as_bytes());
        assert_eq!(
            (cut.encoding, cut.truncated, cut.size),
            (Encoding::Text, true, 401)
        );
        assert_eq!(cut.data, format!("a{}", "é".repeat(127)));

        let binary = preview(&[0xff; 300]);
        assert_eq!(
            (binary.encoding, binary.truncated),
            (Encoding::Base64, true)
        );
        assert_eq!(binary.data.len(), PREVIEW_BYTES.div_ceil(3) * 4);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_name_the_field() {
        let cursor = parse_cursor("0:41, 2:7").unwrap();
        assert_eq!(format_cursor(&cursor), "0:41,2:7");
        assert!(parse_cursor("").unwrap().is_empty());
        for bad in ["x", "0:", "-1:3", "0:-2", "1:2,1:3", "0:1;2:3"] {
            let error = parse_cursor(bad).unwrap_err();
            assert_eq!(
                error.detail("field"),
                Some(&serde_json::json!("after")),
                "{bad}"
            );
        }
    }
}
