//! The replay engine of batch jobs (the Kappa architecture's other half): read
//! a fixed range of the retained topic, as fast as the broker serves it.
//!
//! [`plan`] snapshots every partition's end offset at the start (so the same
//! plan always reads the same records, whatever arrives meanwhile) and finds
//! where to start: the earliest offset, or the first record at or after a
//! time (Kafka's offsets-for-times lookup on message timestamps, which are
//! event times for events that carried a `ts`). An optional end time cuts the
//! range the same way. [`run`] reads every partition up to its snapshotted
//! end with a consumer that joins no group and commits nothing, parses each
//! record (claim-checked events arrive as their small envelope: counting them
//! fetches no payload), and keeps [`Progress`].
//!
//! A replay skips a repeated event id as the workers do (`shared::worker`,
//! `kafka.dedupe_window`): a record whose id was read among the window's
//! records before it in its partition. A range that starts past a
//! partition's beginning first reads the window's records before its
//! start, so a replay of any range skips exactly what a worker that read
//! the whole stream skipped, and both halves of the Kappa architecture
//! count alike.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::consume::{classify, Received, Rejection};
use crate::kafka::bounded::{self, Limits};
use crate::kafka::ReaderContext;
use crate::shutdown::CancellationToken;
use crate::window::Window;
use uuid::Uuid;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Earliest,
    /// The first record whose timestamp is at or after this time.
    Time(DateTime<Utc>),
}

pub use crate::kafka::bounded::Span;

/// A fixed range of a topic: per partition, `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub topic: String,
    pub spans: BTreeMap<i32, Span>,
}

impl Plan {
    /// Records in the range.
    pub fn total(&self) -> u64 {
        self.spans
            .values()
            .map(|s| (s.end - s.start).max(0) as u64)
            .sum()
    }

    /// The range after `ends` (per partition, where an earlier range ended):
    /// each partition starts at its end there, within this plan's span (a
    /// partition `ends` does not name, new since, is read whole; one whose
    /// records before its end were deleted by retention starts at its
    /// first record).
    pub fn after(mut self, ends: &BTreeMap<i32, i64>) -> Plan {
        for (p, span) in &mut self.spans {
            if let Some(&end) = ends.get(p) {
                span.start = end.clamp(span.start, span.end);
            }
        }
        self
    }

    /// Splits the range into at most `parts` plans of disjoint partitions with
    /// about equal record counts (largest partitions first, each to the
    /// lightest part), so that several readers can share a replay.
    pub fn split(&self, parts: usize) -> Vec<Plan> {
        let mut spans: Vec<(i32, Span)> = self.spans.iter().map(|(p, s)| (*p, *s)).collect();
        spans.sort_by_key(|(p, s)| (std::cmp::Reverse(s.end - s.start), *p));
        let mut plans: Vec<(u64, Plan)> = (0..parts.max(1))
            .map(|_| {
                (
                    0,
                    Plan {
                        topic: self.topic.clone(),
                        spans: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for (p, span) in spans {
            let lightest = plans
                .iter_mut()
                .min_by_key(|(load, _)| *load)
                .expect("at least one part");
            lightest.0 += (span.end - span.start).max(0) as u64;
            lightest.1.spans.insert(p, span);
        }
        plans
            .into_iter()
            .map(|(_, plan)| plan)
            .filter(|plan| !plan.spans.is_empty())
            .collect()
    }
}

/// A consumer for replays: no group membership, no commits, large fetches.
fn reader(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer<ReaderContext>> {
    // Read as fast as the broker serves: big fetches, a deep local queue,
    // and the next fetch as soon as the queue drains below its threshold
    // (librdkafka otherwise waits fetch.queue.backoff.ms, 1 s, once a
    // partition's queue was full: a reader faster than one fetch per
    // second stalled for most of each second).
    let tuning = [
        ("fetch.max.bytes", "52428800"),
        ("max.partition.fetch.bytes", "8388608"),
        ("queued.max.messages.kbytes", "262144"),
        ("fetch.wait.max.ms", "50"),
        ("fetch.queue.backoff.ms", "5"),
    ];
    crate::kafka::reader_config(kafka, "kappa-replay", &tuning)
        .create_with_context(ReaderContext::new("replay"))
        .context("creating the replay consumer")
}

/// Snapshots the range of `topic` to replay: from `from`, up to the end
/// offsets as they are now (or to the first record at or after `to`).
pub fn plan(
    kafka: &KafkaConfig,
    topic: &str,
    from: From,
    to: Option<DateTime<Utc>>,
) -> anyhow::Result<Plan> {
    let consumer = reader(kafka)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("reading topic metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {topic} has no partitions (does it exist?)"
    );
    let mut spans = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .context("reading watermarks")?;
        spans.insert(
            p,
            Span {
                start: low,
                end: high,
            },
        );
    }
    let lookup = |time: DateTime<Utc>| -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            list.add_partition_offset(topic, p, Offset::Offset(time.timestamp_millis()))?;
        }
        let found = consumer
            .offsets_for_times(list, timeout)
            .context("looking offsets up by time")?;
        Ok(found
            .elements()
            .iter()
            .map(|e| {
                (
                    e.partition(),
                    if let Offset::Offset(o) = e.offset() {
                        Some(o)
                    } else {
                        None
                    },
                )
            })
            .collect())
    };
    if let From::Time(time) = from {
        for (p, offset) in lookup(time)? {
            let span = spans.get_mut(&p).expect("known partition");
            // No record at or after the time: nothing to read in this partition.
            span.start = offset.unwrap_or(span.end).clamp(span.start, span.end);
        }
    }
    if let Some(time) = to {
        for (p, offset) in lookup(time)? {
            let span = spans.get_mut(&p).expect("known partition");
            span.end = offset.unwrap_or(span.end).clamp(span.start, span.end);
        }
    }
    Ok(Plan {
        topic: topic.to_owned(),
        spans,
    })
}

/// How far a replay got; shared with whoever reports it.
#[derive(Debug)]
pub struct Progress {
    total: AtomicU64,
    read: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
}

/// A moment's view of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProgressView {
    pub read: u64,
    pub total: u64,
    /// 0..1, monotonic, 1.0 when done.
    pub fraction: f64,
    pub per_second: f64,
    pub eta_seconds: Option<f64>,
}

impl Progress {
    /// Progress of a replay of `total` records, starting now.
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            total: AtomicU64::new(total),
            read: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Payload bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The current view.
    pub fn view(&self) -> ProgressView {
        let (read, total) = (
            self.read.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let elapsed = self.started.elapsed().as_secs_f64();
        let per_second = if elapsed > 0.0 {
            read as f64 / elapsed
        } else {
            0.0
        };
        let fraction = if total == 0 {
            1.0
        } else {
            (read as f64 / total as f64).min(1.0)
        };
        let eta_seconds =
            (per_second > 0.0).then(|| (total.saturating_sub(read)) as f64 / per_second);
        ProgressView {
            read,
            total,
            fraction,
            per_second,
            eta_seconds,
        }
    }
}

/// Reads every record of `plan`, handing each to `visit` in per-partition
/// order, until the range is read or `shutdown` fires (an error: the run is
/// incomplete). A repeat of an event id read within `kafka.dedupe_window`
/// records before it is skipped (counted, not visited). Claim-checked
/// envelopes arrive as envelopes: a caller that needs their bodies resolves
/// them (`ClaimStore::resolve_received`). Blocking: run it on a blocking
/// thread.
pub fn run(
    kafka: &KafkaConfig,
    plan: &Plan,
    progress: &Progress,
    shutdown: &CancellationToken,
    visit: impl FnMut(Result<Received, Rejection>),
) -> anyhow::Result<()> {
    run_from(kafka, plan, Windows::default(), progress, shutdown, visit).map(drop)
}

/// [`run`], continuing `known` windows: a partition whose known window
/// ends where the plan starts reading it takes that window instead of
/// reading the window's records before its start again. Returns the
/// windows where the plan ends, for a range that starts there.
pub fn run_from(
    kafka: &KafkaConfig,
    plan: &Plan,
    mut known: Windows,
    progress: &Progress,
    shutdown: &CancellationToken,
    mut visit: impl FnMut(Result<Received, Rejection>),
) -> anyhow::Result<Windows> {
    let size = kafka.dedupe_window;
    if size == 0 {
        read(kafka, plan, progress, shutdown, visit)?;
        return Ok(Windows::default());
    }
    if known.size != size {
        known.partitions.clear();
    }
    let mut windows: BTreeMap<i32, Window> = BTreeMap::new();
    let mut unknown = BTreeMap::new();
    for (&p, span) in &plan.spans {
        match known.partitions.remove(&p) {
            Some((next, window)) if next == span.start => {
                windows.insert(p, window);
            }
            _ if span.start < span.end => {
                unknown.insert(p, span.start);
            }
            // Nothing to read, and no window known there: the next range
            // reads it from the topic.
            _ => {}
        }
    }
    windows.extend(windows_before(
        kafka,
        &plan.topic,
        &unknown,
        size,
        shutdown,
        |message| classify(message).ok()?.given_id(),
    )?);
    let mut repeats = 0u64;
    read(kafka, plan, progress, shutdown, |record| {
        if let Ok(received) = &record {
            if let Some(id) = received.given_id() {
                let window = windows
                    .entry(received.partition)
                    .or_insert_with(|| Window::new(size));
                if window.repeat(id, received.offset) {
                    repeats += 1;
                    return;
                }
            }
        }
        visit(record);
    })?;
    metrics::counter!("kappa_replay_duplicates_skipped_total").increment(repeats);
    let partitions = windows
        .into_iter()
        .filter_map(|(p, window)| Some((p, (plan.spans.get(&p)?.end, window))))
        .collect();
    Ok(Windows { size, partitions })
}

/// Where repeat detection stands at the end of ranges: per partition, the
/// offset it is valid at (the next to read) and the event ids admitted at
/// the `dedupe_window` offsets before it. A range that starts there goes
/// on from it ([`run_from`]) instead of reading those records again.
#[derive(Debug, Default)]
pub struct Windows {
    size: u64,
    partitions: BTreeMap<i32, (i64, Window)>,
}

impl Windows {
    /// Adds the windows of other partitions (another reader's part).
    pub fn merge(&mut self, other: Windows) {
        if self.partitions.is_empty() {
            self.size = other.size;
        }
        if other.size == self.size {
            self.partitions.extend(other.partitions);
        }
    }

    /// Takes out the windows of `partitions`.
    pub fn take(&mut self, partitions: impl IntoIterator<Item = i32>) -> Windows {
        let partitions = partitions
            .into_iter()
            .filter_map(|p| Some((p, self.partitions.remove(&p)?)))
            .collect();
        Windows {
            size: self.size,
            partitions,
        }
    }

    /// The windows as bytes: the window size, then per partition its
    /// number, the offset it is valid at and its admissions (offset and
    /// id) in offset order; integers big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.size.to_be_bytes());
        for (p, (next, window)) in &self.partitions {
            let admitted: Vec<(i64, Uuid)> = window.admitted(*next).collect();
            out.extend_from_slice(&p.to_be_bytes());
            out.extend_from_slice(&next.to_be_bytes());
            out.extend_from_slice(&(admitted.len() as u64).to_be_bytes());
            for (offset, id) in admitted {
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(id.as_bytes());
            }
        }
        out
    }

    /// Windows from [`Windows::encode`]'s bytes; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Windows> {
        fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
            let (head, rest) = bytes.split_first_chunk::<N>()?;
            *bytes = rest;
            Some(*head)
        }
        let mut bytes = bytes;
        let size = u64::from_be_bytes(take(&mut bytes)?);
        let mut partitions = BTreeMap::new();
        while !bytes.is_empty() {
            let p = i32::from_be_bytes(take(&mut bytes)?);
            let next = i64::from_be_bytes(take(&mut bytes)?);
            let mut window = Window::new(size);
            for _ in 0..u64::from_be_bytes(take(&mut bytes)?) {
                let offset = i64::from_be_bytes(take(&mut bytes)?);
                window.admit(Uuid::from_bytes(take(&mut bytes)?), offset);
            }
            partitions.insert(p, (next, window));
        }
        Some(Windows { size, partitions })
    }
}

/// Per partition of `starts`, the window of event ids before its start:
/// among the `size` records (offsets) before it, the ids `id_of` admits,
/// in order, repeats among them included. A partition whose start is its
/// beginning has an empty window. Blocking.
pub(crate) fn windows_before(
    kafka: &KafkaConfig,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
    size: u64,
    shutdown: &CancellationToken,
    id_of: impl Fn(&BorrowedMessage<'_>) -> Option<Uuid>,
) -> anyhow::Result<BTreeMap<i32, Window>> {
    let mut windows: BTreeMap<i32, Window> =
        starts.keys().map(|&p| (p, Window::new(size))).collect();
    let reaches_back = starts.values().any(|&start| start > 0);
    if !reaches_back {
        return Ok(windows);
    }
    let consumer = reader(kafka)?;
    let timeout = Duration::from_secs(10);
    let mut spans = BTreeMap::new();
    for (&p, &start) in starts {
        let (low, _) = consumer
            .fetch_watermarks(topic, p, timeout)
            .context("reading watermarks")?;
        let from = start.saturating_sub(i64::try_from(size).unwrap_or(i64::MAX));
        spans.insert(
            p,
            Span {
                start: from.max(low).min(start),
                end: start,
            },
        );
    }
    drop(consumer);
    let plan = Plan {
        topic: topic.to_owned(),
        spans,
    };
    read_raw(
        kafka,
        &plan,
        &Progress::new(plan.total()),
        shutdown,
        |message| {
            let Some(id) = id_of(message) else { return };
            if let Some(window) = windows.get_mut(&message.partition()) {
                window.admit(id, message.offset());
            }
        },
    )?;
    Ok(windows)
}

/// [`run`] without skipping repeats: every record of `plan`, to `visit`.
fn read(
    kafka: &KafkaConfig,
    plan: &Plan,
    progress: &Progress,
    shutdown: &CancellationToken,
    mut visit: impl FnMut(Result<Received, Rejection>),
) -> anyhow::Result<()> {
    read_raw(kafka, plan, progress, shutdown, |message| {
        visit(classify(message))
    })
}

/// The payload bytes `plan` holds, read (not parsed) from the broker: Kafka
/// keeps no count of a range's bytes. Blocking.
pub fn measure(
    kafka: &KafkaConfig,
    plan: &Plan,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    let progress = Progress::new(plan.total());
    read_raw(kafka, plan, &progress, shutdown, |_| {})?;
    Ok(progress.bytes())
}

/// Every record of `plan` as read, to `visit`.
fn read_raw(
    kafka: &KafkaConfig,
    plan: &Plan,
    progress: &Progress,
    shutdown: &CancellationToken,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let consumer = reader(kafka)?;
    let limits = Limits {
        shutdown: Some(shutdown),
        ..Limits::default()
    };
    let mut read = 0u64;
    bounded::read(&consumer, &plan.topic, &plan.spans, limits, |message| {
        let size = message.payload_len() as u64;
        visit(message);
        read += 1;
        progress.read.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(size, Ordering::Relaxed);
    })
    .context("reading the replay range")?;
    // Every record of the range is read: offsets taken by transaction
    // markers count as read, so the fraction ends at exactly 1.
    progress
        .read
        .fetch_add(plan.total().saturating_sub(read), Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_after_earlier_ends_starts_at_them_within_the_topic() {
        let span = |start, end| Span { start, end };
        let plan = Plan {
            topic: "events".into(),
            spans: BTreeMap::from([(0, span(0, 10)), (1, span(5, 8)), (2, span(0, 4))]),
        };
        // Partition 1 lost records up to 5 to retention; 2 is new; 9 is gone.
        let ends = BTreeMap::from([(0, 7), (1, 3), (9, 100)]);
        let after = plan.after(&ends);
        assert_eq!(
            after.spans,
            BTreeMap::from([(0, span(7, 10)), (1, span(5, 8)), (2, span(0, 4))])
        );
        assert_eq!(after.total(), 10);
    }

    #[test]
    fn windows_decoded_from_their_bytes_find_the_same_repeats() {
        let id = |n: u128| Uuid::from_u128(n);
        let mut window = Window::new(5);
        for (offset, n) in [(0, 1), (1, 2), (3, 1), (4, 3), (6, 4), (7, 2)] {
            window.admit(id(n), offset);
        }
        let windows = Windows {
            size: 5,
            partitions: BTreeMap::from([(2, (8, window))]),
        };
        let bytes = windows.encode();
        let mut decoded = Windows::decode(&bytes).unwrap();
        assert_eq!(decoded.encode(), bytes);
        let (next, mut window) = decoded.partitions.remove(&2).unwrap();
        assert_eq!(next, 8);
        // At 8 the window reaches back to 3: ids 1 (at 3), 3, 4 and 2 (at 7).
        let admitted: Vec<(i64, u128)> =
            window.admitted(8).map(|(o, i)| (o, i.as_u128())).collect();
        assert_eq!(admitted, vec![(3, 1), (4, 3), (6, 4), (7, 2)]);
        assert!(window.repeat(id(1), 8));
        assert!(!window.repeat(id(9), 9));
        assert!(
            !window.repeat(id(3), 10),
            "4 is beyond the window's 5 offsets from 10"
        );
        assert!(Windows::decode(&bytes[..bytes.len() - 1]).is_none());
    }
}
