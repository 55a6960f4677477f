//! What an audit answers: per day, each half's measures over the same
//! offsets and their difference ([`AuditReport`]), with how far each half
//! had read per partition; and why an audit has no answer ([`AuditError`]).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::aggregate::Day;

/// The measures both halves keep, in the order of [`Counts`].
pub const MEASURES: [&str; 5] = [
    "views",
    "clicks",
    "add_to_cart",
    "purchases",
    "revenue_cents",
];

/// One day's measures, in the order of [`MEASURES`].
pub(super) type Counts = [i64; 5];

pub(super) fn counts(day: &Day) -> Counts {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    [
        n(day.views),
        n(day.clicks),
        n(day.add_to_cart),
        n(day.purchases),
        n(day.revenue_cents),
    ]
}

/// Which half had records taken out of its numbers in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Adjusted {
    /// Both halves are at the same offset: nothing to take out.
    None,
    /// The streaming half is ahead: the records from the replay's end offset
    /// to the stream's position are taken out of the streaming numbers.
    Stream,
    /// The batch half is ahead: the records from the stream's position to
    /// the replay's end offset are taken out of the batch numbers.
    Batch,
}

/// The offsets of one partition: where each half is, and up to where both
/// were compared.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// Where the replay started reading (its snapshot's start offset).
    pub batch_start: i64,
    /// The replay's snapshotted end offset: it counted `batch_start..batch_end`.
    pub batch_end: i64,
    /// The streaming consumer's committed next offset; none: it never
    /// committed this partition (it counted nothing of it).
    pub stream_next: Option<i64>,
    /// Both halves are compared over `batch_start..compared_end`: the
    /// smaller of the two positions.
    pub compared_end: i64,
    pub adjusted: Adjusted,
    /// Offsets between the two positions (`compared_end..` the half
    /// ahead's position), whose records are taken out of the half ahead
    /// (read from the topic; the stream's part is remembered between
    /// audits of the same run, so only what it added since is read again).
    pub records_read: u64,
}

/// One measure of one day in both halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    /// The streaming half's number, at the compared offsets.
    pub stream: i64,
    /// The batch half's number, at the compared offsets.
    pub batch: i64,
    /// `stream - batch`; anything but 0 is drift.
    pub difference: i64,
}

/// One day of the audit, every measure compared.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditDay {
    pub day: NaiveDate,
    pub views: Comparison,
    pub clicks: Comparison,
    pub add_to_cart: Comparison,
    pub purchases: Comparison,
    pub revenue_cents: Comparison,
}

impl AuditDay {
    pub(super) fn new(day: NaiveDate, stream: Counts, batch: Counts) -> Self {
        let c = |i: usize| Comparison {
            stream: stream[i],
            batch: batch[i],
            difference: stream[i].saturating_sub(batch[i]),
        };
        AuditDay {
            day,
            views: c(0),
            clicks: c(1),
            add_to_cart: c(2),
            purchases: c(3),
            revenue_cents: c(4),
        }
    }

    /// The comparisons in the order of [`MEASURES`].
    pub fn measures(&self) -> [&Comparison; 5] {
        [
            &self.views,
            &self.clicks,
            &self.add_to_cart,
            &self.purchases,
            &self.revenue_cents,
        ]
    }
}

/// Per measure, the absolute differences summed over the audited days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Drift {
    pub views: u64,
    pub clicks: u64,
    pub add_to_cart: u64,
    pub purchases: u64,
    pub revenue_cents: u64,
}

impl Drift {
    pub(super) fn of(days: &[AuditDay]) -> Self {
        let mut sums = [0u64; 5];
        for day in days {
            for (sum, m) in sums.iter_mut().zip(day.measures()) {
                *sum = sum.saturating_add(m.difference.unsigned_abs());
            }
        }
        let [views, clicks, add_to_cart, purchases, revenue_cents] = sums;
        Drift {
            views,
            clicks,
            add_to_cart,
            purchases,
            revenue_cents,
        }
    }

    /// `(measure, drift)` in the order of [`MEASURES`].
    pub fn by_measure(&self) -> [(&'static str, u64); 5] {
        [
            (MEASURES[0], self.views),
            (MEASURES[1], self.clicks),
            (MEASURES[2], self.add_to_cart),
            (MEASURES[3], self.purchases),
            (MEASURES[4], self.revenue_cents),
        ]
    }

    pub fn is_zero(&self) -> bool {
        self.by_measure().iter().all(|(_, d)| *d == 0)
    }
}

/// What `GET /api/audit` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditReport {
    pub audited_at: DateTime<Utc>,
    /// The replay run compared: the current one.
    pub run_id: i64,
    /// The streaming consumer compared (its name in `consumer_offsets`).
    pub consumer: String,
    pub topic: String,
    /// Per partition, the offsets compared and which half was adjusted.
    pub partitions: Vec<PartitionOffsets>,
    /// Records read from the topic to bring both halves to the same offsets.
    pub records_read: u64,
    /// The days asked for; none: every day with data in either half.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Every day with a number in either half, oldest first.
    pub days: Vec<AuditDay>,
    /// Per measure, the absolute differences summed over the days.
    pub drift: Drift,
    /// Whether both halves agree on every day and measure.
    pub zero_drift: bool,
}

impl AuditReport {
    /// The days and measures that differ: `(day, measure, comparison)`.
    pub fn mismatches(&self) -> impl Iterator<Item = (NaiveDate, &'static str, &Comparison)> {
        self.days.iter().flat_map(|d| {
            MEASURES
                .iter()
                .zip(d.measures())
                .filter(|(_, c)| c.difference != 0)
                .map(move |(m, c)| (d.day, *m, c))
        })
    }
}

/// Why an audit has no answer.
#[derive(Debug)]
pub enum AuditError {
    /// No full replay has succeeded yet.
    NoRun,
    /// The streaming consumer has no committed position on the topic.
    StreamNotStarted { consumer: String, topic: String },
    /// `to` is before `from`.
    BadRange(String),
    /// The database or the broker failed.
    Failed(anyhow::Error),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Failed(e.into())
    }
}

impl From<anyhow::Error> for AuditError {
    fn from(e: anyhow::Error) -> Self {
        AuditError::Failed(e)
    }
}
