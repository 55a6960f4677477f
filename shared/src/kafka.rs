//! Kafka client construction, so every service talks to the broker the same way.

pub mod bounded;

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{librdkafka_key, KafkaConfig};

/// The settings every client shares: brokers and reconnect pacing.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &cfg.brokers)
        // Loopback and single-node set-ups: do not wait seconds for a reconnect.
        .set("reconnect.backoff.max.ms", "1000");
    client
}

/// The producer settings that make writes safe: idempotence (no duplicates
/// from retries, per-partition order kept), `acks=all`, and a bounded
/// delivery time so callers get an answer when the broker is down.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut client = client_config(cfg);
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The Java client's partitioner: a key lands on the same partition
        // whichever client produced it (console producer, gateway, loadgen),
        // so one entity's events stay in one partition, in order.
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", cfg.delivery_timeout_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    for (key, value) in &cfg.producer {
        client.set(librdkafka_key(key), value);
    }
    client
}

/// An idempotent, `acks=all` producer.
pub fn producer(cfg: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    producer_config(cfg)
        .create()
        .context("creating Kafka producer")
}

/// An assign-only reader (replays, the DLQ tools): `group` is never joined
/// (librdkafka wants one even so), nothing is committed, only committed
/// transactional data is read, and the end of a partition is reported.
/// `tuning` comes before the configured `[kafka.consumer]` overrides, which win.
pub fn reader_config(cfg: &KafkaConfig, group: &str, tuning: &[(&str, &str)]) -> ClientConfig {
    let mut client = client_config(cfg);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    for (key, value) in tuning {
        client.set(*key, *value);
    }
    for (key, value) in &cfg.consumer {
        client.set(librdkafka_key(key), value);
    }
    client
}

/// The local queue of a consumer that keeps up with a stream: bounded (16
/// MiB, 20,000 records a partition) and refilled as soon as it drains below
/// that. librdkafka's defaults (64 MiB, 100,000 records a partition, and a
/// 1 s pause once a partition's queue was full) kept a worker that reads
/// faster than one fetch per second stalled most of each second (~200,000
/// records/s, mostly idle), and held up to 64 MiB of prefetched records.
pub const STREAM_QUEUE: [(&str, &str); 3] = [
    ("queued.max.messages.kbytes", "16384"),
    ("queued.min.messages", "20000"),
    ("fetch.queue.backoff.ms", "5"),
];

/// A consumer in `group` that commits nothing by itself and reads only
/// committed transactional data; callers decide when an offset is done.
/// Its queue is [`STREAM_QUEUE`].
pub fn consumer_config(cfg: &KafkaConfig, group: &str) -> ClientConfig {
    let mut client = client_config(cfg);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
    for (key, value) in STREAM_QUEUE {
        client.set(key, value);
    }
    for (key, value) in &cfg.consumer {
        client.set(librdkafka_key(key), value);
    }
    client
}

/// A stream consumer with [`consumer_config`].
pub fn consumer(cfg: &KafkaConfig, group: &str) -> anyhow::Result<StreamConsumer> {
    consumer_config(cfg, group)
        .create()
        .context("creating Kafka consumer")
}

/// The context of assign-only readers (replays, the mailer's address store)
/// that ask for end-of-partition events: librdkafka reports those on the
/// client's main queue as well, where rdkafka's default context would log
/// each as an error. They are expected there; every other error is counted
/// and logged.
pub struct ReaderContext {
    name: &'static str,
}

impl ReaderContext {
    pub fn new(name: &'static str) -> Self {
        Self { name }
    }
}

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if let KafkaError::Global(RDKafkaErrorCode::PartitionEOF) = error {
            return;
        }
        metrics::counter!("kappa_kafka_client_errors_total", "client" => self.name).increment(1);
        tracing::warn!(reader = self.name, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for ReaderContext {}

/// An admin client for topic management.
pub fn admin(cfg: &KafkaConfig) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    client_config(cfg)
        .create()
        .context("creating Kafka admin client")
}

/// Creates `topic` unless it exists; `retention_ms = -1` keeps it forever.
/// Its replication factor and `min.insync.replicas` are the cluster's
/// defaults (`default.replication.factor`, `min.insync.replicas`): 1 on the
/// single development broker, 3 and 2 on the three-broker cluster.
pub async fn ensure_topic(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
    retention_ms: i64,
) -> anyhow::Result<()> {
    let admin = admin(cfg)?;
    let retention = retention_ms.to_string();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
        .set("retention.ms", &retention);
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating topic")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Low and high watermarks of every partition of `topic`, in partition order.
/// A topic the metadata lists no partitions of is an error, not an empty
/// topic: it does not exist, or was created a moment ago and the broker
/// answering does not know it yet (a caller that took that for zero
/// partitions handed out page-count tasks with none).
pub async fn watermarks(cfg: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let cfg = cfg.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = client_config(&cfg).create()?;
        let marks = bounded::watermarks(&client, &topic, Duration::from_secs(10))?;
        anyhow::ensure!(
            !marks.is_empty(),
            "topic {topic}: the metadata lists no partitions (not created, or not known yet)"
        );
        Ok(marks.into_values().collect())
    })
    .await?
}

/// One record to produce: what a Kafka-mode worker's transaction writes
/// (`worker::Outputs`), a dead letter among them (`dlq::record`).
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Epoch milliseconds; `None`: the producer stamps it.
    pub timestamp: Option<i64>,
    /// `None`: the partitioner picks by key (murmur2, like every producer
    /// of the suite); `Some`: this partition (e.g. a marker to each one).
    pub partition: Option<i32>,
}
