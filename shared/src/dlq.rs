//! The dead-letter queue: a message that cannot be parsed or resolved is
//! copied to the DLQ topic, byte for byte, with the reason and its origin in
//! headers, and the consumer goes on. Nothing is dropped silently.

use anyhow::Context;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Header names on dead-lettered messages.
pub mod header {
    pub const REASON: &str = "dlq.reason";
    pub const CODE: &str = "dlq.code";
    pub const TOPIC: &str = "dlq.origin.topic";
    pub const PARTITION: &str = "dlq.origin.partition";
    pub const OFFSET: &str = "dlq.origin.offset";
    pub const TIMESTAMP: &str = "dlq.origin.timestamp";
}

/// Writes rejected messages to the DLQ topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    /// A writer to `topic` through `producer`.
    pub fn new(producer: FutureProducer, topic: impl Into<String>) -> Self {
        Self {
            producer,
            topic: topic.into(),
        }
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
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let timestamp = message.timestamp().to_millis().unwrap_or(-1).to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let headers = headers
            .insert(Header {
                key: header::REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: header::CODE,
                value: Some(code),
            })
            .insert(Header {
                key: header::TOPIC,
                value: Some(message.topic()),
            })
            .insert(Header {
                key: header::PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: header::OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: header::TIMESTAMP,
                value: Some(&timestamp),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Timeout::Never)
            .await
            .map_err(|(err, _)| err)
            .context("writing to the dead-letter topic")?;
        metrics::counter!("kappa_dlq_messages_total", "code" => code.to_owned()).increment(1);
        tracing::warn!(reason, "message dead-lettered");
        Ok(())
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
