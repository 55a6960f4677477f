//! The consumer context: rebalance callbacks that hand assignment and
//! revocation to the sink's core, and librdkafka statistics as lag gauges.

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};

use super::{lock, Core, Sink};

pub(super) struct SinkContext<S> {
    pub(super) core: Arc<Mutex<Core<S>>>,
    pub(super) name: String,
}

impl<S: Sink> ClientContext for SinkContext<S> {
    // Broker connections failing, all brokers down...: counted, so an outage
    // shows on /metrics; librdkafka reconnects by itself.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        metrics::counter!("kappa_kafka_client_errors_total", "client" => self.name.clone())
            .increment(1);
        tracing::warn!(%error, reason, "kafka client error");
    }

    fn stats(&self, statistics: Statistics) {
        let name = &self.name;
        for topic in statistics.topics.values() {
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.consumer_lag >= 0 {
                    metrics::gauge!("kappa_sink_consumer_lag", "consumer" => name.clone(), "partition" => id.to_string())
                        .set(partition.consumer_lag as f64);
                }
            }
        }
    }
}

impl<S: Sink> ConsumerContext for SinkContext<S> {
    // Replaces rdkafka's default so that partitions start at the offsets
    // stored in Postgres, and the batch in hand commits before revocation.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                lock(&self.core).assign(list);
                if let Err(error) = consumer.assign(list) {
                    tracing::error!(%error, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                lock(&self.core).revoke(list);
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let all = lock(&self.core)
                    .positions
                    .keys()
                    .copied()
                    .collect::<Vec<_>>();
                let mut list = TopicPartitionList::new();
                let topic = lock(&self.core).options.topic.clone();
                for p in all {
                    list.add_partition(&topic, p);
                }
                lock(&self.core).revoke(&list);
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(error) = result {
            tracing::debug!(%error, "mirroring offsets to Kafka failed (Postgres holds the truth)");
        }
    }
}
