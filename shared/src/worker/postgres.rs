//! Postgres mode: a batch's results and its offsets in one transaction.
//!
//! Each partition's row in `consumer_offsets` advances with a compare-and-set
//! from the position this instance believes is stored; a mismatch (a zombie,
//! or a commit whose acknowledgement was lost) drops the batch and restarts
//! its partitions from what is stored. Dead letters are acknowledged by the
//! DLQ before the transaction that moves their offsets commits (those known
//! before it begins, before it begins; the worker's refusals while it is
//! open), and the offsets of those that carry an event id are recorded in
//! it (`dedupe`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

use super::batch::{Batch, Slot};
use super::commit::{Backoff, Commit, Committed};
use super::dedupe::Dedupe;
use super::filter::Filter;
use super::offsets::{self, Position};
use super::ranges::{self, refusal, Attempt, Ranged, Stale};
use super::rebalance::Consumer;
use super::sealed::Starts;
use super::{resolve, Postgres, Setup, Worker};
use crate::claim_check::ClaimStore;
use crate::dlq::DeadLetters;
use crate::shutdown::CancellationToken;

pub struct PgCommit {
    pool: PgPool,
    claims: ClaimStore,
    dead_letters: DeadLetters,
    consumer: Arc<Consumer>,
    name: String,
    topic: String,
    /// Owned partitions and what Postgres holds for them.
    positions: BTreeMap<i32, Position>,
    /// Partitions whose in-memory state must be reloaded before applying.
    stale: Stale,
    dedupe: Dedupe,
}

impl<W: Worker<Mode = Postgres>> Starts<W> for Postgres {
    type Committer = PgCommit;

    async fn start(setup: &Setup, consumer: Arc<Consumer>) -> anyhow::Result<PgCommit> {
        Ok(PgCommit {
            pool: setup.pool.clone(),
            claims: ClaimStore::new(setup.pool.clone()),
            dead_letters: DeadLetters::new(&setup.kafka)?,
            consumer,
            name: setup.options.group.clone(),
            topic: setup.options.topic.clone(),
            positions: BTreeMap::new(),
            stale: Stale::default(),
            dedupe: Dedupe::new(setup, Filter::of::<W>()),
        })
    }
}

impl<W: Worker<Mode = Postgres>> Commit<W> for PgCommit {
    async fn assign(&mut self, worker: &mut W, partition: i32) -> anyhow::Result<Option<i64>> {
        let stored = offsets::load(&self.pool, &self.name, &self.topic, &[partition]).await?;
        worker.load(&self.pool, partition).await?;
        let position = stored.first().map_or(Position { next: None }, |(_, p)| *p);
        self.positions.insert(partition, position);
        self.stale.clear(partition);
        self.dedupe.restart(partition, position.next);
        Ok(position.next)
    }

    fn revoke(&mut self, worker: &mut W, partition: i32) {
        worker.unload(partition);
        self.positions.remove(&partition);
        self.stale.clear(partition);
        self.dedupe.forget(partition);
    }

    async fn commit(
        &mut self,
        worker: &mut W,
        batch: &mut Batch,
        shutdown: &CancellationToken,
    ) -> Committed {
        if !resolve::claims_or_wait(&self.claims, batch, &self.name, shutdown).await {
            return Committed::Cancelled;
        }
        let committed = ranges::commit(self, worker, batch, shutdown).await;
        if matches!(committed, Committed::Done) {
            self.mirror_to_kafka();
        }
        committed
    }
}

impl<W: Worker<Mode = Postgres>> Ranged<W> for PgCommit {
    fn name(&self) -> &str {
        &self.name
    }

    async fn attempt(&mut self, worker: &mut W, batch: &mut Batch, range: Range<usize>) -> Attempt {
        let started = Instant::now();
        // What fails before the transaction is never the data's fault.
        if let Err(error) = self.prepare(worker, batch, range.clone()).await {
            return Attempt::Failed(error);
        }
        match self.transaction(worker, batch, range.clone()).await {
            Ok(Outcome::Again) => Attempt::Again,
            Ok(Outcome::Committed) => {
                for (partition, step) in batch.steps(range.clone()) {
                    self.positions.insert(
                        partition,
                        Position {
                            next: Some(step.next),
                        },
                    );
                }
                ranges::record(&self.name, batch, range, started);
                Attempt::Committed
            }
            Ok(Outcome::Fenced) => Attempt::Fenced,
            Err(error) => match refusal(&error) {
                Some(rejection) => Attempt::Refused(rejection),
                None => Attempt::Failed(error),
            },
        }
    }

    fn stale(&mut self) -> &mut Stale {
        &mut self.stale
    }

    fn dedupe(&mut self) -> &mut Dedupe {
        &mut self.dedupe
    }

    async fn fenced(
        &mut self,
        worker: &mut W,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Committed {
        Ranged::<W>::forget(self, worker, batch);
        let partitions = batch.partitions();
        let mut backoff = Backoff::new();
        loop {
            match offsets::load(&self.pool, &self.name, &self.topic, &partitions).await {
                Ok(stored) => {
                    let mut restarts = Vec::new();
                    for (partition, position) in stored {
                        if let Some(ours) = self.positions.get_mut(&partition) {
                            *ours = position;
                            restarts.push((partition, position.next));
                        }
                    }
                    return Committed::Fenced(restarts);
                }
                Err(error) => {
                    tracing::warn!(consumer = %self.name, %error, "reading stored offsets failed; retrying");
                    if !backoff.wait(shutdown).await {
                        return Committed::Cancelled;
                    }
                }
            }
        }
    }
}

/// What one transaction came to.
enum Outcome {
    Committed,
    /// A stored offset was not what this instance expected.
    Fenced,
    /// Refusals revived a repeat in the range: rolled back, to try again.
    Again,
}

impl PgCommit {
    /// Reloads forgotten state and sends the range's dead letters.
    async fn prepare<W: Worker>(
        &mut self,
        worker: &mut W,
        batch: &mut Batch,
        range: Range<usize>,
    ) -> anyhow::Result<()> {
        self.stale.reload(worker, &self.pool).await?;
        send_dead(&self.dead_letters, batch, range).await
    }

    /// Applies the range and advances its partitions' offsets, in one
    /// transaction.
    async fn transaction<W: Worker<Mode = Postgres>>(
        &mut self,
        worker: &mut W,
        batch: &mut Batch,
        range: Range<usize>,
    ) -> anyhow::Result<Outcome> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning the batch transaction")?;
        let events = batch.events_in(range.clone());
        if !events.is_empty() {
            let refusals = worker
                .apply(&mut tx, events)
                .await
                .context("applying the batch")?;
            if !refusals.is_empty() {
                if ranges::take_refusals(&self.name, &self.dedupe, batch, range.clone(), refusals) {
                    return Ok(Outcome::Again);
                }
                // Acknowledged before the offsets that pass them commit.
                send_dead(&self.dead_letters, batch, range.clone()).await?;
            }
        }
        let steps: Vec<offsets::Step> = batch
            .steps(range.clone())
            .into_iter()
            .map(|(partition, step)| offsets::Step {
                partition,
                from: self
                    .positions
                    .get(&partition)
                    .copied()
                    .unwrap_or(Position { next: None }),
                next: step.next,
                applied: step.applied,
                dead_lettered: step.dead,
            })
            .collect();
        if !offsets::advance(&mut tx, &self.name, &self.topic, &steps).await? {
            return Ok(Outcome::Fenced);
        }
        self.dedupe
            .record_dead(&mut tx, batch, range)
            .await
            .context("recording dead letters")?;
        tx.commit().await.context("committing the batch")?;
        Ok(Outcome::Committed)
    }

    /// Mirrors the committed positions to Kafka for lag tooling (Postgres is the truth).
    fn mirror_to_kafka(&self) {
        let mut list = TopicPartitionList::new();
        for (&partition, position) in &self.positions {
            if let Some(next) = position.next {
                let _ = list.add_partition_offset(&self.topic, partition, Offset::Offset(next));
            }
        }
        if list.count() > 0 {
            let _ = self.consumer.commit(&list, CommitMode::Async);
        }
    }
}

/// Sends the range's dead letters not sent yet, all at once, each marked
/// sent once the DLQ acknowledged it (a failed one is sent again next time).
async fn send_dead(
    dead_letters: &DeadLetters,
    batch: &mut Batch,
    range: Range<usize>,
) -> anyhow::Result<()> {
    let unsent: Vec<usize> = range
        .filter(|&i| matches!(batch.entries[i].slot, Slot::Dead { sent: false, .. }))
        .collect();
    if unsent.is_empty() {
        return Ok(());
    }
    let sends = unsent.iter().map(|&i| {
        let entry = &batch.entries[i];
        let Slot::Dead { rejection, .. } = &entry.slot else {
            unreachable!("filtered to dead letters")
        };
        dead_letters.send(&entry.message, rejection.code, &rejection.reason)
    });
    let results = futures::future::join_all(sends).await;
    let mut failed = None;
    for (i, result) in unsent.into_iter().zip(results) {
        match result {
            Ok(()) => {
                if let Slot::Dead { sent, .. } = &mut batch.entries[i].slot {
                    *sent = true;
                }
            }
            Err(error) => failed = Some(error),
        }
    }
    failed.map_or(Ok(()), Err)
}
