//! The applier: one async task that owns the worker, its partitions and the
//! batch in hand. It takes rebalance requests first, closes a batch at its
//! size or age, and commits it through the mode's `Commit`.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::Consumer as _;
use tokio::sync::mpsc;

use super::batch::{Batch, Polled};
use super::commit::{Backoff, Commit, Committed};
use super::filter::Filter;
use super::health::Health;
use super::poll::{self, Fetched, Seek};
use super::rebalance::{Consumer, Context, Control, Epochs};
use super::sealed::Starts as _;
use super::{Setup, Start, Worker};
use crate::memory::IdleRelease;
use crate::shutdown::CancellationToken;

/// How long without a commit before a worker that was busy gives its freed
/// memory back.
const RELEASE_WHEN_QUIET: Duration = Duration::from_secs(5);

/// A partition this instance owns.
struct Owned {
    epoch: u64,
    /// The next offset expected; older records are duplicates.
    next: i64,
    /// `kappa_sink_committed_offset` of the partition: where this group
    /// resumes it, as this instance last stored or loaded it.
    committed: metrics::Gauge,
}

/// Runs `worker` until `shutdown`, then commits what it holds (within the
/// bound of a commit), leaves the group and returns: the poll thread, the
/// applier loop, the lag gauge.
pub async fn run<W>(
    mut worker: W,
    setup: Setup,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    W: Worker,
    W::Mode: Start<W>,
{
    let options = setup.options.clone();
    let (control, control_rx) = mpsc::unbounded_channel();
    let (records, records_rx) = mpsc::channel::<Fetched>(options.max_batch_events.max(64) * 2);
    let (seeks, seeks_rx) = std_mpsc::channel::<Seek>();
    let epochs = Arc::new(Epochs::default());
    let context = Context {
        name: options.group.clone(),
        topic: options.topic.clone(),
        control,
        epochs: epochs.clone(),
    };
    let consumer: Arc<Consumer> = Arc::new(
        crate::kafka::consumer_config(&setup.kafka, &options.group)
            .create_with_context(context)
            .context("creating the worker's consumer")?,
    );
    consumer
        .subscribe(&[&options.topic])
        .context("subscribing")?;
    // A broker or database still coming up (or gone) at start is waited
    // for, as it is later: /readyz says so meanwhile.
    let mut backoff = Backoff::new();
    health.loading();
    let committer = loop {
        match W::Mode::start(&setup, consumer.clone()).await {
            Ok(committer) => break committer,
            Err(error) => {
                tracing::warn!(consumer = %options.group, error = format!("{error:#}"), "starting the worker failed; retrying");
                if !backoff.wait(&shutdown).await {
                    return Ok(());
                }
            }
        }
    };
    health.loaded();
    let filter = Filter::of::<W>();
    let poller = {
        let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("poll-{}", options.group))
            .spawn(move || poll::run(consumer, records, seeks_rx, filter, shutdown))
            .context("starting the poll thread")?
    };
    let lag = tokio::spawn(super::health::watch_lag(
        consumer.clone(),
        options.clone(),
        shutdown.clone(),
    ));
    // A catch-up's memory goes back to the OS once the worker is quiet.
    let idle = Arc::new(IdleRelease::default());
    let release = tokio::spawn(idle.clone().run(RELEASE_WHEN_QUIET, shutdown.clone()));
    drop(consumer);
    tracing::info!(consumer = %options.group, topic = %options.topic, "worker started");

    for failure in [
        "kappa_sink_events_applied_total",
        "kappa_sink_dead_lettered_total",
        "kappa_sink_duplicates_skipped_total",
        "kappa_sink_skipped_total",
        "kappa_sink_commit_failures_total",
        "kappa_sink_claim_check_failures_total",
        "kappa_sink_fenced_total",
    ] {
        crate::catalogue::zero(failure, &[("consumer", options.group.clone())]);
    }
    let mut applier = Applier {
        committer,
        owned: BTreeMap::new(),
        batch: Batch::default(),
        seeks,
        epochs,
        health,
        idle,
        max_events: options.max_batch_events.max(1),
        max_age: Duration::from_millis(options.max_batch_ms.max(1)),
        skip_age: Duration::from_millis(setup.kafka.skipped_commit_ms.max(1)),
        name: options.group.clone(),
        in_hand: metrics::gauge!("kappa_sink_records_in_hand", "consumer" => options.group.clone()),
        assigned: metrics::gauge!("kappa_sink_partitions_assigned", "consumer" => options.group.clone()),
    };
    applier
        .serve(&mut worker, control_rx, records_rx, &shutdown)
        .await;
    // The applier dropped its channels: the poll thread leaves the group and
    // ends. The lag gauge may be waiting on a broker that is gone: not waited for.
    lag.abort();
    release.abort();
    tokio::task::spawn_blocking(move || poller.join())
        .await
        .context("joining the poll thread")?
        .map_err(|_| anyhow::anyhow!("the poll thread panicked"))?;
    tracing::info!(consumer = %options.group, "worker stopped");
    Ok(())
}

struct Applier<C> {
    committer: C,
    owned: BTreeMap<i32, Owned>,
    batch: Batch,
    seeks: std_mpsc::Sender<Seek>,
    epochs: Arc<Epochs>,
    health: Arc<Health>,
    /// Told of every commit: memory is released once they stop.
    idle: Arc<IdleRelease>,
    max_events: usize,
    max_age: Duration,
    /// How long the offsets of records that were not the worker's may wait
    /// for a batch to ride with before they commit on their own.
    skip_age: Duration,
    name: String,
    /// `kappa_sink_records_in_hand`: the batch's size now.
    in_hand: metrics::Gauge,
    /// `kappa_sink_partitions_assigned`: partitions loaded and owned now.
    assigned: metrics::Gauge,
}

impl<C> Applier<C> {
    /// Takes `polled` into the batch if it belongs to a current assignment.
    fn push(&mut self, polled: Polled) {
        let Some(owned) = self.owned.get_mut(&polled.partition) else {
            return; // prefetched for a partition that is no longer ours
        };
        if polled.epoch != owned.epoch || polled.offset < owned.next {
            return; // from before a rebalance or a seek
        }
        owned.next = polled.offset + 1;
        self.batch.push(polled);
        // Skipped records are no work held: only entries can make it stuck.
        self.health.holding(self.batch.opened);
        self.in_hand.set(self.batch.len() as f64);
    }
}

impl<C> Applier<C> {
    async fn serve<W>(
        &mut self,
        worker: &mut W,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut records: mpsc::Receiver<Fetched>,
        shutdown: &CancellationToken,
    ) where
        W: Worker,
        C: Commit<W>,
    {
        loop {
            let due = self
                .batch
                .deadline(self.max_age, self.skip_age)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(request) = control.recv() => self.control(worker, request, shutdown).await,
                _ = tokio::time::sleep_until(due.into()), if !self.batch.holds_nothing() => {
                    self.take_waiting(&mut records);
                    self.commit(worker, shutdown).await;
                }
                fetched = records.recv() => match fetched {
                    Some(Fetched::Polled(polled)) => {
                        self.push(polled);
                        if self.batch.len() >= self.max_events {
                            self.commit(worker, shutdown).await;
                        }
                    }
                    // All there is was read: skipped offsets need not wait
                    // for the skip interval (a batch of events closes soon anyway).
                    Some(Fetched::CaughtUp) => {
                        if self.batch.len() == 0 && !self.batch.holds_nothing() {
                            self.commit(worker, shutdown).await;
                        }
                    }
                    None => break,
                },
            }
        }
        // Shutdown: one last commit of what is in hand (bounded: retries end
        // with the token), then stop taking records; the poll thread sees the
        // channel close and leaves the group.
        // Retries end with the token, so this is one attempt (bounded by the
        // database's and the broker's timeouts).
        if !self.batch.holds_nothing() {
            self.commit(worker, shutdown).await;
        }
        drop(records);
        // Revocations sent while leaving find the channel closed and go on.
        drop(control);
    }

    /// The window closed: records already waiting join the batch first, up
    /// to `max_events` entries and one channel's worth of records. A backlog
    /// (a catch-up, a replay) thus fills batches by count, each list or row
    /// it touches written once per batch, while under a steady load nothing
    /// waits and the window alone closes the batch.
    fn take_waiting(&mut self, records: &mut mpsc::Receiver<Fetched>) {
        let mut budget = records.max_capacity();
        while budget > 0 && self.batch.len() < self.max_events {
            budget -= 1;
            match records.try_recv() {
                Ok(Fetched::Polled(polled)) => self.push(polled),
                Ok(Fetched::CaughtUp) | Err(_) => break,
            }
        }
    }

    async fn control<W>(&mut self, worker: &mut W, request: Control, shutdown: &CancellationToken)
    where
        W: Worker,
        C: Commit<W>,
    {
        match request {
            Control::Assign { partitions, reply } => {
                let mut starts = Vec::with_capacity(partitions.len());
                for (partition, epoch) in partitions {
                    let mut backoff = Backoff::new();
                    let start = loop {
                        match self.committer.assign(worker, partition).await {
                            Ok(start) => break start,
                            Err(error) => {
                                self.health.loading();
                                tracing::warn!(consumer = %self.name, partition, error = format!("{error:#}"), "loading an assigned partition failed; retrying");
                                // Shutting down: no reply, the callback assigns nothing.
                                if !backoff.wait(shutdown).await {
                                    return;
                                }
                            }
                        }
                    };
                    let committed = metrics::gauge!("kappa_sink_committed_offset", "consumer" => self.name.clone(), "partition" => partition.to_string());
                    if let Some(start) = start {
                        committed.set(start as f64);
                    }
                    self.owned.insert(
                        partition,
                        Owned {
                            epoch,
                            next: start.unwrap_or(0),
                            committed,
                        },
                    );
                    starts.push((partition, start));
                }
                self.health.loaded();
                self.assigned.set(self.owned.len() as f64);
                let _ = reply.send(starts);
            }
            Control::Revoke { partitions, reply } => {
                if !self.batch.holds_nothing() {
                    self.commit(worker, shutdown).await;
                }
                for partition in partitions {
                    self.owned.remove(&partition);
                    self.committer.revoke(worker, partition);
                }
                self.assigned.set(self.owned.len() as f64);
                let _ = reply.send(());
            }
        }
    }

    async fn commit<W>(&mut self, worker: &mut W, shutdown: &CancellationToken)
    where
        W: Worker,
        C: Commit<W>,
    {
        // Every partition the batch moves, skipped-only ones included.
        let partitions = self.batch.partitions();
        let outcome = self
            .committer
            .commit(worker, &mut self.batch, shutdown)
            .await;
        if let Committed::Done = outcome {
            for partition in partitions {
                if let Some(owned) = self.owned.get(&partition) {
                    owned.committed.set(owned.next as f64);
                }
            }
        }
        self.batch.clear();
        self.health.committed();
        self.idle.note();
        self.in_hand.set(0.0);
        if let Committed::Fenced(restarts) = outcome {
            metrics::counter!("kappa_sink_fenced_total", "consumer" => self.name.clone())
                .increment(1);
            tracing::warn!(consumer = %self.name, ?restarts, "another commit got there first; batch dropped, resuming from the stored positions");
            for (partition, offset) in restarts {
                let Some(owned) = self.owned.get_mut(&partition) else {
                    continue;
                };
                let epoch = self.epochs.mint();
                owned.epoch = epoch;
                owned.next = offset.unwrap_or(0);
                let _ = self.seeks.send(Seek {
                    partition,
                    offset,
                    epoch,
                });
            }
        }
    }
}
