//! The consumer's context: rebalance callbacks that hand assignments and
//! revocations to the applier and wait for its answer (a oneshot each, no
//! lock shared with it), the epochs that tell records of an old assignment
//! from current ones, and client errors counted for `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

/// The group consumer every worker uses.
pub type Consumer = BaseConsumer<Context>;

/// What the rebalance callback asks of the applier.
pub(crate) enum Control {
    /// Load these partitions (each with its new epoch); reply where each
    /// starts (`None`: where the group's committed offset says).
    Assign {
        partitions: Vec<(i32, u64)>,
        reply: oneshot::Sender<Vec<(i32, Option<i64>)>>,
    },
    /// Commit what is in hand, then forget these partitions.
    Revoke {
        partitions: Vec<i32>,
        reply: oneshot::Sender<()>,
    },
}

/// Mints epochs: each assignment of a partition, and each seek, gets a new one.
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    next: AtomicU64,
    /// Per partition, the epoch records polled now are tagged with; touched
    /// only on the poll thread (callbacks run inside `poll`).
    current: Mutex<HashMap<i32, u64>>,
}

impl Epochs {
    pub fn mint(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn set(&self, partition: i32, epoch: u64) {
        self.current
            .lock()
            .expect("poisoned")
            .insert(partition, epoch);
    }

    pub fn of(&self, partition: i32) -> u64 {
        self.current
            .lock()
            .expect("poisoned")
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }
}

pub struct Context {
    pub(crate) name: String,
    pub(crate) topic: String,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) epochs: Arc<Epochs>,
}

impl ClientContext for Context {
    // Broker connections failing, all brokers down...: counted, so an outage
    // shows on /metrics; librdkafka reconnects by itself.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        metrics::counter!("kappa_kafka_client_errors_total", "client" => self.name.clone())
            .increment(1);
        tracing::warn!(consumer = %self.name, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for Context {
    // Replaces rdkafka's default: partitions start where the applier says
    // (Postgres mode: the offsets stored with the results), and the batch in
    // hand commits before a partition is given up.
    fn rebalance(&self, consumer: &Consumer, err: RDKafkaRespErr, list: &mut TopicPartitionList) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions: Vec<i32> = list
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let tagged: Vec<(i32, u64)> = partitions
                    .iter()
                    .map(|&p| {
                        let epoch = self.epochs.mint();
                        self.epochs.set(p, epoch);
                        (p, epoch)
                    })
                    .collect();
                let (reply, answer) = oneshot::channel();
                let request = Control::Assign {
                    partitions: tagged,
                    reply,
                };
                // No answer: the applier is gone (shutting down); take nothing.
                if self.control.send(request).is_err() {
                    return;
                }
                let Ok(starts) = answer.blocking_recv() else {
                    return;
                };
                for (p, start) in starts {
                    if let Some(offset) = start {
                        let _ = list.set_partition_offset(&self.topic, p, Offset::Offset(offset));
                    }
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(list)
                } else {
                    consumer.assign(list)
                };
                if let Err(error) = assigned {
                    tracing::error!(consumer = %self.name, %error, "assign failed");
                }
                tracing::info!(consumer = %self.name, ?partitions, "partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(partitions.clone(), consumer.assignment_lost());
                let unassigned = if cooperative {
                    consumer.incremental_unassign(list)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = unassigned {
                    tracing::error!(consumer = %self.name, %error, "unassign failed");
                }
                tracing::info!(consumer = %self.name, ?partitions, "partitions revoked");
            }
            other => {
                tracing::error!(consumer = %self.name, error = ?other, "rebalance error; dropping the assignment");
                let owned: Vec<i32> = consumer
                    .assignment()
                    .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default();
                self.revoke(owned, true);
                let _ = consumer.unassign();
            }
        }
    }
}

impl Context {
    /// Hands a revocation to the applier and waits until it committed.
    fn revoke(&self, partitions: Vec<i32>, lost: bool) {
        if lost {
            // Another member may own them already; the commit's fencing
            // (compare-and-set, or the group generation) decides.
            tracing::warn!(consumer = %self.name, ?partitions, "assignment lost");
        }
        let (reply, done) = oneshot::channel();
        if self
            .control
            .send(Control::Revoke { partitions, reply })
            .is_ok()
        {
            let _ = done.blocking_recv();
        }
    }
}
