//! Kafka-transaction mode: a batch's output records, its dead letters and
//! the offsets it consumed, in one Kafka transaction.
//!
//! The offsets go to the transaction with the consumer group's metadata
//! (KIP-447), so the broker fences a zombie by the group generation: an
//! instance that lost its partitions cannot commit for them any more. The
//! transactional id is `<group>-<instance>`: a restarted instance with the
//! same name aborts whatever its previous life left open at start-up.
//! Readers of the outputs use `isolation.level=read_committed` and never see
//! an aborted record.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;

use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

use super::batch::{Batch, Slot};
use super::commit::{Commit, Committed};
use super::dedupe::Dedupe;
use super::filter::Filter;
use super::outputs::{send, Outputs, TxProducer};
use super::ranges::{self, refusal, Attempt, Ranged, Stale};
use super::rebalance::Consumer;
use super::sealed::Starts;
use super::{resolve, KafkaTransactions, Setup, Worker};
use crate::claim_check::ClaimStore;
use crate::config::KafkaConfig;
use crate::shutdown::CancellationToken;

/// How long a transaction call may take before it counts as failed.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole transaction may take before its producer is given up.
/// librdkafka does not check the timeout `send_offsets_to_transaction` is
/// given, and waits forever once the group coordinator it cached has left
/// the cluster's metadata, even after that broker is back
/// (confluentinc/librdkafka#5456 and #5511; seen here when a node of the
/// three-node cluster was killed).
const TXN_DEADLINE: Duration = Duration::from_secs(45);

pub struct KafkaCommit {
    producer: Arc<TxProducer>,
    /// Partitions whose state must be reloaded before applying.
    stale: Stale,
    dedupe: Dedupe,
    consumer: Arc<Consumer>,
    claims: ClaimStore,
    pool: PgPool,
    kafka: KafkaConfig,
    transactional_id: String,
    name: String,
    topic: String,
}

/// A transactional producer, its earlier transactions fenced and aborted.
async fn transactional(kafka: &KafkaConfig, id: &str) -> anyhow::Result<Arc<TxProducer>> {
    let producer: TxProducer = crate::kafka::producer_config(kafka)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", "60000")
        .create()
        .context("creating the transactional producer")?;
    let producer = Arc::new(producer);
    let init = producer.clone();
    tokio::task::spawn_blocking(move || init.init_transactions(TXN_TIMEOUT))
        .await?
        .context("initialising transactions")?;
    Ok(producer)
}

impl<W: Worker<Mode = KafkaTransactions>> Starts<W> for KafkaTransactions {
    type Committer = KafkaCommit;

    async fn start(setup: &Setup, consumer: Arc<Consumer>) -> anyhow::Result<KafkaCommit> {
        let options = &setup.options;
        let transactional_id = format!("{}-{}", options.group, options.instance);
        Ok(KafkaCommit {
            producer: transactional(&setup.kafka, &transactional_id).await?,
            stale: Stale::default(),
            dedupe: Dedupe::new(setup, Filter::of::<W>()),
            consumer,
            claims: ClaimStore::new(setup.pool.clone()),
            pool: setup.pool.clone(),
            kafka: setup.kafka.clone(),
            transactional_id,
            name: options.group.clone(),
            topic: options.topic.clone(),
        })
    }
}

impl<W: Worker<Mode = KafkaTransactions>> Commit<W> for KafkaCommit {
    async fn assign(&mut self, worker: &mut W, partition: i32) -> anyhow::Result<Option<i64>> {
        worker.load(&self.pool, partition).await?;
        // Start where the group's committed offset says, named here so the
        // window of recent ids is read up to there.
        let start = committed(&self.consumer, &self.topic, &[partition])
            .await?
            .first()
            .and_then(|&(_, offset)| offset);
        self.dedupe.restart(partition, start);
        Ok(start)
    }

    fn revoke(&mut self, worker: &mut W, partition: i32) {
        worker.unload(partition);
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
        ranges::commit(self, worker, batch, shutdown).await
    }
}

impl KafkaCommit {
    /// A new transactional producer under the same id, in place of one that
    /// is fenced or stuck (its earlier transactions aborted); on failure the
    /// old one stays, and the next attempt fails and tries again.
    async fn renew_producer(&mut self) {
        match transactional(&self.kafka, &self.transactional_id).await {
            Ok(producer) => self.producer = producer,
            Err(error) => {
                tracing::warn!(consumer = %self.name, %error, "recreating the producer failed")
            }
        }
    }
}

impl<W: Worker<Mode = KafkaTransactions>> Ranged<W> for KafkaCommit {
    fn name(&self) -> &str {
        &self.name
    }

    async fn attempt(&mut self, worker: &mut W, batch: &mut Batch, range: Range<usize>) -> Attempt {
        let started = Instant::now();
        if let Err(error) = self.stale.reload(worker, &self.pool).await {
            return Attempt::Failed(error);
        }
        let mut outputs = Outputs::default();
        let events = batch.events_in(range.clone());
        if !events.is_empty() {
            match worker.apply(&mut outputs, events).await {
                Ok(refusals) => {
                    if ranges::take_refusals(
                        &self.name,
                        &self.dedupe,
                        batch,
                        range.clone(),
                        refusals,
                    ) {
                        return Attempt::Again;
                    }
                }
                Err(error) => {
                    return match refusal(&error) {
                        Some(rejection) => Attempt::Refused(rejection),
                        None => Attempt::Failed(error.context("applying the batch")),
                    }
                }
            }
        }
        // Dead letters go in the same transaction: written once, with the offsets.
        for entry in &batch.entries[range.clone()] {
            if let Slot::Dead { rejection, .. } = &entry.slot {
                outputs.push(crate::dlq::record(
                    &entry.message,
                    rejection.code,
                    &rejection.reason,
                    &self.kafka.dlq_topic,
                ));
            }
        }
        if self.dedupe.has_dead(batch, range.clone()) {
            let recorded = async {
                let mut conn = self.pool.acquire().await?;
                self.dedupe
                    .record_dead(&mut conn, batch, range.clone())
                    .await
            };
            if let Err(error) = recorded.await {
                return Attempt::Failed(
                    anyhow::Error::new(error).context("recording dead letters"),
                );
            }
        }
        let Some(group) = self.consumer.group_metadata() else {
            return Attempt::Failed(anyhow::anyhow!("no consumer group metadata yet"));
        };
        let mut offsets = TopicPartitionList::new();
        for (partition, step) in batch.steps(range.clone()) {
            let _ = offsets.add_partition_offset(&self.topic, partition, Offset::Offset(step.next));
        }
        let producer = self.producer.clone();
        let records = outputs.into_records();
        let transaction = tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            producer.begin_transaction()?;
            for output in &records {
                send(&producer, output)?;
            }
            producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
            producer.commit_transaction(TXN_TIMEOUT)
        });
        let error = match tokio::time::timeout(TXN_DEADLINE, transaction).await {
            Ok(Ok(Ok(()))) => {
                ranges::record(&self.name, batch, range, started);
                return Attempt::Committed;
            }
            Ok(Ok(Err(error))) => error,
            Ok(Err(join)) => return Attempt::Failed(join.into()),
            Err(_) => {
                // The blocked thread keeps the old producer until its call
                // returns; the new one, with the same transactional id,
                // fences it: its open transaction is aborted, and nothing
                // it sends later can commit.
                metrics::counter!("kappa_sink_producers_replaced_total", "consumer" => self.name.clone())
                    .increment(1);
                self.renew_producer().await;
                return Attempt::Failed(anyhow::anyhow!(
                    "the transaction did not finish within {TXN_DEADLINE:?}: its producer was replaced"
                ));
            }
        };
        // The group's generation moved on: this instance is a zombie now.
        let fenced = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::FencedInstanceId
                    | RDKafkaErrorCode::RebalanceInProgress
            )
        );
        if matches!(&error, KafkaError::Transaction(e) if e.is_fatal()) {
            // Unusable (fenced by its transactional id): start a new one.
            self.renew_producer().await;
        } else {
            let producer = self.producer.clone();
            let _ =
                tokio::task::spawn_blocking(move || producer.abort_transaction(TXN_TIMEOUT)).await;
        }
        if fenced {
            Attempt::Fenced
        } else {
            Attempt::Failed(anyhow::Error::new(error).context("the transaction failed"))
        }
    }

    fn stale(&mut self) -> &mut Stale {
        &mut self.stale
    }

    fn dedupe(&mut self) -> &mut Dedupe {
        &mut self.dedupe
    }

    /// The group moved on: drop the batch; its partitions restart at the
    /// group's committed offsets (if they are still this instance's).
    async fn fenced(
        &mut self,
        worker: &mut W,
        batch: &Batch,
        _shutdown: &CancellationToken,
    ) -> Committed {
        Ranged::<W>::forget(self, worker, batch);
        let partitions = batch.partitions();
        let restarts = committed(&self.consumer, &self.topic, &partitions)
            .await
            .unwrap_or_else(|_| partitions.iter().map(|&p| (p, None)).collect());
        Committed::Fenced(restarts)
    }
}

/// The group's committed offsets of `partitions` (`None`: none committed).
async fn committed(
    consumer: &Arc<Consumer>,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<Vec<(i32, Option<i64>)>> {
    let mut list = TopicPartitionList::new();
    for &p in partitions {
        list.add_partition(topic, p);
    }
    let consumer = consumer.clone();
    let list = tokio::task::spawn_blocking(move || consumer.committed_offsets(list, TXN_TIMEOUT))
        .await?
        .context("reading the group's committed offsets")?;
    Ok(list
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().filter(|o| *o >= 0)))
        .collect())
}
