//! The redrive log, `<dlq topic>.redrives`: one record per redrive of a dead
//! letter, keyed by its place in the DLQ and written in the redrive's
//! transaction, read back to know what was redriven and how often.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use shared::config::KafkaConfig;

use super::letter::{parse_position, LastRedrive, Origin, RecordPlace};
use super::{scan, Missing};

/// The redrive log of the DLQ `topic`.
pub(crate) fn topic(topic: &str) -> String {
    format!("{topic}.redrives")
}

/// A record of the redrive log (its key: the dead letter's `partition:offset`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    /// The copy's `redrive-count`.
    pub redrive_count: i64,
    /// Where the copy landed.
    pub to: Origin,
    pub at: DateTime<Utc>,
    /// The first origin of the record the copy is of.
    #[serde(default)]
    pub origin: Option<Origin>,
}

/// What the log says of one dead letter.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    /// Times it was redriven.
    pub redrives: i64,
    pub last: LastRedrive,
}

/// What the redrive log says.
#[derive(Default)]
pub(crate) struct Log {
    /// Per dead letter (`partition`, `offset`), its redrives.
    pub letters: HashMap<(i32, i64), LogEntry>,
    /// Per record (its first origin), the highest `redrive-count` of its copies.
    pub records: HashMap<RecordPlace, i64>,
}

/// Reads the redrive log. Records that do not parse are skipped. Blocking.
pub(crate) fn read(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Log> {
    let mut log = Log::default();
    // No log yet: nothing was redriven.
    scan(kafka, topic, Missing::Empty, |message| {
        let Some(at) = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(parse_position)
        else {
            return;
        };
        let Some(record) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<LogRecord>(p).ok())
        else {
            return;
        };
        if let Some(origin) = &record.origin {
            let highest = log.records.entry(origin.place()).or_default();
            *highest = (*highest).max(record.redrive_count);
        }
        let last = LastRedrive {
            at: record.at,
            redrive_count: record.redrive_count,
            to: record.to,
        };
        let entry = log.letters.entry(at).or_insert(LogEntry {
            redrives: 0,
            last: last.clone(),
        });
        entry.redrives += 1;
        entry.last = last;
    })?;
    Ok(log)
}
