//! The mappers: one consumer group on the tasks topic, one task per
//! transaction. A task's chunk is read with its own consumer (assign and
//! seek, not a group subscription), every line parsed, counts combined per
//! page (or one record per line with the combiner off), and the counts
//! (keyed by page: Kafka's murmur2 partitioner is the reducers' hash),
//! the rejected lines (to the DLQ, with their reason and origin), one
//! `chunk_done` marker per shuffle partition and the task's offset all
//! commit in one Kafka transaction. A mapper killed mid-chunk leaves
//! nothing visible to `read_committed` readers; the chunk is redone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use shared::config::KafkaConfig;
use shared::consume::Received;
use shared::event::{ChunkDone, Envelope, Event, EventBody, EventType, MapTask, PageCount};
use shared::kafka::ReaderContext;
use shared::worker::{KafkaTransactions, Output, Outputs, Refusals, Worker};
use sqlx::PgPool;

use crate::clf;
use crate::store::JobState;

/// How long a chunk may take to read before the task is retried.
const READ_DEADLINE: Duration = Duration::from_secs(120);
/// How long a chunk's read may see nothing of it before its partition is
/// assigned again (a read of a whole chunk takes well under a second).
const STALL: Duration = Duration::from_secs(15);

pub struct Mapper {
    pub pool: PgPool,
    pub reader: Arc<ChunkReader>,
    pub dlq_topic: String,
}

/// A consumer reading chunks by assignment (no group, no commits). Its
/// context keeps the expected end-of-partition events out of the error log.
pub type ChunkReader = BaseConsumer<ReaderContext>;

/// A consumer for reading chunks by assignment (no group, no commits).
pub fn chunk_reader(kafka: &KafkaConfig) -> anyhow::Result<ChunkReader> {
    let mut config = shared::kafka::client_config(kafka);
    config
        .set("group.id", "pagecount-chunk-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760");
    config
        .create_with_context(ReaderContext::new("chunk-reader"))
        .context("creating the chunk reader")
}

/// A record of a chunk.
struct ChunkRecord {
    offset: i64,
    payload: Vec<u8>,
    /// Its timestamp in ms (-1 if none).
    timestamp: i64,
    /// The headers a dead letter of one of its lines carries over (a
    /// redrive's copy keeps its count and first origin).
    carried: Vec<(String, Vec<u8>)>,
}

/// The chunk's records.
fn read_chunk(reader: &ChunkReader, task: &MapTask) -> anyhow::Result<Vec<ChunkRecord>> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&task.topic, task.partition, Offset::Offset(task.start))?;
    reader.assign(&assignment)?;
    let mut records = Vec::with_capacity((task.end - task.start) as usize);
    let until = Instant::now() + READ_DEADLINE;
    let mut stalled_since = Instant::now();
    let mut next = task.start;
    let mut last_error = None;
    while next < task.end {
        anyhow::ensure!(
            Instant::now() < until,
            "reading chunk {} took over {READ_DEADLINE:?} (last client error: {})",
            task.chunk,
            last_error
                .as_ref()
                .map_or("none".to_owned(), |e: &rdkafka::error::KafkaError| e
                    .to_string())
        );
        if stalled_since.elapsed() >= STALL {
            if !restart_stalled(reader, task, next, last_error.as_ref())? {
                break;
            }
            stalled_since = Instant::now();
        }
        match reader.poll(Duration::from_millis(500)) {
            Some(Ok(m)) if m.partition() == task.partition && m.offset() >= task.start => {
                next = m.offset() + 1;
                stalled_since = Instant::now();
                if m.offset() < task.end {
                    records.push(ChunkRecord {
                        offset: m.offset(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        timestamp: m.timestamp().to_millis().unwrap_or(-1),
                        carried: shared::dlq::carried(m.headers()),
                    });
                }
            }
            Some(Ok(_)) => {}
            // The end of the partition before `end`: offsets were removed
            // (retention or compaction); what exists is the chunk.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) if p == task.partition => break,
            // A client-wide error (brokers unreachable, a connection reset)
            // is librdkafka's to recover from: read on until the deadline.
            // The reader, idle between chunks, also holds the errors of an
            // outage long past, and one of those must not fail every chunk
            // after it (it did: a broker restart left the mappers failing
            // each chunk on `AllBrokersDown` while the broker was back).
            Some(Err(error)) => {
                tracing::debug!(%error, chunk = task.chunk, "client error while reading a chunk; reading on");
                last_error = Some(error);
            }
            None => {}
        }
    }
    reader.unassign()?;
    Ok(records)
}

/// Nothing of the chunk came for [`STALL`]: says so with where the
/// partition stands, and assigns the partition again at `next` (a fetcher
/// that stopped starts anew). `false` when the partition ends before
/// `next` (offsets were removed: what was read is the chunk).
fn restart_stalled(
    reader: &ChunkReader,
    task: &MapTask,
    next: i64,
    last_error: Option<&rdkafka::error::KafkaError>,
) -> anyhow::Result<bool> {
    let watermarks = reader.fetch_watermarks(&task.topic, task.partition, STALL);
    tracing::warn!(
        job = task.job_id,
        chunk = task.chunk,
        partition = task.partition,
        next,
        end = task.end,
        watermarks = ?watermarks,
        last_error = ?last_error,
        "no record of the chunk for {STALL:?}; assigning its partition again"
    );
    metrics::counter!("kappa_pagecount_chunk_read_stalls_total").increment(1);
    if matches!(watermarks, Ok((_, high)) if high <= next) {
        return Ok(false);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&task.topic, task.partition, Offset::Offset(next))?;
    reader.unassign()?;
    reader.assign(&assignment)?;
    Ok(true)
}

impl Worker for Mapper {
    type Mode = KafkaTransactions;

    const READS: &'static [EventType] = &[EventType::MapTask];

    async fn apply(&mut self, out: &mut Outputs, events: &[Received]) -> anyhow::Result<Refusals> {
        for received in events {
            let Envelope::Inline(Event {
                body: EventBody::MapTask(task),
                ..
            }) = &received.envelope
            else {
                continue;
            };
            let state = crate::store::state(&self.pool, task.job_id).await?;
            if state != Some(JobState::Running) {
                tracing::info!(
                    job = task.job_id,
                    chunk = task.chunk,
                    ?state,
                    "task of a job not running; skipped"
                );
                continue;
            }
            let started = Instant::now();
            let (reader, owned) = (self.reader.clone(), task.clone());
            let records =
                tokio::task::spawn_blocking(move || read_chunk(&reader, &owned)).await??;
            map_chunk(task, &records, &self.dlq_topic, out);
            metrics::histogram!("kappa_pagecount_map_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("kappa_pagecount_chunks_mapped_total").increment(1);
        }
        Ok(Refusals::none())
    }
}

/// Parses a chunk into `out`: counts, dead letters, then the markers.
fn map_chunk(task: &MapTask, records: &[ChunkRecord], dlq_topic: &str, out: &mut Outputs) {
    let (mut lines, mut rejected) = (0u64, 0u64);
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut singles: Vec<&str> = Vec::new();
    for record in records {
        // A record may hold several lines (a shipper batching them).
        for (index, line) in record
            .payload
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        {
            lines += 1;
            match clf::page(line) {
                Ok(page) if task.combiner => *counts.entry(page).or_default() += 1,
                Ok(page) => singles.push(page),
                Err(reject) => {
                    rejected += 1;
                    out.push(dead_letter(task, record, index, line, reject, dlq_topic));
                }
            }
        }
    }
    let (mut shuffled, mut bytes) = (0u64, 0u64);
    let pages = counts
        .into_iter()
        .chain(singles.into_iter().map(|p| (p, 1)));
    for (page, count) in pages {
        let event = Event::new(EventBody::PageCount(PageCount {
            job_id: task.job_id,
            page: page.to_owned(),
            count,
        }));
        out.event(&task.shuffle_topic, &event);
        shuffled += 1;
        bytes += out.records().last().map_or(0, |r| r.payload.len() as u64);
    }
    for partition in 0..task.shuffle_partitions {
        let marker = Event::new(EventBody::ChunkDone(ChunkDone {
            marker: format!("{}-{}", task.job_id, task.chunk),
            job_id: task.job_id,
            chunk: task.chunk,
            lines,
            rejected,
            records: shuffled,
            bytes,
        }));
        out.push(Output {
            topic: task.shuffle_topic.clone(),
            key: Some(marker.key().as_bytes().to_vec()),
            payload: marker.to_json(),
            partition: Some(partition),
            ..Output::default()
        });
    }
}

/// The dead letter of one line: the line, the record's carried headers,
/// the reason and the line's origin (its record and its index there).
fn dead_letter(
    task: &MapTask,
    record: &ChunkRecord,
    line_index: usize,
    line: &[u8],
    reject: clf::Reject,
    topic: &str,
) -> Output {
    let origin = shared::dlq::Origin {
        topic: &task.topic,
        partition: task.partition,
        offset: record.offset,
        timestamp: record.timestamp,
        line: Some(line_index),
    };
    Output {
        topic: topic.to_owned(),
        payload: line.to_vec(),
        headers: shared::dlq::letter_headers(
            record.carried.clone(),
            reject.code(),
            reject.reason(),
            &origin,
        ),
        ..Output::default()
    }
}
