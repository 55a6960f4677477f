//! What a Kafka-mode worker produces: records, committed in the same
//! transaction as the offsets they come from.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::event::Event;
use crate::kafka::Output;

/// The producer of a Kafka-mode worker's transactions.
pub(super) type TxProducer = ThreadedProducer<DefaultProducerContext>;

/// What a Kafka-mode worker's batch produces.
#[derive(Debug, Default)]
pub struct Outputs {
    records: Vec<Output>,
}

impl Outputs {
    /// Adds a record.
    pub fn push(&mut self, output: Output) {
        self.records.push(output);
    }

    /// Adds an event to `topic`, keyed by its entity, stamped with its time.
    pub fn event(&mut self, topic: &str, event: &Event) {
        self.push(Output {
            topic: topic.to_owned(),
            key: Some(event.key().as_bytes().to_vec()),
            payload: event.to_json(),
            headers: Vec::new(),
            timestamp: event.ts.map(|t| t.timestamp_millis()),
            partition: None,
        });
    }

    /// The records so far.
    pub fn records(&self) -> &[Output] {
        &self.records
    }

    pub(super) fn into_records(self) -> Vec<Output> {
        self.records
    }
}

/// Produces one record in the open transaction, waiting while the local
/// queue is full.
pub(super) fn send(producer: &TxProducer, output: &Output) -> Result<(), KafkaError> {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &output.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&output.topic)
        .payload(output.payload.as_slice())
        .headers(headers);
    if let Some(key) = &output.key {
        record = record.key(key);
    }
    if let Some(ts) = output.timestamp {
        record = record.timestamp(ts);
    }
    if let Some(partition) = output.partition {
        record = record.partition(partition);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error),
        }
    }
}
