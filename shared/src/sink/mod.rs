//! Exactly-once from Kafka into Postgres, for every worker that writes results
//! to the database.
//!
//! A dedicated thread polls a group consumer and gathers a batch, closed at
//! `max_batch_events` or `max_batch_ms` (latency stays bounded). The worker's
//! [`Sink::apply`] writes the batch's results through a transaction, the loop
//! advances each partition's next offset in `consumer_offsets` in that same
//! transaction, and commits. On assignment the consumer starts each partition
//! at the offset stored in Postgres and the worker loads that partition's
//! state; on revocation and shutdown the batch in hand is committed first.
//!
//! Failure handling:
//! - a message that does not parse goes to the DLQ (acknowledged before the
//!   batch commits, so its offset never advances without it);
//! - Postgres unreachable: the transaction is retried with backoff, the
//!   worker's state for the batch's partitions reloaded from Postgres first,
//!   so a batch is applied exactly once whatever failed half-way;
//! - the stored offset moved under us (a zombie instance after a rebalance,
//!   or a commit whose acknowledgement was lost): the batch is dropped, state
//!   and position reloaded, and the consumer seeks to the stored offset.
//!
//! Kafka's own committed offsets are updated after each commit, for lag
//! tooling only: Postgres is the truth.

mod context;
pub mod offsets;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{PgConnection, PgPool};
use tokio::runtime::Handle;

use crate::config::KafkaConfig;
use crate::consume::{classify, Received, Rejection};
use crate::dlq::DeadLetters;
use crate::shutdown::CancellationToken;
pub use offsets::Position;

/// A worker that applies events to state kept in Postgres (and, optionally,
/// in memory per partition). Methods run on the sink's thread.
pub trait Sink: Send + 'static {
    /// This instance now owns `partition`: load its state.
    fn load(&mut self, pool: &PgPool, partition: i32) -> impl Future<Output = anyhow::Result<()>>;

    /// `partition` left this instance, or its state must be reloaded: drop it.
    fn unload(&mut self, partition: i32);

    /// Applies `events` (in per-partition order) and writes the results
    /// through `tx`, which commits them together with the offsets.
    fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[Received],
    ) -> impl Future<Output = anyhow::Result<()>>;
}

/// How a sink consumes.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Consumer group, and the consumer's name in `consumer_offsets`.
    pub name: String,
    pub topic: String,
    pub max_batch_events: usize,
    pub max_batch_ms: u64,
}

/// Runs the sink until `shutdown`: call from `spawn_blocking` (it blocks on
/// Postgres calls through the runtime `handle`).
pub fn run<S: Sink>(
    options: SinkOptions,
    kafka: &KafkaConfig,
    pool: PgPool,
    dead_letters: DeadLetters,
    sink: S,
    handle: Handle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let core = Arc::new(Mutex::new(Core {
        sink,
        pool,
        handle,
        options: options.clone(),
        dead_letters,
        positions: BTreeMap::new(),
        reload: BTreeSet::new(),
        batch: Vec::new(),
        rejected: Vec::new(),
        next: BTreeMap::new(),
        counts: BTreeMap::new(),
        opened: None,
    }));
    let mut config = crate::kafka::consumer_config(kafka, &options.name);
    config.set("statistics.interval.ms", "5000");
    let consumer: BaseConsumer<context::SinkContext<S>> = config
        .create_with_context(context::SinkContext {
            core: core.clone(),
            name: options.name.clone(),
        })
        .context("creating the sink consumer")?;
    consumer
        .subscribe(&[&options.topic])
        .context("subscribing")?;
    tracing::info!(consumer = %options.name, topic = %options.topic, "sink started");

    let max_wait = Duration::from_millis(options.max_batch_ms.max(1));
    while !shutdown.is_cancelled() {
        let wait = lock(&core)
            .time_left()
            .unwrap_or(max_wait)
            .min(Duration::from_millis(100));
        match consumer.poll(wait) {
            Some(Ok(message)) => lock(&core).push(&message),
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => {}
        }
        let mut core = lock(&core);
        if core.due() {
            let seeks = core.commit();
            core.after_commit(&consumer, seeks);
        }
    }
    // Shutdown: finish the batch in hand, then leave the group (revocation
    // callbacks find nothing left to commit).
    {
        let mut core = lock(&core);
        let seeks = core.commit();
        core.after_commit(&consumer, seeks);
    }
    consumer.unsubscribe();
    tracing::info!(consumer = %options.name, "sink stopped");
    Ok(())
}

fn lock<S>(core: &Mutex<Core<S>>) -> std::sync::MutexGuard<'_, Core<S>> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The loop's state, shared with the rebalance callbacks (which run inside
/// `poll`, on the same thread, while the lock is free).
struct Core<S> {
    sink: S,
    pool: PgPool,
    handle: Handle,
    options: SinkOptions,
    dead_letters: DeadLetters,
    /// Owned partitions and what Postgres holds for them.
    positions: BTreeMap<i32, Position>,
    /// Partitions whose in-memory state must be reloaded before the next apply.
    reload: BTreeSet<i32>,
    batch: Vec<Received>,
    rejected: Vec<(OwnedMessage, Rejection)>,
    /// Per partition in the batch: the offset after its last message.
    next: BTreeMap<i32, i64>,
    /// Per partition in the batch: (applied, dead-lettered).
    counts: BTreeMap<i32, (i64, i64)>,
    opened: Option<Instant>,
}

/// What a commit attempt came to.
enum Outcome {
    Committed,
    /// The stored offset of a partition was not ours: reload and seek.
    Fenced,
}

impl<S: Sink> Core<S> {
    fn push(&mut self, message: &BorrowedMessage<'_>) {
        let partition = message.partition();
        // Prefetched data of a partition that is no longer ours.
        if !self.positions.contains_key(&partition) {
            return;
        }
        let counts = self.counts.entry(partition).or_default();
        match classify(message) {
            Ok(received) => {
                counts.0 += 1;
                self.batch.push(received);
            }
            Err(rejection) => {
                counts.1 += 1;
                self.rejected.push((message.detach(), rejection));
            }
        }
        self.next.insert(partition, message.offset() + 1);
        self.opened.get_or_insert_with(Instant::now);
        metrics::gauge!("kappa_sink_records_in_hand", "consumer" => self.options.name.clone())
            .set((self.batch.len() + self.rejected.len()) as f64);
    }

    fn time_left(&self) -> Option<Duration> {
        let opened = self.opened?;
        Some(Duration::from_millis(self.options.max_batch_ms).saturating_sub(opened.elapsed()))
    }

    fn due(&self) -> bool {
        self.batch.len() + self.rejected.len() >= self.options.max_batch_events
            || self.time_left().is_some_and(|left| left.is_zero())
    }

    /// Commits the batch in hand, retrying until Postgres takes it. Returns
    /// the seeks needed after a fenced commit.
    fn commit(&mut self) -> Vec<(i32, Option<i64>)> {
        if self.next.is_empty() {
            return Vec::new();
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let handle = self.handle.clone();
            match handle.block_on(self.try_commit()) {
                Ok(Outcome::Committed) => {
                    self.record(started.elapsed());
                    self.clear();
                    return Vec::new();
                }
                Ok(Outcome::Fenced) => {
                    let partitions: Vec<i32> = self.next.keys().copied().collect();
                    tracing::warn!(?partitions, "stored offsets moved under this instance; dropping the batch and resuming from Postgres");
                    metrics::counter!("kappa_sink_fenced_total", "consumer" => self.options.name.clone()).increment(1);
                    self.clear();
                    return handle.block_on(self.reposition(&partitions));
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "batch commit failed; retrying"
                    );
                    metrics::counter!("kappa_sink_commit_failures_total", "consumer" => self.options.name.clone()).increment(1);
                    // apply may have changed in-memory state for a transaction that did not commit.
                    let partitions: Vec<i32> = self.next.keys().copied().collect();
                    for p in partitions {
                        self.sink.unload(p);
                        self.reload.insert(p);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn try_commit(&mut self) -> anyhow::Result<Outcome> {
        for p in std::mem::take(&mut self.reload) {
            if let Err(error) = self.sink.load(&self.pool, p).await {
                self.reload.insert(p);
                return Err(error.context(format!("reloading partition {p}")));
            }
        }
        // Dead letters first: once acknowledged, their offsets may advance.
        while let Some((message, rejection)) = self.rejected.first() {
            self.dead_letters
                .send(message, rejection.code, &rejection.reason)
                .await?;
            self.rejected.remove(0);
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning the batch transaction")?;
        self.sink
            .apply(&mut tx, &self.batch)
            .await
            .context("applying the batch")?;
        for (&partition, &next) in &self.next {
            let (applied, dead_lettered) = self.counts.get(&partition).copied().unwrap_or_default();
            let step = offsets::Step {
                partition,
                from: self
                    .positions
                    .get(&partition)
                    .copied()
                    .unwrap_or(Position { next: None }),
                next,
                applied,
                dead_lettered,
            };
            if !offsets::advance(&mut tx, &self.options.name, &self.options.topic, step).await? {
                tx.rollback().await.ok();
                return Ok(Outcome::Fenced);
            }
        }
        tx.commit().await.context("committing the batch")?;
        for (&partition, &next) in &self.next {
            self.positions
                .insert(partition, Position { next: Some(next) });
        }
        Ok(Outcome::Committed)
    }

    /// After a fenced commit: reload state and positions from Postgres.
    async fn reposition(&mut self, partitions: &[i32]) -> Vec<(i32, Option<i64>)> {
        loop {
            let o = &self.options;
            match offsets::load(&self.pool, &o.name, &o.topic, partitions).await {
                Ok(stored) => {
                    for &p in partitions {
                        self.sink.unload(p);
                        self.reload.insert(p);
                    }
                    let mut seeks = Vec::new();
                    for (p, position) in stored {
                        // Still ours? Then resume there.
                        if let Some(ours) = self.positions.get_mut(&p) {
                            *ours = position;
                            seeks.push((p, position.next));
                        }
                    }
                    return seeks;
                }
                Err(error) => {
                    tracing::warn!(%error, "reading stored offsets failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn after_commit(
        &mut self,
        consumer: &BaseConsumer<context::SinkContext<S>>,
        seeks: Vec<(i32, Option<i64>)>,
    ) {
        self.mirror_to_kafka(consumer);
        for (partition, next) in seeks {
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = consumer.seek(
                &self.options.topic,
                partition,
                offset,
                Duration::from_secs(5),
            ) {
                tracing::warn!(%error, partition, "seek after a fenced commit failed");
            }
        }
    }

    fn record(&self, took: Duration) {
        let name = self.options.name.clone();
        let applied: i64 = self.counts.values().map(|c| c.0).sum();
        let dead: i64 = self.counts.values().map(|c| c.1).sum();
        metrics::counter!("kappa_sink_events_applied_total", "consumer" => name.clone())
            .increment(applied as u64);
        metrics::counter!("kappa_sink_dead_lettered_total", "consumer" => name.clone())
            .increment(dead as u64);
        metrics::histogram!("kappa_sink_batch_size", "consumer" => name.clone())
            .record((applied + dead) as f64);
        metrics::histogram!("kappa_sink_commit_seconds", "consumer" => name.clone())
            .record(took.as_secs_f64());
        let now = Utc::now();
        let visible = metrics::histogram!("kappa_sink_event_to_commit_seconds", "consumer" => name);
        for event in &self.batch {
            if let Some(ts) = event.ts() {
                visible.record((now - ts).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
            }
        }
    }

    fn clear(&mut self) {
        metrics::gauge!("kappa_sink_records_in_hand", "consumer" => self.options.name.clone())
            .set(0.0);
        self.batch.clear();
        self.rejected.clear();
        self.next.clear();
        self.counts.clear();
        self.opened = None;
    }

    /// Partitions assigned: read their stored positions, load their state,
    /// and set where the consumer starts each of them.
    fn assign(&mut self, list: &mut TopicPartitionList) {
        let topic = self.options.topic.clone();
        let partitions: Vec<i32> = list
            .elements_for_topic(&topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let handle = self.handle.clone();
        let stored = handle.block_on(async {
            let mut backoff = Duration::from_millis(100);
            loop {
                let attempt = async {
                    let stored =
                        offsets::load(&self.pool, &self.options.name, &topic, &partitions).await?;
                    for &p in &partitions {
                        self.sink.load(&self.pool, p).await?;
                    }
                    anyhow::Ok(stored)
                };
                match attempt.await {
                    Ok(stored) => break stored,
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "loading assigned partitions failed; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        for (p, position) in stored {
            let offset = position.next.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = list.set_partition_offset(&topic, p, offset) {
                tracing::error!(%error, partition = p, "setting the start offset failed");
            }
            self.positions.insert(p, position);
        }
        tracing::info!(?partitions, "partitions assigned");
    }

    /// Partitions revoked: commit what is in hand, then forget them.
    fn revoke(&mut self, list: &TopicPartitionList) {
        let _ = self.commit();
        for element in list.elements_for_topic(&self.options.topic) {
            let p = element.partition();
            self.sink.unload(p);
            self.positions.remove(&p);
            self.reload.remove(&p);
        }
        tracing::info!(partitions = ?list.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions revoked");
    }

    /// Mirrors the committed positions to Kafka for lag tooling.
    fn mirror_to_kafka(&self, consumer: &BaseConsumer<context::SinkContext<S>>) {
        let mut list = TopicPartitionList::new();
        for (&p, position) in &self.positions {
            if let Some(next) = position.next {
                let _ = list.add_partition_offset(&self.options.topic, p, Offset::Offset(next));
            }
        }
        if list.count() > 0 {
            let _ = consumer.commit(&list, CommitMode::Async);
        }
    }
}
