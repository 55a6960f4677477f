//! A redrive: the original records of the dead letters a [`Filter`] takes go
//! back to their origin topics, one copy per record, with the redrive log's
//! records, in one Kafka transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::{Delivery, DeliveryFuture};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;
use shared::config::KafkaConfig;
use shared::dlq::redrive as rh;
use utoipa::ToSchema;

use super::filter::Filter;
use super::letter::{LastRedrive, Meta, Origin, RecordPlace};
use super::{log, scan, DeadLetterQueue, DlqError, Missing};

/// Why a redrive refuses a dead letter (the `why` of an answer and of
/// `kappa_dlq_redrive_refused_total`).
pub(crate) const REFUSALS: [&str; 4] = [
    "max_redrives",
    "already_redriven",
    "no_origin",
    "origin_topic_not_allowed",
];
/// Refused dead letters listed in a redrive's answer (all are counted).
const MAX_REFUSED_LISTED: usize = 1000;
/// How long a transaction call may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Why a dead letter is not redriven.
struct Refusal {
    why: &'static str,
    message: String,
    count: i64,
}

impl Refusal {
    fn of(
        self,
        meta: &Meta,
        partition: i32,
        offset: i64,
        entry: Option<&log::LogEntry>,
    ) -> Refused {
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

impl DeadLetterQueue {
    /// Whether a dead letter may be redriven: its first origin and the
    /// copy's `redrive-count` if so. `published` is the highest count of the
    /// copies of its record redriven so far (from any of its dead letters).
    fn judge(
        &self,
        meta: &Meta,
        entry: Option<&log::LogEntry>,
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
    /// Run it on a task of its own: a redrive cancelled halfway leaves its
    /// transaction open until the broker times it out.
    pub(crate) async fn redrive(
        self: Arc<Self>,
        filter: Filter,
    ) -> Result<RedriveAnswer, DlqError> {
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
                let log = log::read(&this.kafka, &this.log_topic)?;
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
            .await?
            .map_err(DlqError::Unreadable)?;

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
        Ok(RedriveAnswer {
            dry_run: filter.dry_run,
            matched,
            max_redrives: self.max_redrives,
            redriven,
            refused,
            refused_counts,
            more,
        })
    }

    /// Publishes the copies and their log records in one transaction.
    async fn publish(
        &self,
        producer: Arc<FutureProducer>,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Redriven>, DlqError> {
        let begin = producer.clone();
        tokio::task::spawn_blocking(move || begin.begin_transaction())
            .await?
            .map_err(DlqError::not_committed)?;
        let sent = self.copies(&producer, candidates).await;
        let outcome = match sent {
            Ok(redriven) => {
                let commit = producer.clone();
                tokio::task::spawn_blocking(move || commit.commit_transaction(TXN_TIMEOUT))
                    .await?
                    .map(|()| redriven)
                    .map_err(DlqError::not_committed)
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
    ) -> Result<Vec<Redriven>, DlqError> {
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
                .map_err(|(error, _)| DlqError::not_committed(error))?;
            sent.push((redriven, delivery));
        }
        let mut redriven = Vec::with_capacity(sent.len());
        let mut logged = Vec::with_capacity(sent.len());
        for (mut copy, delivery) in sent {
            let delivery = delivered(delivery).await?;
            copy.to = Some(Origin {
                topic: copy.origin.topic.clone(),
                partition: delivery.partition,
                offset: delivery.offset,
                timestamp: copy.origin.timestamp,
                line: None,
            });
            let entry = log::LogRecord {
                redrive_count: copy.redrive_count,
                to: copy.to.clone().expect("just set"),
                at: Utc::now(),
                origin: Some(copy.origin.clone()),
            };
            let value = serde_json::to_vec(&entry).map_err(DlqError::not_committed)?;
            // One log record per dead letter the copy stands for.
            for letter in &copy.dead_letters {
                let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.log_topic)
                    .key(letter.as_str())
                    .payload(value.as_slice());
                let delivery = producer
                    .send_result(record)
                    .map_err(|(error, _)| DlqError::not_committed(error))?;
                logged.push(delivery);
            }
            redriven.push(copy);
        }
        for delivery in logged {
            delivered(delivery).await?;
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

/// Where a record of the transaction landed, once the broker acknowledged it.
async fn delivered(delivery: DeliveryFuture) -> Result<Delivery, DlqError> {
    match delivery.await {
        Ok(Ok(delivery)) => Ok(delivery),
        Ok(Err((error, _))) => Err(DlqError::not_committed(error)),
        Err(cancelled) => Err(DlqError::not_committed(cancelled)),
    }
}
