//! Runs queued replays one at a time across every dashboard instance: the
//! runner that holds the Postgres advisory lock takes queued runs oldest
//! first; the others wait. A run reads its snapshotted range, aggregates, and
//! stores its results and becomes current in one transaction, or is marked
//! failed and changes nothing that is served.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::config::KafkaConfig;
use shared::event::{Envelope, EventBody};
use shared::replay::{self, From, Progress};
use shared::shutdown::CancellationToken;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::aggregate::Aggregate;
use crate::runs::{self, Run};

/// The advisory lock key of "a replay is running" (any 64-bit constant
/// shared by all instances).
const REPLAY_LOCK: i64 = 0x6b61_7070_6164_6173;

/// Progress of the runs this instance is executing, for the API.
pub type Registry = Arc<Mutex<HashMap<i64, Arc<Progress>>>>;

/// What the runner needs.
pub struct Runner {
    pub pool: PgPool,
    pub kafka: KafkaConfig,
    pub topic: String,
    pub keep_runs: i64,
    /// Readers sharing one replay.
    pub readers: usize,
    pub registry: Registry,
    pub wake: Arc<Notify>,
}

impl Runner {
    /// Serves queued runs until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Err(error) = self.serve_queue(&shutdown).await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "replay runner failed; retrying"
                );
            }
        }
    }

    /// Under the lock, runs every queued run.
    async fn serve_queue(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut lock_conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(REPLAY_LOCK)
            .fetch_one(&mut *lock_conn)
            .await?;
        if !locked {
            return Ok(());
        }
        let result = async {
            let interrupted = runs::fail_interrupted(&mut lock_conn).await?;
            if interrupted > 0 {
                tracing::warn!(interrupted, "marked runs of a stopped process as failed");
            }
            while !shutdown.is_cancelled() {
                let Some(run) = runs::claim_next(&mut lock_conn).await? else {
                    break;
                };
                self.execute(run).await;
            }
            anyhow::Ok(())
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(REPLAY_LOCK)
            .execute(&mut *lock_conn)
            .await?;
        result
    }

    async fn execute(&self, run: Run) {
        let id = run.id;
        tracing::info!(run = id, trigger = %run.trigger, "replay started");
        let started = Instant::now();
        match self.replay(&run).await {
            Ok((events, records)) => {
                let secs = started.elapsed().as_secs_f64();
                metrics::histogram!("kappa_replay_duration_seconds").record(secs);
                metrics::gauge!("kappa_replay_events_per_second")
                    .set(records as f64 / secs.max(1e-9));
                metrics::gauge!("kappa_replay_last_success_timestamp_seconds")
                    .set(chrono::Utc::now().timestamp() as f64);
                tracing::info!(
                    run = id,
                    events,
                    records,
                    seconds = secs,
                    "replay succeeded"
                );
            }
            Err(error) => {
                let message = format!("{error:#}");
                tracing::warn!(run = id, error = %message, "replay failed");
                metrics::counter!("kappa_replay_failures_total").increment(1);
                if let Err(e) = runs::fail(&self.pool, id, &message).await {
                    tracing::error!(run = id, error = %e, "could not mark the run failed");
                }
            }
        }
        self.registry.lock().expect("poisoned").remove(&id);
    }

    /// Plans, reads and aggregates the run's range, then stores the results.
    async fn replay(&self, run: &Run) -> anyhow::Result<(u64, u64)> {
        let from = run.from_time.map_or(From::Earliest, From::Time);
        let (kafka, topic, to) = (self.kafka.clone(), self.topic.clone(), run.to_time);
        let plan =
            tokio::task::spawn_blocking(move || replay::plan(&kafka, &topic, from, to)).await??;
        let start: BTreeMap<i32, i64> = plan.spans.iter().map(|(p, s)| (*p, s.start)).collect();
        let end: BTreeMap<i32, i64> = plan.spans.iter().map(|(p, s)| (*p, s.end)).collect();
        runs::record_range(&self.pool, run.id, &start, &end, plan.total()).await?;

        let progress = Progress::new(plan.total());
        self.registry
            .lock()
            .expect("poisoned")
            .insert(run.id, progress.clone());
        let read = progress.clone();
        // Progress for /metrics while the run lasts.
        let _gauge = {
            let progress = progress.clone();
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    metrics::gauge!("kappa_replay_progress").set(progress.view().fraction);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }))
        };
        // Several readers, each over its own partitions, then one merge.
        let readers = plan.split(self.readers).into_iter().map(|part| {
            let (kafka, progress) = (self.kafka.clone(), progress.clone());
            tokio::task::spawn_blocking(move || read_part(&kafka, &part, &progress))
        });
        let mut aggregate = Aggregate::default();
        let (mut events, mut rejected) = (0u64, 0u64);
        for reader in futures_join(readers).await {
            let (part, part_events, part_rejected) = reader??;
            aggregate.merge(part);
            events += part_events;
            rejected += part_rejected;
        }
        metrics::gauge!("kappa_replay_progress").set(1.0);
        let results = aggregate.finish();
        let counts = runs::Counts {
            events,
            rejected,
            bytes: read.bytes(),
        };
        runs::succeed(&self.pool, run.id, &results, counts, self.keep_runs).await?;
        Ok((events, events + rejected))
    }
}

/// Reads one part of a plan into an aggregation: (aggregate, events, rejected).
fn read_part(
    kafka: &KafkaConfig,
    plan: &replay::Plan,
    progress: &Progress,
) -> anyhow::Result<(Aggregate, u64, u64)> {
    let mut aggregate = Aggregate::default();
    let (mut events, mut rejected) = (0u64, 0u64);
    replay::run(
        kafka,
        plan,
        progress,
        &AtomicBool::new(false),
        |record| match record {
            Ok(received) => {
                events += 1;
                if let (Envelope::Inline(event), Some(ts)) = (&received.envelope, received.ts()) {
                    if let EventBody::Interaction(interaction) = &event.body {
                        aggregate.add(ts.date_naive(), interaction);
                    }
                }
            }
            Err(_) => rejected += 1,
        },
    )?;
    Ok((aggregate, events, rejected))
}

/// Awaits every task, in order.
async fn futures_join<T>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await);
    }
    out
}

/// Stops a background task when the scope that started it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
