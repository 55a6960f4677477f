//! The dead-letter queue: a message that cannot be parsed, resolved or
//! stored is copied to the DLQ topic, byte for byte, with the reason and its
//! origin in headers, and the consumer goes on. Nothing is dropped silently.
//! The `dlq.*` headers are this module's alone: ones the message arrived
//! with are dropped, so a record cannot bring its own reason. Every other
//! header is copied, among them the [`redrive`] headers of a record the
//! gateway redrove: its dead letter still counts the redrives, so the
//! redrive limit holds across loops.

pub mod codes;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::kafka::Output;

/// Header names on dead-lettered messages.
pub mod header {
    pub const REASON: &str = "dlq.reason";
    pub const CODE: &str = "dlq.code";
    pub const TOPIC: &str = "dlq.origin.topic";
    pub const PARTITION: &str = "dlq.origin.partition";
    pub const OFFSET: &str = "dlq.origin.offset";
    pub const TIMESTAMP: &str = "dlq.origin.timestamp";
    /// For a line of a record that holds several (an access log): its
    /// index in the record, from 0.
    pub const LINE: &str = "dlq.origin.line";
}

/// Header names on records republished from the DLQ (`POST /dlq/redrive`
/// on the gateway). They are not `dlq.*`, so [`record`] and
/// [`DeadLetters::send`] carry them into the next dead letter of a
/// redriven record that fails again.
pub mod redrive {
    /// How many times the record was redriven (1 on the first copy).
    pub const COUNT: &str = "redrive-count";
    /// Where the record was first read before it was ever dead-lettered.
    pub const ORIGIN_TOPIC: &str = "redrive.origin.topic";
    pub const ORIGIN_PARTITION: &str = "redrive.origin.partition";
    pub const ORIGIN_OFFSET: &str = "redrive.origin.offset";
    pub const ORIGIN_TIMESTAMP: &str = "redrive.origin.timestamp";
    /// For a line of a record that held several: its index there.
    pub const ORIGIN_LINE: &str = "redrive.origin.line";
    /// The dead letter this copy was redriven from (in the DLQ topic).
    pub const DLQ_TOPIC: &str = "redrive.dlq.topic";
    pub const DLQ_PARTITION: &str = "redrive.dlq.partition";
    pub const DLQ_OFFSET: &str = "redrive.dlq.offset";
}

/// The headers a dead letter carries over from its record: all but
/// `dlq.*` (a record cannot bring its own reason). Among them the
/// [`redrive`] headers of a redrive's copy, so its count and first origin
/// survive every hop.
pub fn carried<H: Headers>(headers: Option<&H>) -> Vec<(String, Vec<u8>)> {
    headers
        .map(|h| {
            h.iter()
                .filter(|h| !h.key.starts_with("dlq."))
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a dead letter's record was read, for its `dlq.origin.*` headers.
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp in ms (-1 if none).
    pub timestamp: i64,
    /// The line's index, for one line of a record of several.
    pub line: Option<usize>,
}

/// The headers of a dead letter: the `carried` ones, then the reason and
/// the origin.
pub fn letter_headers(
    mut carried: Vec<(String, Vec<u8>)>,
    code: &str,
    reason: &str,
    origin: &Origin<'_>,
) -> Vec<(String, Vec<u8>)> {
    for (key, value) in [
        (header::REASON, reason.to_owned()),
        (header::CODE, code.to_owned()),
        (header::TOPIC, origin.topic.to_owned()),
        (header::PARTITION, origin.partition.to_string()),
        (header::OFFSET, origin.offset.to_string()),
        (header::TIMESTAMP, origin.timestamp.to_string()),
    ] {
        carried.push((key.to_owned(), value.into_bytes()));
    }
    if let Some(line) = origin.line {
        carried.push((header::LINE.to_owned(), line.to_string().into_bytes()));
    }
    carried
}

/// The headers of a dead letter of a whole message.
fn headers<M: Message>(message: &M, code: &str, reason: &str) -> Vec<(String, Vec<u8>)> {
    let origin = Origin {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis().unwrap_or(-1),
        line: None,
    };
    letter_headers(carried(message.headers()), code, reason, &origin)
}

/// The dead letter of `message` as a record for `topic` (for writers that
/// produce it themselves, e.g. inside a Kafka transaction).
pub fn record<M: Message>(message: &M, code: &str, reason: &str, topic: &str) -> Output {
    Output {
        topic: topic.to_owned(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers: headers(message, code, reason),
        timestamp: None,
        partition: None,
    }
}

/// Writes rejected messages to the DLQ topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    kafka: KafkaConfig,
}

impl DeadLetters {
    /// A writer to `kafka.dlq_topic`.
    pub fn new(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        Ok(Self {
            producer: crate::kafka::producer(kafka)?,
            topic: kafka.dlq_topic.clone(),
            kafka: kafka.clone(),
        })
    }

    /// Copies `message` to the DLQ and waits until the broker acknowledged it,
    /// so the caller may then advance past the original offset.
    #[tracing::instrument(skip_all, fields(topic = message.topic(), partition = message.partition(), offset = message.offset(), code))]
    pub async fn send<M: Message>(
        &self,
        message: &M,
        code: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let letter = record(message, code, reason, &self.topic);
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (key, value) in &letter.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .headers(headers)
            .payload(&letter.payload);
        if let Some(key) = &letter.key {
            out = out.key(key);
        }
        self.producer
            .send(out, Timeout::Never)
            .await
            .map_err(|(err, _)| err)
            .context("writing to the dead-letter topic")?;
        metrics::counter!("kappa_dlq_messages_total", "code" => codes::bounded(code)).increment(1);
        static SAMPLER: Sampler = Sampler::new(SAMPLE_WINDOW);
        SAMPLER.log(Instant::now(), code, |more| match more {
            None => tracing::warn!(
                code,
                reason,
                "message dead-lettered (a sample: the rest of the interval is counted)"
            ),
            Some(counts) => {
                tracing::warn!(?counts, "more messages dead-lettered in the last interval")
            }
        });
        Ok(())
    }

    /// The original record at `topic`/`partition`/`offset`, read back from
    /// the broker (for events refused after parsing: their copy in the DLQ
    /// is still the record, byte for byte).
    pub async fn fetch_origin(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> anyhow::Result<OwnedMessage> {
        let mut found = self
            .fetch_origins(vec![(topic.to_owned(), partition, offset)])
            .await?;
        Ok(found.remove(0))
    }

    /// The original records at these origins (topic, partition, offset), in
    /// their order, read back with one reader (a seek each).
    pub async fn fetch_origins(
        &self,
        origins: Vec<(String, i32, i64)>,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<OwnedMessage>> {
            // Assign-only: the group id is required, never joined.
            let consumer: BaseConsumer = crate::kafka::client_config(&kafka)
                .set("group.id", "kappa-dlq-origin")
                .set("enable.auto.commit", "false")
                .create()
                .context("creating a reader for the origin")?;
            let mut found = Vec::with_capacity(origins.len());
            for (topic, partition, offset) in origins {
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
                consumer.assign(&list)?;
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                let message = loop {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "record {topic}/{partition}/{offset} could not be read back"
                    );
                    if let Some(message) = consumer.poll(Duration::from_millis(500)) {
                        let message = message?;
                        if message.offset() == offset {
                            break message.detach();
                        }
                    }
                };
                found.push(message);
            }
            Ok(found)
        })
        .await?
    }

    /// [`DeadLetters::send`] for the record at an origin (see [`DeadLetters::fetch_origin`]).
    pub async fn send_from_origin(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        code: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let message = self.fetch_origin(topic, partition, offset).await?;
        self.send(&message, code, reason).await
    }
}

/// Reads a header as UTF-8 text.
pub fn header_str<'a, H: Headers>(headers: &'a H, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// How often a flood of dead letters is summarised in the log.
pub(crate) const SAMPLE_WINDOW: Duration = Duration::from_secs(10);

/// Logs one record per interval in full (a sample) and counts the rest by
/// code; the counts are logged with the first record of a later interval.
/// A poison flood of 5,000 records is then a few lines, not 5,000.
pub(crate) struct Sampler {
    window: Duration,
    state: Mutex<SampleState>,
}

struct SampleState {
    started: Option<Instant>,
    suppressed: BTreeMap<String, u64>,
}

impl Sampler {
    pub(crate) const fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::new(SampleState {
                started: None,
                suppressed: BTreeMap::new(),
            }),
        }
    }

    /// Notes a record with `code` at `now`; calls `emit(Some(counts))` for
    /// what an ended interval suppressed, then `emit(None)` if this record
    /// is the new interval's sample.
    pub(crate) fn log(
        &self,
        now: Instant,
        code: &str,
        mut emit: impl FnMut(Option<&BTreeMap<String, u64>>),
    ) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let open = state
            .started
            .is_some_and(|started| now.duration_since(started) < self.window);
        if open {
            *state.suppressed.entry(code.to_owned()).or_default() += 1;
            return;
        }
        if !state.suppressed.is_empty() {
            emit(Some(&state.suppressed));
            state.suppressed.clear();
        }
        state.started = Some(now);
        emit(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedHeaders, Timestamp};

    #[test]
    fn a_redriven_record_keeps_its_redrive_headers_and_loses_forged_dlq_ones() {
        let mut incoming = OwnedHeaders::new();
        for (key, value) in [
            ("trace", "t-1"),
            (redrive::COUNT, "2"),
            (redrive::ORIGIN_TOPIC, "events"),
            (redrive::ORIGIN_OFFSET, "7"),
            (header::REASON, "forged"),
            (header::OFFSET, "999"),
        ] {
            incoming = incoming.insert(Header {
                key,
                value: Some(value),
            });
        }
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"u1".to_vec()),
            "events".into(),
            Timestamp::CreateTime(1_000),
            3,
            41,
            Some(incoming),
        );
        let letter = record(&message, "refused", "no such user", "events.dlq");
        let get = |name: &str| -> Vec<&str> {
            letter
                .headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| std::str::from_utf8(v).unwrap())
                .collect()
        };
        assert_eq!(get(redrive::COUNT), ["2"]);
        assert_eq!(get(redrive::ORIGIN_TOPIC), ["events"]);
        assert_eq!(get(redrive::ORIGIN_OFFSET), ["7"]);
        assert_eq!(get("trace"), ["t-1"]);
        assert_eq!(get(header::REASON), ["no such user"]);
        assert_eq!(get(header::OFFSET), ["41"]);
        assert_eq!(letter.key.as_deref(), Some(&b"u1"[..]));
    }

    #[test]
    fn a_flood_is_one_sample_and_one_count_per_interval() {
        let sampler = Sampler::new(Duration::from_secs(10));
        let start = Instant::now();
        let mut lines = Vec::new();
        for i in 0..5000u64 {
            let at = start + Duration::from_millis(i * 3); // 15 s of records
            let code = if i % 2 == 0 {
                "invalid_json"
            } else {
                "refused"
            };
            sampler.log(at, code, |more| lines.push(more.cloned()));
        }
        // Two intervals: a sample each, and between them the first's count.
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], None);
        let counts = lines[1].clone().unwrap();
        assert_eq!(counts.values().sum::<u64>(), 3333, "{counts:?}");
        assert_eq!(counts["refused"], 1667, "{counts:?}");
        assert_eq!(lines[2], None);
    }
}
