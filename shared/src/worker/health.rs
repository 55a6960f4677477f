//! Is the worker keeping up? `/readyz` asks [`Health::check`]: not ready
//! when events have been in hand longer than `stuck_after` without a commit,
//! or assigned partitions could not be loaded for that long (a database
//! refusing, a broker gone). The lag gauge is computed here from
//! the partitions' end offsets and what this instance committed, so it keeps
//! rising while the worker is stuck instead of freezing at its last value.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::topic_partition_list::TopicPartitionList;

use super::rebalance::Consumer;
use super::Options;
use crate::shutdown::CancellationToken;

/// How often the lag gauge is refreshed.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// A worker's progress, shared with `/readyz`.
#[derive(Debug)]
pub struct Health {
    stuck_after: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the oldest event in hand arrived; `None` when nothing is held.
    holding_since: Option<Instant>,
    /// When loading an assignment first failed; `None` when none is pending.
    loading_since: Option<Instant>,
}

impl Health {
    /// Stuck after holding events for `stuck_after` without a commit.
    pub fn new(stuck_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            stuck_after,
            state: Mutex::default(),
        })
    }

    pub(super) fn holding(&self, since: Option<Instant>) {
        let mut state = self.state.lock().expect("poisoned");
        if state.holding_since.is_none() {
            state.holding_since = since;
        }
    }

    pub(super) fn committed(&self) {
        self.state.lock().expect("poisoned").holding_since = None;
    }

    /// Starting, or loading an assigned partition's position, failed (the
    /// first call counts).
    pub(super) fn loading(&self) {
        let mut state = self.state.lock().expect("poisoned");
        state.loading_since.get_or_insert_with(Instant::now);
    }

    pub(super) fn loaded(&self) {
        self.state.lock().expect("poisoned").loading_since = None;
    }

    /// `Err` with the reason when the worker is stuck.
    pub fn check(&self) -> Result<(), String> {
        let state = self.state.lock().expect("poisoned");
        let stuck = |since: Option<Instant>| since.filter(|s| s.elapsed() > self.stuck_after);
        if let Some(since) = stuck(state.holding_since) {
            return Err(format!(
                "events in hand for {:.0} s without a commit",
                since.elapsed().as_secs_f64()
            ));
        }
        if let Some(since) = stuck(state.loading_since) {
            return Err(format!(
                "not started, or assigned partitions not loaded, for {:.0} s",
                since.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// Every few seconds until `shutdown`: per assigned partition, the end
/// offset minus the position this group committed, as
/// `kappa_sink_consumer_lag{consumer,partition}`. (A partition whose last
/// record is a transaction marker shows 1 while idle: the marker has an
/// offset but is never delivered.)
pub(super) async fn watch_lag(
    consumer: Arc<Consumer>,
    options: Options,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LAG_EVERY) => {}
        }
        let (consumer, topic) = (consumer.clone(), options.topic.clone());
        let lags = tokio::task::spawn_blocking(move || lags(&consumer, &topic)).await;
        if let Ok(Ok(lags)) = lags {
            for (partition, lag) in lags {
                metrics::gauge!("kappa_sink_consumer_lag", "consumer" => options.group.clone(), "partition" => partition.to_string())
                    .set(lag as f64);
            }
        }
    }
}

/// End offset minus committed position, per assigned partition.
fn lags(consumer: &Consumer, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let timeout = Duration::from_secs(2);
    let assignment: TopicPartitionList = consumer.assignment()?;
    let committed = consumer.committed_offsets(assignment.clone(), timeout)?;
    let mut lags = BTreeMap::new();
    for element in assignment.elements_for_topic(topic) {
        let partition = element.partition();
        let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let at = committed
            .find_partition(topic, partition)
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
            .unwrap_or(0);
        lags.insert(partition, (high - at).max(0));
    }
    Ok(lags)
}
