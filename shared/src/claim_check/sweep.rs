//! The sweeper of pending payloads. A payload is `pending` from its insert
//! until the writer marks it committed after the broker acknowledged the
//! event that carries its token. A writer killed between those two steps
//! leaves a payload that *is* referenced on the topic but still pending;
//! deleting it after the grace period would leave a consumer with a token
//! whose bytes are gone. So before deleting, the sweeper reads the topic
//! where such a reference could be and commits what it finds referenced.
//!
//! Where to read: every round first records the topic's end offsets in
//! `claim_check_scans`, stamped after they were read. A payload inserted
//! after such a snapshot can only be referenced at or after those offsets
//! (its event is produced after the insert), so the scan for a round's
//! candidates starts at the newest snapshot older than the oldest of them;
//! without one (a first start, pruned snapshots) it reads the whole retained
//! topic. It ends at the end offsets of now: candidates are older than the
//! grace period, which exceeds the producer's delivery timeout, so no
//! reference to them can still be on its way. Rounds with no candidate read
//! nothing, and candidates exist only after a crash or a failed produce.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use memchr::memmem;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{ClaimError, ClaimStore};
use crate::config::KafkaConfig;
use crate::event::{parse, EventBody};

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Pending payloads found referenced on the topic: committed, kept.
    pub kept: u64,
    /// Pending payloads nothing references: deleted.
    pub deleted: u64,
    /// Records read to tell them apart.
    pub records_read: u64,
}

/// Sweeps the pending payloads referenced from `topic`.
pub struct Sweeper {
    pub store: ClaimStore,
    pub kafka: KafkaConfig,
    pub topic: String,
    pub grace: Duration,
}

impl Sweeper {
    /// Sweeps every `interval` until `shutdown`; a failed round is retried
    /// the next interval (nothing is deleted unless its scan completed).
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            match self.sweep().await {
                Ok(swept) if swept == Swept::default() => {}
                Ok(swept) => tracing::info!(
                    kept = swept.kept,
                    deleted = swept.deleted,
                    records_read = swept.records_read,
                    "swept pending claim-check payloads"
                ),
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "claim-check sweep failed; retrying next interval"
                ),
            }
        }
    }

    /// One round: a snapshot of the topic's end, then the candidates
    /// (pending for longer than the grace period) settled by a scan.
    pub async fn sweep(&self) -> anyhow::Result<Swept> {
        self.snapshot().await?;
        let pool = &self.store.pool;
        let candidates: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT token, created_at FROM claim_checks
             WHERE state = 'pending' AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 10000",
        )
        .bind(self.grace.as_secs_f64())
        .fetch_all(pool)
        .await
        .map_err(ClaimError::from)?;
        let Some(oldest) = candidates.iter().map(|c| c.1).min() else {
            return Ok(Swept::default());
        };
        let from: Option<Vec<i64>> = sqlx::query_scalar(
            "SELECT offsets FROM claim_check_scans WHERE topic = $1 AND taken_at < $2
             ORDER BY taken_at DESC LIMIT 1",
        )
        .bind(&self.topic)
        .bind(oldest)
        .fetch_optional(pool)
        .await
        .map_err(ClaimError::from)?;
        let wanted: HashSet<Uuid> = candidates.iter().map(|c| c.0).collect();
        let (kafka, topic) = (self.kafka.clone(), self.topic.clone());
        let (found, records_read) = tokio::task::spawn_blocking(move || {
            scan(&kafka, &topic, from.as_deref(), wanted.clone())
        })
        .await
        .context("the scan panicked")??;
        let (referenced, unreferenced): (Vec<Uuid>, Vec<Uuid>) = candidates
            .iter()
            .map(|c| c.0)
            .partition(|t| found.contains(t));
        let mut tx = pool.begin().await.map_err(ClaimError::from)?;
        let kept = sqlx::query(
            "UPDATE claim_checks SET state = 'committed', committed_at = now()
             WHERE token = ANY($1) AND state = 'pending'",
        )
        .bind(&referenced)
        .execute(&mut *tx)
        .await
        .map_err(ClaimError::from)?
        .rows_affected();
        // Only rows still as old as when they were read: a payload stored
        // again meanwhile (content-addressed uploads) restarted its grace.
        let deleted = sqlx::query(
            "DELETE FROM claim_checks
             WHERE token = ANY($1) AND state = 'pending'
               AND created_at < now() - make_interval(secs => $2)",
        )
        .bind(&unreferenced)
        .bind(self.grace.as_secs_f64())
        .execute(&mut *tx)
        .await
        .map_err(ClaimError::from)?
        .rows_affected();
        tx.commit().await.map_err(ClaimError::from)?;
        if kept > 0 {
            tracing::warn!(
                kept,
                "pending payloads were referenced on the topic (their writer died before committing them); kept"
            );
        }
        Ok(Swept {
            kept,
            deleted,
            records_read,
        })
    }

    /// Records the topic's end offsets, stamped after reading them, and
    /// drops snapshots far older than any candidate needs.
    async fn snapshot(&self) -> anyhow::Result<()> {
        let ends: Vec<i64> = crate::kafka::watermarks(&self.kafka, &self.topic)
            .await?
            .into_iter()
            .map(|(_, high)| high)
            .collect();
        let pool = &self.store.pool;
        sqlx::query(
            "INSERT INTO claim_check_scans (topic, offsets, taken_at) VALUES ($1, $2, clock_timestamp())",
        )
        .bind(&self.topic)
        .bind(&ends)
        .execute(pool)
        .await
        .map_err(ClaimError::from)?;
        sqlx::query(
            "DELETE FROM claim_check_scans
             WHERE topic = $1 AND taken_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.topic)
        .bind(self.grace.as_secs_f64() * 4.0 + 3600.0)
        .execute(pool)
        .await
        .map_err(ClaimError::from)?;
        Ok(())
    }
}

/// Reads `topic` from `from` (or its start) to its end now; returns which
/// of `wanted` some record references, and how many records were read.
fn scan(
    kafka: &KafkaConfig,
    topic: &str,
    from: Option<&[i64]>,
    mut wanted: HashSet<Uuid>,
) -> anyhow::Result<(HashSet<Uuid>, u64)> {
    let reader = crate::replay::reader(kafka)?;
    let timeout = Duration::from_secs(10);
    let metadata = reader.fetch_metadata(Some(topic), timeout)?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as i32;
    let mut list = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for p in 0..partitions {
        let (low, high) = reader.fetch_watermarks(topic, p, timeout)?;
        let start = from
            .and_then(|f| f.get(p as usize).copied())
            .unwrap_or(low)
            .max(low);
        if start < high {
            list.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, high);
        }
    }
    let mut found = HashSet::new();
    let mut read = 0u64;
    if ends.is_empty() {
        return Ok((found, read));
    }
    reader.assign(&list)?;
    let claim = memmem::Finder::new(b"\"claim_check\"");
    let assets = memmem::Finder::new(b"\"assets\"");
    while !ends.is_empty() && !wanted.is_empty() {
        match reader.poll(Duration::from_secs(1)) {
            Some(Ok(message)) => {
                read += 1;
                let payload = message.payload().unwrap_or_default();
                // Only envelopes and uploads name tokens: parse just those.
                if claim.find(payload).is_some() || assets.find(payload).is_some() {
                    for token in references(payload) {
                        if wanted.remove(&token) {
                            found.insert(token);
                        }
                    }
                }
                if ends
                    .get(&message.partition())
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    ends.remove(&message.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(error)) => return Err(error).context("scanning the topic for claim checks"),
            None => {}
        }
    }
    Ok((found, read))
}

/// The claim-check tokens a record names: an envelope's, an upload's assets'.
fn references(payload: &[u8]) -> Vec<Uuid> {
    match parse(payload) {
        Ok(crate::event::Envelope::Claimed(claimed)) => vec![claimed.claim_check.token],
        Ok(crate::event::Envelope::Inline(event)) => match event.body {
            EventBody::ProductUploaded(upload) => upload.assets.iter().map(|a| a.token).collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}
