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
/// now. Empty when the metadata lists no partitions. Blocking.
pub fn to_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> anyhow::Result<BTreeMap<i32, Span>> {
    Ok(watermarks(consumer, topic, Duration::from_secs(10))?
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
    let mut next: BTreeMap<i32, i64> = spans.iter().map(|(&p, s)| (p, s.start)).collect();
    let mut open: BTreeMap<i32, i64> = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for (&p, span) in spans {
        if span.start < span.end {
            list.add_partition_offset(topic, p, Offset::Offset(span.start))?;
            open.insert(p, span.end);
        }
    }
    if open.is_empty() {
        return Ok(Reached {
            next,
            complete: true,
        });
    }
    consumer
        .assign(&list)
        .with_context(|| format!("assigning {topic}"))?;
    let mut arrived = Instant::now();
    while !open.is_empty() {
        if limits.shutdown.is_some_and(CancellationToken::is_cancelled) {
            anyhow::bail!("reading {topic} cancelled: shutting down");
        }
        if limits.deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Reached {
                next,
                complete: false,
            });
        }
        if let Some(stall) = limits.stall {
            anyhow::ensure!(
                arrived.elapsed() < stall,
                "reading {topic} made no progress for {stall:?}"
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                arrived = Instant::now();
                let (p, offset) = (message.partition(), message.offset());
                let Some(&end) = open.get(&p) else { continue };
                if offset < end {
                    visit(&message);
                }
                next.insert(p, (offset + 1).min(end));
                if offset + 1 >= end {
                    open.remove(&p);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                arrived = Instant::now();
                let Some(&end) = open.get(&p) else { continue };
                let at =
                    consumer
                        .position()?
                        .find_partition(topic, p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                let Some(at) = at else { continue };
                if at >= end || limits.committed_only {
                    open.remove(&p);
                    let reached = next.entry(p).or_insert(at);
                    *reached = (*reached).max(at.min(end));
                }
            }
            Some(Err(error)) => return Err(error).with_context(|| format!("reading {topic}")),
        }
    }
    Ok(Reached {
        next,
        complete: true,
    })
}
