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
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ClaimStore;
use crate::config::KafkaConfig;
use crate::event::{Envelope, EventBody};
use crate::replay;

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
            match self.sweep(&shutdown).await {
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
    /// (pending for longer than the grace period) settled by a scan. A scan
    /// that `shutdown` stops fails the round: nothing is deleted.
    pub async fn sweep(&self, shutdown: &CancellationToken) -> anyhow::Result<Swept> {
        self.snapshot().await?;
        let pool = &self.store.pool;
        let candidates: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT token, created_at FROM claim_checks
             WHERE state = 'pending' AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 10000",
        )
        .bind(self.grace.as_secs_f64())
        .fetch_all(pool)
        .await?;
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
        .await?;
        let wanted: HashSet<Uuid> = candidates.iter().map(|c| c.0).collect();
        let (kafka, topic, shutdown) = (self.kafka.clone(), self.topic.clone(), shutdown.clone());
        let (found, records_read) = tokio::task::spawn_blocking(move || {
            scan(&kafka, &topic, from.as_deref(), &wanted, &shutdown)
        })
        .await
        .context("the scan panicked")??;
        let (referenced, unreferenced): (Vec<Uuid>, Vec<Uuid>) = candidates
            .iter()
            .map(|c| c.0)
            .partition(|t| found.contains(t));
        let mut tx = pool.begin().await?;
        let kept = sqlx::query(
            "UPDATE claim_checks SET state = 'committed', committed_at = now()
             WHERE token = ANY($1) AND state = 'pending'",
        )
        .bind(&referenced)
        .execute(&mut *tx)
        .await?
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
        .await?
        .rows_affected();
        tx.commit().await?;
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
        ?;
        sqlx::query(
            "DELETE FROM claim_check_scans
             WHERE topic = $1 AND taken_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.topic)
        .bind(self.grace.as_secs_f64() * 4.0 + 3600.0)
        .execute(pool)
        .await?;
        Ok(())
    }
}

/// Reads `topic` from `from` (or its start) to its end now, with the replay
/// reader; returns which of `wanted` some record references, and how many
/// records were read.
fn scan(
    kafka: &KafkaConfig,
    topic: &str,
    from: Option<&[i64]>,
    wanted: &HashSet<Uuid>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(HashSet<Uuid>, u64)> {
    let mut plan = replay::plan(kafka, topic, replay::From::Earliest, None)?;
    for (p, span) in &mut plan.spans {
        if let Some(&start) = from.and_then(|f| f.get(*p as usize)) {
            span.start = span.start.max(start);
        }
    }
    let progress = replay::Progress::new(plan.total());
    let mut found = HashSet::new();
    replay::run(kafka, &plan, &progress, shutdown, |record| {
        if let Ok(received) = record {
            found.extend(references(&received.envelope).filter(|t| wanted.contains(t)));
        }
    })?;
    Ok((found, plan.total()))
}

/// The claim-check tokens a record names: an envelope's, an upload's assets'.
fn references(envelope: &Envelope) -> impl Iterator<Item = Uuid> + '_ {
    let (claimed, assets) = match envelope {
        Envelope::Claimed(claimed) => (Some(claimed.claim_check.token), &[][..]),
        Envelope::Inline(event) => match &event.body {
            EventBody::ProductUploaded(upload) => (None, &upload.assets[..]),
            _ => (None, &[][..]),
        },
    };
    claimed.into_iter().chain(assets.iter().map(|a| a.token))
}
