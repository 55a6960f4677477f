//! Reading a topic between fixed offsets: every partition from a start up to
//! an end snapshotted before the read, so the same spans always read the
//! same records whatever arrives meanwhile. The replay engine, the
//! dashboard's dead-letter counts and the gateway's DLQ tool all read so,
//! each with a consumer of its own that joins no group and commits nothing.
//!
//! A partition ends at its end offset, or where what it holds ends: offsets
//! taken by transaction markers never arrive as records, so the consumer's
//! position at the partition's end says how far it got. With
//! [`Limits::committed_only`] a partition also ends where what is committed
//! ends (a `read_committed` reader does not get past an open transaction):
//! the read does not wait for the transaction.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::shutdown::CancellationToken;

/// The offsets one partition is read between: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

/// How a read may end before every partition reached its end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Limits<'a> {
    /// Fails the read once cancelled.
    pub shutdown: Option<&'a CancellationToken>,
    /// Stops the read, incomplete but not failed, at this instant.
    pub deadline: Option<Instant>,
    /// Fails the read when nothing arrives for this long.
    pub stall: Option<Duration>,
    /// Ends a partition where what is committed ends, instead of waiting for
    /// an open transaction up to the end offset.
    pub committed_only: bool,
}

/// Where a read got to.
#[derive(Debug, Default)]
pub struct Reached {
    /// Per partition, the next offset to read: its end once it is read.
    pub next: BTreeMap<i32, i64>,
    /// Whether every partition was read to its end (not stopped by the deadline).
    pub complete: bool,
}

/// Per partition of `topic`, its low and high watermarks now, in partition
/// order; empty when the metadata lists no partitions (no such topic, or
/// one the broker answering does not know yet). Blocking.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    partitions
        .into_iter()
        .map(|p| {
            let marks = consumer
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("reading the watermarks of {topic}"))?;
            Ok((p, marks))
        })
        .collect()
}

/// Per partition of `topic`, the span from `from` (or the low watermark,
/// where `from` has no offset or one below it) up to the high watermark
/// now, each broker call within `timeout`. Empty when the metadata lists no
/// partitions. Blocking.
pub fn to_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, Span>> {
    Ok(watermarks(consumer, topic, timeout)?
        .into_iter()
        .map(|(p, (low, high))| {
            let start = from.get(&p).copied().unwrap_or(low).max(low);
            (p, Span { start, end: high })
        })
        .collect())
}

/// Reads every record of `spans` on `topic` with `consumer` (assigned here),
/// handing each to `visit`: partitions interleave, each in order. Blocking:
/// run it on a blocking thread.
pub fn read<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    spans: &BTreeMap<i32, Span>,
    limits: Limits<'_>,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<Reached> {
    // Per partition, the next offset to read; the open ones' in `open`, with
    // their ends, so a record costs one lookup.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut open: BTreeMap<i32, Open> = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for (&p, span) in spans {
        if span.start < span.end {
            list.add_partition_offset(topic, p, Offset::Offset(span.start))?;
            open.insert(
                p,
                Open {
                    end: span.end,
                    next: span.start,
                },
            );
        } else {
            next.insert(p, span.start);
        }
    }
    let reached = |mut next: BTreeMap<i32, i64>, open: BTreeMap<i32, Open>, complete| {
        next.extend(open.into_iter().map(|(p, o)| (p, o.next)));
        Reached { next, complete }
    };
    if open.is_empty() {
        return Ok(reached(next, open, true));
    }
    consumer
        .assign(&list)
        .with_context(|| format!("assigning {topic}"))?;
    // The clock is read only for a limit that needs it.
    let timed = limits.deadline.is_some() || limits.stall.is_some();
    let mut arrived = Instant::now();
    while !open.is_empty() {
        if limits.shutdown.is_some_and(CancellationToken::is_cancelled) {
            anyhow::bail!("reading {topic} cancelled: shutting down");
        }
        if timed {
            let now = Instant::now();
            if limits.deadline.is_some_and(|d| now >= d) {
                return Ok(reached(next, open, false));
            }
            if let Some(stall) = limits.stall {
                anyhow::ensure!(
                    now - arrived < stall,
                    "reading {topic} made no progress for {stall:?}"
                );
            }
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                if timed {
                    arrived = Instant::now();
                }
                let (p, offset) = (message.partition(), message.offset());
                let Some(partition) = open.get_mut(&p) else {
                    continue;
                };
                if offset < partition.end {
                    visit(&message);
                }
                partition.next = (offset + 1).min(partition.end);
                if offset + 1 >= partition.end {
                    next.insert(p, partition.end);
                    open.remove(&p);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                arrived = Instant::now();
                let Some(partition) = open.get(&p) else {
                    continue;
                };
                let at =
                    consumer
                        .position()?
                        .find_partition(topic, p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                // At the end of what is committed, even where the position
                // is not known (nothing of the partition was a record).
                if limits.committed_only || at.is_some_and(|at| at >= partition.end) {
                    let read_to = at.map_or(partition.next, |at| {
                        partition.next.max(at.min(partition.end))
                    });
                    next.insert(p, read_to);
                    open.remove(&p);
                }
            }
            Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic}")),
        }
    }
    Ok(reached(next, open, true))
}

/// A partition not read to its end yet.
struct Open {
    end: i64,
    next: i64,
}
