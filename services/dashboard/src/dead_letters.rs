//! Dead letters by reason over time, for the page and `GET /api/dlq/daily`:
//! per UTC day (of the dead letter's own timestamp: when it was
//! dead-lettered) and reason code (the `dlq.code` header every DLQ writer
//! sets, `other` for one outside `shared::dlq::codes`, `unknown` for a
//! record without one), how many records reached the DLQ topic.
//!
//! The counts are kept in memory and brought up to date on demand: a
//! short-lived reader (no group, no commits, `read_committed`) reads what
//! arrived since the last look, up to the end offsets snapshotted when it
//! starts, so the first look reads the whole topic and later ones only the
//! new records. Looks closer together than [`FRESH_FOR`] reuse the counts,
//! and one that takes longer than [`READ_BUDGET`] keeps what it read and
//! says the counts are incomplete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use shared::config::KafkaConfig;
use shared::kafka::bounded::{self, Limits, Reached};
use shared::kafka::ReaderContext;

/// Counts younger than this are served as they are.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The longest one look reads for.
pub const READ_BUDGET: Duration = Duration::from_secs(5);

/// How long the broker may take to answer a look's metadata and watermarks.
const BROKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Per day, per reason code: dead letters.
pub type ByDay = BTreeMap<NaiveDate, BTreeMap<String, u64>>;

/// The counts as of one look.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub days: ByDay,
    /// Per partition, the next offset to read: every record before it is counted.
    pub next: BTreeMap<i32, i64>,
    /// Whether the last look read up to the end it snapshotted.
    pub complete: bool,
    pub read_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct State {
    snapshot: Snapshot,
    looked: Option<Instant>,
}

/// The dead-letter counts of one DLQ topic, shared by the handlers.
#[derive(Clone)]
pub struct DeadLetters {
    kafka: KafkaConfig,
    topic: String,
    state: Arc<tokio::sync::Mutex<State>>,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig) -> Self {
        DeadLetters {
            kafka: kafka.clone(),
            topic: kafka.dlq_topic.clone(),
            state: Arc::default(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The counts, read up to the topic's end first unless they are fresh.
    /// An error means the broker did not answer at all; counts it answered
    /// part of are returned as incomplete.
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut state = self.state.lock().await;
        if state.looked.is_some_and(|at| at.elapsed() < FRESH_FOR) {
            return Ok(state.snapshot.clone());
        }
        let (kafka, topic, next) = (
            self.kafka.clone(),
            self.topic.clone(),
            state.snapshot.next.clone(),
        );
        let read = tokio::task::spawn_blocking(move || read_new(&kafka, &topic, next, READ_BUDGET))
            .await
            .context("the dead-letter reader panicked")?;
        let (days, reached) = read?;
        let snapshot = &mut state.snapshot;
        for (day, codes) in days {
            let counts = snapshot.days.entry(day).or_default();
            for (code, n) in codes {
                *counts.entry(code).or_default() += n;
            }
        }
        snapshot.next.extend(reached.next);
        snapshot.complete = reached.complete;
        snapshot.read_at = Some(Utc::now());
        state.looked = Some(Instant::now());
        Ok(state.snapshot.clone())
    }
}

/// Reads `topic` from `from` (per partition; the low watermark where none)
/// up to the end offsets as they are now, for at most `budget`. Returns the
/// counts of what it read, and where it got to. Blocking.
fn read_new(
    kafka: &KafkaConfig,
    topic: &str,
    from: BTreeMap<i32, i64>,
    budget: Duration,
) -> anyhow::Result<(ByDay, Reached)> {
    let deadline = Instant::now() + budget;
    let consumer: BaseConsumer<ReaderContext> =
        shared::kafka::reader_config(kafka, "kappa-dashboard-dlq", &[])
            .create_with_context(ReaderContext::new("dashboard-dlq"))
            .context("creating the dead-letter reader")?;
    let spans = bounded::to_end(&consumer, topic, &from, BROKER_TIMEOUT.min(budget))?;
    let limits = Limits {
        deadline: Some(deadline),
        ..Limits::default()
    };
    let mut days = ByDay::new();
    let reached = bounded::read(&consumer, topic, &spans, limits, |message| {
        let code = code_key(message).to_owned();
        let day = message
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now)
            .date_naive();
        *days.entry(day).or_default().entry(code).or_default() += 1;
    })?;
    Ok((days, reached))
}

/// A dead letter's reason as a key of the counts: its `dlq.code` if the
/// catalogue knows it, `other` if not, `unknown` for a record without one.
/// Anyone who can write to the topic chooses the header, and each distinct
/// key would be a column of the page and of `/api/dlq/daily`.
fn code_key<M: Message>(message: &M) -> &'static str {
    message
        .headers()
        .and_then(|h| shared::dlq::header_str(h, shared::dlq::header::CODE))
        .filter(|c| !c.is_empty())
        .map_or("unknown", shared::dlq::codes::bounded)
}

/// The newest `max_days` days with dead letters within `from..=to` (each
/// end optional), oldest first.
pub fn select(
    days: &ByDay,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    max_days: usize,
) -> ByDay {
    let in_range = |d: &NaiveDate| from.is_none_or(|f| *d >= f) && to.is_none_or(|t| *d <= t);
    let mut chosen: Vec<(NaiveDate, BTreeMap<String, u64>)> = days
        .iter()
        .rev()
        .filter(|(d, _)| in_range(d))
        .take(max_days)
        .map(|(d, c)| (*d, c.clone()))
        .collect();
    chosen.reverse();
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_the_newest_days_in_range() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let days: ByDay = ["2026-11-01", "2026-11-03", "2026-11-04", "2026-11-09"]
            .iter()
            .map(|s| (d(s), BTreeMap::from([("invalid_json".to_owned(), 1)])))
            .collect();
        let keys = |b: ByDay| b.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys(select(&days, None, None, 2)),
            ["2026-11-04", "2026-11-09"]
        );
        assert_eq!(
            keys(select(
                &days,
                Some(d("2026-11-02")),
                Some(d("2026-11-05")),
                30
            )),
            ["2026-11-03", "2026-11-04"]
        );
    }
}
