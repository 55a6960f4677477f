//! The dead-letter queue as a tool (`GET /dlq`, `POST /dlq/redrive` in
//! `routes::dlq`): listing it and redriving what it holds.
//!
//! Both read the DLQ topic from its earliest offsets up to the end offsets
//! of the moment (a snapshot), with a short-lived reader that is assigned the
//! partitions and joins no group. The list pages through it with a cursor
//! of per-partition offsets and counts every dead letter by reason (its
//! code). A redrive republishes the original record of the matching dead
//! letters (payload, key, its own headers, its event time; a `key_mismatch`
//! is keyed by its entity instead) to its origin topic with a `redrive-count` header and its first origin
//! (`redrive.origin.*`, see [`shared::dlq::redrive`]); the DLQ writers
//! carry those headers into the next dead letter if the copy fails again,
//! so `dlq.max_redrives` holds across loops.
//!
//! One record, one copy: every consumer group that refuses a record writes
//! a dead letter of its own, and a page-count job writes one per bad line
//! each time it reads it; a redrive republishes each record (each line:
//! its first origin) once, whatever number of dead letters stand for it,
//! and marks them all redriven. A copy of an event without an id is given
//! the id derived from its first origin by every consumer
//! ([`shared::consume::Received::given_id`]), so a copy redriven again is a
//! repeat they skip, and a record that fails again comes back as one copy,
//! never as many as there were dead letters.
//!
//! Which dead letters were redriven is kept on the broker, in the redrive
//! log `<dlq topic>.redrives` (one partition, kept forever; created by the
//! first redrive): one record per redrive, keyed by the dead letter's place, written
//! in the same Kafka transaction as the copies. So a redrive is atomic (the
//! copies and their log records are committed together, or neither), and
//! the same dead letter is redriven once, again only when asked (`again`),
//! each time counting toward the maximum. Redrives are serialized: one at a
//! time per process, and across gateways by the transactional id
//! (`kappa-dlq-redrive-<dlq topic>`), which fences a concurrent one.
//!
//! - [`letter`]: what a dead letter says (its headers, its payload's preview);
//! - [`list`]: a page of dead letters after a [`list::Cursor`];
//! - [`filter`]: which dead letters a redrive takes, checked;
//! - [`redrive`]: the redrive itself, one Kafka transaction;
//! - [`log`]: the redrive log, read back.

pub(crate) mod filter;
pub(crate) mod letter;
pub(crate) mod list;
pub(crate) mod log;
pub(crate) mod redrive;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::BorrowedMessage;
use shared::config::{KafkaConfig, Settings};
use shared::http::{Limit, LimitError};
use shared::kafka::bounded::{self, Limits};
use shared::kafka::ReaderContext;

/// Records per page (or per redrive): 100 unless asked otherwise, 1000 at most.
pub(crate) const LIMIT: Limit = Limit::new(100, 1000);
/// A read of the DLQ that receives nothing for this long fails (503).
const STALL: Duration = Duration::from_secs(15);

/// Why the DLQ could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DlqError {
    /// A parameter or a filter's field does not hold (`code`, naming `field`).
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: String,
        message: String,
    },
    /// A `limit` out of range.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The DLQ topic or the redrive log could not be read; a retry may succeed.
    #[error("the dead-letter topic could not be read: {0:#}")]
    Unreadable(anyhow::Error),
    /// The redrive's transaction did not commit: nothing of it is visible.
    #[error("the redrive could not be committed: {0}")]
    NotCommitted(String),
    /// A task of the request panicked.
    #[error("{0}")]
    Internal(#[from] tokio::task::JoinError),
}

impl DlqError {
    pub(crate) fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        DlqError::Invalid {
            code,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn not_committed(error: impl std::fmt::Display) -> Self {
        DlqError::NotCommitted(error.to_string())
    }
}

/// One DLQ topic and its redrive log: what the routes share.
pub(crate) struct DeadLetterQueue {
    kafka: KafkaConfig,
    topic: String,
    /// The redrive log, `<topic>.redrives`.
    log_topic: String,
    log_ready: AtomicBool,
    max_redrives: u32,
    /// Topics a redrive may write to: the stream's own (a dead letter names
    /// its origin in headers anyone can write, so it is not trusted blindly).
    targets: Vec<String>,
    /// One redrive at a time in this process (across processes, the
    /// transactional id fences).
    redriving: tokio::sync::Mutex<()>,
}

impl DeadLetterQueue {
    /// The DLQ of `settings.kafka.dlq_topic`. Touches no broker: the
    /// gateway starts without one.
    pub(crate) fn new(settings: &Settings) -> Self {
        for why in redrive::REFUSALS {
            shared::catalogue::zero(
                "kappa_dlq_redrive_refused_total",
                &[("why", why.to_owned())],
            );
        }
        let topic = settings.kafka.dlq_topic.clone();
        Self {
            kafka: settings.kafka.clone(),
            log_topic: log::topic(&topic),
            topic,
            log_ready: AtomicBool::new(false),
            max_redrives: settings.dlq.max_redrives,
            targets: vec![
                settings.kafka.events_topic.clone(),
                settings.kafka.access_logs_topic.clone(),
            ],
            redriving: tokio::sync::Mutex::new(()),
        }
    }

    /// Creates the redrive log unless it exists (once per process).
    pub(crate) async fn ensure_log(&self) -> Result<(), DlqError> {
        if self.log_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        shared::kafka::ensure_topic(&self.kafka, &self.log_topic, 1, -1)
            .await
            .map_err(DlqError::Unreadable)?;
        self.log_ready.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// A reader of the DLQ: assigned its partitions, in no group, committing nothing.
fn reader(kafka: &KafkaConfig) -> anyhow::Result<BaseConsumer<ReaderContext>> {
    shared::kafka::reader_config(kafka, "kappa-dlq-tool", &[])
        .create_with_context(ReaderContext::new("dlq"))
        .context("creating the DLQ reader")
}

/// What [`scan`] makes of a topic that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    Fail,
    Empty,
}

/// Reads every record of `topic` from the earliest offsets up to the end
/// offsets as they are now (or the end of what is committed, if a
/// transaction is open), handing each to `visit` (partitions interleave,
/// each in order). Returns, per partition, the offset it was read up to.
/// Blocking: run it on a blocking thread.
pub(crate) fn scan(
    kafka: &KafkaConfig,
    topic: &str,
    missing: Missing,
    visit: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer = reader(kafka)?;
    let spans = bounded::to_end(&consumer, topic, &BTreeMap::new(), Duration::from_secs(10))?;
    if spans.is_empty() && missing == Missing::Empty {
        return Ok(BTreeMap::new());
    }
    anyhow::ensure!(
        !spans.is_empty(),
        "the topic {topic} has no partitions (does it exist?)"
    );
    let limits = Limits {
        stall: Some(STALL),
        committed_only: true,
        ..Limits::default()
    };
    Ok(bounded::read(&consumer, topic, &spans, limits, visit)?.next)
}
